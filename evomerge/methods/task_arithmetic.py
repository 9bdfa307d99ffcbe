"""Task arithmetic and its pruned / sign-elected relatives: TIES, DARE (linear and TIES), Model Breadcrumbs.

One rule covers the family, with mergekit 0.1.5's parameter names, defaults and semantics
(`mergekit/merge_methods/generalized_task_arithmetic.py`):

  1. prune each task vector tau_t (magnitude top-k, random drop, or magnitude band), optionally rescale
  2. weight it: w_t * tau_t
  3. combine: plain sum, or TIES sign election (majority sign of the weighted sum per entry; only the
     entries that agree with it are summed: the 'disjoint' sum)
  4. normalize (optional): divide by the sum of the weights (TIES: of the weights of the agreeing entries)
  5. merged = base + lambda * result

Implementation: one pass per model with fused ops, accumulating a positive and a negative sum so the
sign election needs no (N, *shape) stack: the elected sum is the positive sum where the total is >= 0,
else the negative sum.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping, Sequence

import torch

from evomerge.methods import sparsify
from evomerge.methods.spec import MethodSpec, OneBlock, ParamSpec, TensorContext, float32_scalar

NO_PRUNING, MAGNITUDE, RANDOM, OUTLIERS = "none", "magnitude", "random", "outliers"


def _pruned(pruning: str, delta: torch.Tensor, params: Mapping[str, Any], t: int, ctx: TensorContext):
    """A new tensor with the entries that survive pruning (the rest zero), or None: nothing pruned.
    Magnitude prunings use the whole tensor's statistics in `ctx.statistics` (`block_statistics`); `delta`
    may be a row block of the tensor, at flat offset `ctx.offset`."""
    if pruning in (MAGNITUDE, OUTLIERS):
        trim = ctx.statistics[t]
        return None if trim is None else trim.apply(delta, ctx.offset)
    if pruning == RANDOM:
        keep = sparsify.random_keep(delta, params["density"][t], sparsify.model_seed(ctx.seed, t), ctx.offset)
        return None if keep is None else keep.mul_(delta)
    return None


def _statistics(pruning: str):
    """The family member's `block_statistics`: magnitude prunings rank each task vector over the whole
    tensor (integer counts, gathered over its row blocks); DARE's draws need only the block's offset."""
    if pruning == MAGNITUDE:
        return lambda params, numel, reader: sparsify.magnitude_statistics(reader, numel, params["density"])
    if pruning == OUTLIERS:
        return lambda params, numel, reader: sparsify.band_statistics(reader, numel, params["density"],
                                                                      params["gamma"])
    return None


def _rescale(
    pruning: str, delta: torch.Tensor, pruned: torch.Tensor | None, params: Mapping[str, Any], t: int
) -> float:
    if pruned is None or not params.get("rescale", False):
        return 1.0
    if pruning == RANDOM and params["rescale_mode"] == "inverse_density":
        return 1.0 / params["density"][t]  # DARE: E[rescaled kept entry] = the entry
    return sparsify.l1_rescale(delta, pruned)


def _weighted(pruning: str, delta: torch.Tensor, params: Mapping[str, Any], t: int, ctx: TensorContext, scale: float):
    """(tensor to add, coefficient): the pruned task vector, or the task vector itself when nothing is
    pruned (then it must not be modified), and the weight times rescale factor times `scale`."""
    pruned = _pruned(pruning, delta, params, t, ctx)
    coefficient = float32_scalar(params["weight"][t] * _rescale(pruning, delta, pruned, params, t) * scale,
                                 f"the coefficient of model {t + 1} (weight x rescale x lambda / weight sum)")
    return (delta if pruned is None else pruned), coefficient


def combine(
    base: torch.Tensor,
    deltas: Sequence[torch.Tensor],
    params: Mapping[str, Any],
    ctx: TensorContext,
    pruning: str,
    sign_election: bool,
) -> torch.Tensor:
    """The family's rule (module docstring) for one tensor; returns the merged weight."""
    weights = params["weight"]
    normalize = params["normalize"]
    scale = params["lambda"]
    if not sign_election:
        divisor = sum(weights)
        if not normalize or abs(divisor) < 1e-8:  # mergekit: a (near-)zero weight sum is not divided by
            divisor = 1.0
        out = None
        for t, delta in enumerate(deltas):
            term, coefficient = _weighted(pruning, delta, params, t, ctx, scale / divisor)
            # the first term starts the sum off the base: one pass fewer than cloning the base first
            out = torch.add(base, term, alpha=coefficient) if out is None else out.add_(term, alpha=coefficient)
            del term
        return base.clone() if out is None else out

    # TIES sign election without an (N, *shape) stack: per entry, the sum of the positive weighted
    # entries and the sum of the negative ones; the elected sign is that of their total.
    positive_sum = torch.zeros_like(base)
    negative_sum = torch.zeros_like(base)
    positive_weight = torch.zeros_like(base) if normalize else None
    negative_weight = torch.zeros_like(base) if normalize else None
    for t, delta in enumerate(deltas):
        term, coefficient = _weighted(pruning, delta, params, t, ctx, 1.0)
        # split the unscaled term; the coefficient rides on add_'s alpha (one pass fewer than scaling).
        # A negative coefficient flips signs: the term's negative part lands in the positive sum.
        upper = term.clamp(min=0)
        lower = term.sub_(upper) if term is not delta else term - upper  # exact: x - x = 0, x - 0 = x
        positive, negative = (upper, lower) if coefficient >= 0 else (lower, upper)
        positive_sum.add_(positive, alpha=coefficient)
        negative_sum.add_(negative, alpha=coefficient)
        if normalize:  # weights of the models on each side: sign() of each part is 0 or +-1
            side = weights[t] if coefficient >= 0 else -weights[t]
            positive_weight.add_(positive.sign_(), alpha=side)
            negative_weight.add_(negative.sign_(), alpha=-side)
        del term, upper, lower, positive, negative
    # 1.0 where the total is >= 0 (ties elect +), else 0.0: float arithmetic instead of torch.where
    elected_positive = torch.add(positive_sum, negative_sum).sign_().add_(1).clamp_(max=1)
    mixed = positive_sum.mul_(elected_positive)
    if normalize:
        divisor = positive_weight.mul_(elected_positive)
    elected_negative = elected_positive.neg_().add_(1)
    mixed.addcmul_(negative_sum, elected_negative)  # exact: one of the two terms is 0
    del negative_sum
    if normalize:
        divisor.addcmul_(negative_weight, elected_negative)
        # a zero divisor (no agreeing model, or weights that cancel) becomes 1: add 1 - |sign(divisor)|
        divisor.add_(divisor.sign().abs_().neg_().add_(1))
        mixed.div_(divisor)
    if scale != 1:
        mixed.mul_(scale)
    return mixed.add_(base)


