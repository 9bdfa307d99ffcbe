"""Linear: the weighted average of the models themselves (model soups).

Models are `base + tau_t` (the engine passes the recipe's base, or zeros when the recipe has none), so
    merged = sum_t w_t * (base + tau_t) / sum_t w_t   (normalize: true, the default)
    merged = sum_t w_t * (base + tau_t)               (normalize: false)
The base is only the reference the task vectors are measured from; it is not averaged in.
Same as mergekit 0.1.5's `linear` over the same models.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from evomerge.errors import RecipeError
from evomerge.methods.spec import MethodSpec, ParamSpec, float32_scalar


def linear_merge(base, deltas, params, ctx):
    weights = params["weight"]
    total = sum(weights)
    if params["normalize"]:
        # sum_t (w_t / W) (base + tau_t) = base + sum_t (w_t / W) tau_t
        out = None  # the first term starts the sum off the base: one pass fewer than cloning it first
        scale = 1.0 / total
    else:
        out = base * float32_scalar(total, "the sum of the weights")
        scale = 1.0
    for t, (weight, delta) in enumerate(zip(weights, deltas)):
        alpha = float32_scalar(weight * scale, f"the coefficient of model {t + 1} (weight / weight sum)")
        if out is None:
            out = torch.add(base, delta, alpha=alpha)  # the same kernel and bits as clone + add_
        else:
            out.add_(delta, alpha=alpha)
    return out


def _check_weights(params: Mapping[str, Any], where: str) -> None:
    if params["normalize"] and abs(sum(params["weight"])) < 1e-8:
        raise RecipeError(
            f"{where}: method 'linear' normalizes by the sum of the weights, which is 0 for "
            f"weight={list(params['weight'])}; change the weights or set normalize: false"
        )


LINEAR = MethodSpec(
    name="linear",
    description="weighted average of the models (normalize: divide by the weight sum)",
    merge=linear_merge,
    params=(
        ParamSpec("weight", 1.0, "weight of each model (any finite number)", per_model=True),
        ParamSpec("normalize", True, "divide by the sum of the weights", choices=(True, False)),
    ),
    requires_base=False,
    mergekit_name="linear",
    paper="Wortsman et al. 2022, 'Model soups', arXiv 2203.05482",
    check_params=_check_weights,
    row_blockable=lambda params: True,  # element-wise
    nonfinite_propagates=True,  # a weighted sum of every entry of every model
)
