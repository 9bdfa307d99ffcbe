"""SLERP: spherical linear interpolation between exactly two models, each tensor taken as one vector.

`models: [A, B]` with `t` in [0, 1]: t = 0 gives A, t = 1 gives B. mergekit 0.1.5 writes the same merge
as `base_model: A, models: [B]` (its slerp interpolates from its base to the other model); here the
recipe's base, if any, is only the reference the task vectors are measured from and is not an input.
Like mergekit: norms below 1e-8 count as 1, and nearly collinear pairs (|cos| > 0.9995) are
interpolated linearly.
"""

from __future__ import annotations

import math

import torch

from evomerge.methods.spec import MethodSpec, ParamSpec

DOT_THRESHOLD = 0.9995
NORM_EPS = 1e-8


def _dot64(a: torch.Tensor, b: torch.Tensor, block: int = 1 << 22) -> float:
    """sum(a * b) accumulated in float64 (float32 over 1e8 entries loses ~4 digits), in blocks so the
    product never needs a full-size temporary."""
    return sum(float(torch.sum(a[i:i + block] * b[i:i + block], dtype=torch.float64))
               for i in range(0, a.numel(), block))


def slerp_coefficients(t: float, v0: torch.Tensor, v1: torch.Tensor) -> tuple[float, float]:
    """(c0, c1) with slerp = c0 * v0 + c1 * v1, each tensor taken as one flat vector."""
    a, b = v0.reshape(-1), v1.reshape(-1)
    norm_a = math.sqrt(_dot64(a, a))
    norm_b = math.sqrt(_dot64(b, b))
    norm_a = norm_a if norm_a > NORM_EPS else 1.0
    norm_b = norm_b if norm_b > NORM_EPS else 1.0
    cos = min(1.0, max(-1.0, _dot64(a, b) / (norm_a * norm_b)))
    if abs(cos) > DOT_THRESHOLD:
        return 1.0 - t, t
    theta = math.acos(cos)
    return math.sin((1.0 - t) * theta) / math.sin(theta), math.sin(t * theta) / math.sin(theta)


def slerp(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """Interpolate along the great circle from v0 to v1 (flattened), magnitudes interpolated with it."""
    c0, c1 = slerp_coefficients(t, v0, v1)
    return (v0 * c0).add_(v1, alpha=c1)


def slerp_merge(base, deltas, params, ctx):
    first, second = base + deltas[0], base + deltas[1]
    c0, c1 = slerp_coefficients(params["t"], first, second)
    return first.mul_(c0).add_(second, alpha=c1)  # `first` is our own temporary


SLERP = MethodSpec(
    name="slerp",
    description="spherical interpolation between two models: t = 0 gives the first, t = 1 the second",
    merge=slerp_merge,
    params=(ParamSpec("t", 0.5, "interpolation position from the first model (0) to the second (1)",
                      low=0.0, high=1.0),),
    requires_base=False,
    min_models=2,
    max_models=2,
    mergekit_name="slerp",
    paper="Shoemake 1985, 'Animating rotation with quaternion curves' (SLERP)",
)