def _flag(name: str, default: bool, description: str) -> ParamSpec:
    return ParamSpec(name, default, description, choices=(True, False))


WEIGHT = ParamSpec("weight", 1.0, "weight of each model's task vector (any finite number)", per_model=True)
LAMBDA = ParamSpec("lambda", 1.0, "scale of the merged task vector (any finite number)")
DENSITY_TOPK = ParamSpec("density", 1.0, "fraction of each task vector's entries kept, largest |tau| first",
                         low=0.0, high=1.0, low_inclusive=False, per_model=True)
DENSITY_RANDOM = ParamSpec("density", 1.0, "probability that each entry of a task vector is kept (DARE)",
                           low=0.0, high=1.0, low_inclusive=False, per_model=True)
DENSITY_BAND = ParamSpec("density", 1.0, "fraction of each task vector's entries kept after dropping the "
                         "largest (gamma) and smallest magnitudes; 1 keeps everything (gamma ignored)",
                         low=0.0, high=1.0, low_inclusive=False, per_model=True)
GAMMA = ParamSpec("gamma", 0.01, "fraction of largest-magnitude entries dropped as outliers",
                  low=0.0, high=1.0, high_inclusive=False, per_model=True)
RESCALE_MODE = ParamSpec(
    "rescale_mode", "inverse_density",
    "how `rescale` scales kept entries: 'inverse_density' = 1/density (the DARE paper), "
    "'l1' = match the task vector's L1 norm (mergekit 0.1.5's dare_*)",
    choices=("inverse_density", "l1"),
)


def _normalize(default: bool, sign_election: bool) -> ParamSpec:
    over = "the weights of the models that agree with the elected sign" if sign_election else "the sum of the weights"
    return _flag("normalize", default, f"divide the merged task vector by {over}")


def _rescale_flag(default: bool, random: bool) -> ParamSpec:
    if random:
        return _flag("rescale", default, "rescale the kept entries of each pruned task vector (how: rescale_mode)")
    return _flag("rescale", default,
                 "rescale the kept entries so each pruned task vector keeps its L1 norm (as mergekit)")


