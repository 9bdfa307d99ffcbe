"""RAM, RAM+ and RAM+s: selective merging of RL task vectors (arXiv 2601.13572, Eqs. 1, 2, 6, 7, App. E).

Per coordinate i, with the change mask m_t,i = |tau_t,i| > epsilon and c_i = sum_t m_t,i (Eq. 1):
  c_i == 0  -> keep the base (sub-epsilon noise is dropped)
  c_i == 1  -> base + lambda_t * tau_t,i      (t = the only agent that changed i)
  c_i >= 2  -> base + mean of tau_t,i over the agents that changed i (not over N)     (Eq. 7)
RAM has lambda_t = 1; RAM+ lambda_t = 1 + r * clip(rho_t, 0, alpha) (Eq. 6); RAM+s
lambda_t = 1 + r * rho_t / (1 + rho_t) (App. E), with rho_t = #shared / #unique changes of agent t (Eq. 2)
counted over the whole model (`rho_scope: global`, the paper) or inside the tensor (`rho_scope: tensor`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from evomerge.methods.spec import MethodSpec, ParamSpec, TensorContext, float32_scalar
from evomerge.taskvectors import MAX_AGENTS, overlap_counts, ram_plus_lambda, ram_plus_soft_lambda, rho

PAPER = "Yuan et al. 2026, 'Behavior Knowledge Merge in Reinforced Agentic Models', arXiv 2601.13572"


def selective_merge(
    base: torch.Tensor,
    deltas: Sequence[torch.Tensor],
    epsilon: float,
    unique_scale: Sequence[float] | None = None,
) -> torch.Tensor:
    """Eq. 7: base + merged task vector. `unique_scale[t]` multiplies agent t's unique changes
    (lambda_t; None = all 1, plain RAM).

    One pass per agent with float-only kernels: hardshrink keeps exactly the entries with
    |tau| > epsilon (strict), |sign| of what it keeps counts the agents; no (N, *shape) stack and no
    boolean masks (several times slower per element on CPU).
    """
    changed_sum = torch.zeros_like(base)  # sum of the changes made per entry
    n_changed = torch.zeros_like(base)  # c_i (exact in float32 up to 2**24 agents)
    scaled_sum = torch.zeros_like(base) if unique_scale is not None else None
    for t, delta in enumerate(deltas):
        kept = torch.nn.functional.hardshrink(delta, epsilon)
        changed_sum.add_(kept)
        if scaled_sum is not None:
            scaled_sum.add_(kept, alpha=float32_scalar(float(unique_scale[t]), f"RAM+'s rescale of agent {t + 1}"))
        n_changed.add_(kept.sign_().abs_())
        del kept
    if scaled_sum is not None:
        # unique entries (c == 1) take lambda_t * tau = scaled_sum instead of the mean. is_unique =
        # clip(2 - c, 0, 1) is 1 for c <= 1 (c == 0 is harmless: both sums are 0) and 0 for c >= 2; the
        # blend mean * (1 - is_unique) + scaled_sum * is_unique is exact: one factor is 0, the other 1
        is_unique = n_changed.neg().add_(2).clamp_(0, 1)
        scaled_sum.mul_(is_unique)
        not_unique = is_unique.neg_().add_(1)
    # unique: sum / 1 = the agent's tau; unchanged: 0 / 1 = 0; shared: mean over the active agents
    merged = changed_sum.div_(n_changed.clamp_(min=1))
    if scaled_sum is not None:
        merged.mul_(not_unique).add_(scaled_sum)
    return merged.add_(base)


def _check_global_overlap(ctx: TensorContext, epsilon: float, n_agents: int, method: str):
    overlap = ctx.global_overlap
    if overlap is None:
        raise ValueError(
            f"{method} with rho_scope='global' needs whole-model overlap counts in TensorContext.global_overlap "
            f"(tensor '{ctx.name}'); compute them with evomerge.taskvectors.overlap_counts over all tensors"
        )
    if overlap.epsilon != epsilon or len(overlap.shared) != n_agents:
        raise ValueError(
            f"{method}: global overlap counts for tensor '{ctx.name}' were computed at epsilon={overlap.epsilon} "
            f"for {len(overlap.shared)} agents, but the rule asks epsilon={epsilon} for {n_agents} agents"
        )
    return overlap.shared, overlap.unique


def _rhos(deltas, params: Mapping[str, Any], ctx: TensorContext, method: str) -> list[float | None]:
    epsilon = params["epsilon"]
    if params["rho_scope"] == "global":
        shared, unique = _check_global_overlap(ctx, epsilon, len(deltas), method)
    elif ctx.tensor_overlap is not None:  # a row block: the whole tensor's counts, gathered by the caller
        if ctx.tensor_overlap.epsilon != epsilon or len(ctx.tensor_overlap.shared) != len(deltas):
            raise ValueError(f"{method}: tensor overlap counts for '{ctx.name}' do not match the rule "
                             f"(epsilon {ctx.tensor_overlap.epsilon} vs {epsilon})")
        shared, unique = ctx.tensor_overlap.shared, ctx.tensor_overlap.unique
    else:
        counts = overlap_counts(deltas, epsilon)
        shared, unique = counts.shared, counts.unique
    return [rho(s, u) for s, u in zip(shared, unique)]


def ram_merge(base, deltas, params, ctx):
    return selective_merge(base, deltas, params["epsilon"])


def ram_plus_merge(base, deltas, params, ctx):
    lambdas = [ram_plus_lambda(r, params["r"], params["alpha"]) for r in _rhos(deltas, params, ctx, "ram_plus")]
    return selective_merge(base, deltas, params["epsilon"], lambdas)


def ram_plus_soft_merge(base, deltas, params, ctx):
    lambdas = [ram_plus_soft_lambda(r, params["r"]) for r in _rhos(deltas, params, ctx, "ram_plus_soft")]
    return selective_merge(base, deltas, params["epsilon"], lambdas)


EPSILON = ParamSpec(
    "epsilon", 1e-5, "change threshold: an agent changed an entry when |tau| > epsilon (absolute; Eq. 1)",
    low=0.0, high=1.0, low_inclusive=False,
)
R = ParamSpec("r", 0.1, "strength of the unique-update boost (Eq. 6; r = 0 is RAM)", low=0.0, high=1.0)
ALPHA = ParamSpec("alpha", 2.0, "clip of rho_t in lambda_t = 1 + r * clip(rho_t, 0, alpha) (Eq. 6)",
                  low=0.0, high=100.0, low_inclusive=False)
RHO_SCOPE = ParamSpec(
    "rho_scope", "global",
    "where rho_t is counted: 'global' = over the whole model (the paper), 'tensor' = inside each tensor",
    choices=("global", "tensor"),
)

def _counts_in_context(params: Mapping[str, Any]) -> bool:
    # rho's counts arrive in the context (global: the whole model's; tensor: the tensor's, gathered over
    # the blocks by the row-block loop) and the rest is element-wise
    return True


RAM = MethodSpec(
    name="ram",
    description="RAM: unchanged entries keep the base, unique changes are kept, shared changes are averaged "
                "over the agents that made them (Eqs. 1, 7)",
    merge=ram_merge,
    params=(EPSILON,),
    mergekit_name="ram",
    paper=PAPER + ", Eq. 7",
    row_blockable=lambda params: True,  # element-wise
)

RAM_PLUS = MethodSpec(
    name="ram_plus",
    description="RAM+: RAM with each agent's unique changes scaled by lambda_t = 1 + r * clip(rho_t, 0, alpha) "
                "(Eqs. 2, 6); rho_scope 'tensor' with alpha 0.2 equals mergekit's ramplus_tl",
    merge=ram_plus_merge,
    params=(EPSILON, R, ALPHA, RHO_SCOPE),
    max_models=MAX_AGENTS,  # rho needs the change-pattern counts, kept for up to 16 agents
    global_overlap_param="epsilon",
    paper=PAPER + ", Eqs. 2, 6, 7",
    row_blockable=_counts_in_context,
)

RAM_PLUS_SOFT = MethodSpec(
    name="ram_plus_soft",
    description="RAM+s: RAM with unique changes scaled by lambda_t = 1 + r * rho_t / (1 + rho_t) (App. E)",
    merge=ram_plus_soft_merge,
    params=(EPSILON, R, RHO_SCOPE),
    max_models=MAX_AGENTS,
    global_overlap_param="epsilon",
    paper=PAPER + ", App. E",
    row_blockable=_counts_in_context,
)