# Parameters of each pruning, between the weights and `normalize` (the order the method table shows).
_PRUNING_PARAMS: dict[str, tuple[ParamSpec, ...]] = {
    NO_PRUNING: (), MAGNITUDE: (DENSITY_TOPK,), RANDOM: (DENSITY_RANDOM,), OUTLIERS: (DENSITY_BAND, GAMMA),
}


def family_member(
    name: str, pruning: str, sign_election: bool, description: str, paper: str, normalize: bool = False,
) -> MethodSpec:
    """One method of the family (as mergekit's GeneralizedTaskArithmeticMerge is configured by a
    sparsification and a consensus method): its parameters and merge function follow from how it
    prunes and whether it elects signs. `normalize` is the default of its `normalize` flag."""
    if pruning not in _PRUNING_PARAMS:
        raise ValueError(f"family_member {name!r}: unknown pruning {pruning!r}; use one of {list(_PRUNING_PARAMS)}")
    random = pruning == RANDOM
    params = [WEIGHT, *_PRUNING_PARAMS[pruning], _normalize(normalize, sign_election)]
    if pruning != NO_PRUNING:
        params.append(_rescale_flag(random, random))  # DARE rescales by default, the others do not
    if random:
        params.append(RESCALE_MODE)
    params.append(LAMBDA)

    statistics = _statistics(pruning)

    def merge(base, deltas, params, ctx):
        if statistics is not None and ctx.statistics is None:  # a direct call on a whole tensor
            if ctx.offset:
                raise ValueError(f"{name}: a row block (offset {ctx.offset}) needs its whole tensor's statistics")
            ctx = replace(ctx, statistics=statistics(params, base.numel(), OneBlock(tuple(deltas))))
        return combine(base, deltas, params, ctx, pruning, sign_election)

    def row_blockable(params):
        # with nothing pruned (no pruning, or every density 1) the rule is element-wise; top-k / band
        # thresholds come from `block_statistics`, DARE's draws are keyed by flat index; an L1 rescale is
        # a float sum over the whole tensor (its rounding depends on the split): whole tensors only
        if pruning == NO_PRUNING or all(d >= 1 for d in params["density"]):
            return True
        return not params["rescale"] or (random and params["rescale_mode"] == "inverse_density")

    merge.__name__ = merge.__qualname__ = f"{name}_merge"
    return MethodSpec(name=name, description=description, merge=merge, params=tuple(params), randomized=random,
                      mergekit_name=name, paper=paper, row_blockable=row_blockable,
                      block_statistics=statistics,
                      # every term added whole (coefficient x entry); pruning or sign election can drop a NaN
                      nonfinite_propagates=pruning == NO_PRUNING and not sign_election)


_DARE_PAPER = "Yu et al. 2024, 'Language Models are Super Mario' (DARE), arXiv 2311.03099"
_BREADCRUMBS_PAPER = "Davari & Belilovsky 2024, 'Model Breadcrumbs', arXiv 2312.06795"

TASK_ARITHMETIC = family_member(
    "task_arithmetic", NO_PRUNING, sign_election=False,
    description="base + lambda * sum_t weight_t * tau_t (optionally divided by the weight sum)",
    paper="Ilharco et al. 2023, 'Editing Models with Task Arithmetic', arXiv 2212.04089",
)
TIES = family_member(
    "ties", MAGNITUDE, sign_election=True, normalize=True,
    description="TIES: keep each task vector's top-density magnitudes, elect a sign per entry from the weighted "
                "sum, add only agreeing entries (disjoint mean when normalize)",
    paper="Yadav et al. 2023, 'TIES-Merging', arXiv 2306.01708",
)
DARE_LINEAR = family_member(
    "dare_linear", RANDOM, sign_election=False,
    description="DARE + task arithmetic: drop entries at random (keep probability = density), rescale, weighted sum",
    paper=_DARE_PAPER,
)
DARE_TIES = family_member(
    "dare_ties", RANDOM, sign_election=True,
    description="DARE + TIES: drop entries at random (keep probability = density), rescale, TIES sign election",
    paper=_DARE_PAPER,
)
BREADCRUMBS = family_member(
    "breadcrumbs", OUTLIERS, sign_election=False,
    description="Model Breadcrumbs: drop each task vector's largest (gamma) and smallest magnitudes, weighted sum",
    paper=_BREADCRUMBS_PAPER,
)
BREADCRUMBS_TIES = family_member(
    "breadcrumbs_ties", OUTLIERS, sign_election=True,
    description="Model Breadcrumbs pruning followed by TIES sign election",
    paper=_BREADCRUMBS_PAPER,
)
