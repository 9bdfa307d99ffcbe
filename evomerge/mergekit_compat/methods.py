"""The merge methods evomerge and mergekit 0.1.5 share, with mergekit's parameter semantics.

One table serves both directions (import of a mergekit YAML, export of a recipe). For each shared method
it records mergekit's name, evomerge's name, and mergekit's parameters: their scope (`shared`: read only from
the top-level `parameters`; `per_model`: read from a model's `parameters`, then the top level), their type
and mergekit's default (REQUIRED when mergekit has none). Parameter names are the same in both tools.
`ignored` are parameters mergekit accepts but that cannot change the result of that method (e.g. `int8_mask`
only picks the dtype of TIES' sign mask, a boolean either way). `fixed` are evomerge parameters that make
evomerge's method behave like mergekit's (e.g. DARE's rescale by the L1 norm). tests/test_mergekit_interop.py
checks this table against mergekit's own registry, so a mergekit upgrade that changes a default fails there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

REQUIRED = object()  # mergekit has no default: every tensor must get a value

Scope = Literal["shared", "per_model"]


@dataclass(frozen=True)
class MkParam:
    name: str
    scope: Scope
    kind: type  # float or bool
    default: Any = REQUIRED


@dataclass(frozen=True)
class SharedMethod:
    mergekit: str
    evomerge: str
    params: tuple[MkParam, ...]
    # how the tools use base_model: 'required' (task vectors against it), 'none' (linear: mergekit would add
    # base_model to the inputs, evomerge's base is only a reference) or 'endpoint' (slerp: t=0 is the base)
    base: Literal["required", "none", "endpoint"] = "required"
    ignored: frozenset[str] = frozenset()
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def param(self, name: str) -> MkParam | None:
        return next((p for p in self.params if p.name == name), None)


def _gta(name: str, *, normalize: bool, rescale: bool, density: bool = True, gamma: bool = False,
         fixed: Mapping[str, Any] | None = None) -> SharedMethod:
    """mergekit's GeneralizedTaskArithmeticMerge family (task_arithmetic, ties, dare_*, breadcrumbs*)."""
    params = [MkParam("normalize", "shared", bool, normalize), MkParam("lambda", "shared", float, 1.0),
              MkParam("weight", "per_model", float)]
    ignored = {"int8_mask"}  # the dtype of a boolean sign mask: no effect on values
    if density:
        params += [MkParam("rescale", "shared", bool, rescale), MkParam("density", "per_model", float, 1.0)]
    else:  # task_arithmetic: no sparsification, so mergekit never reads density or rescale
        ignored |= {"density", "rescale"}
    if gamma:
        params.append(MkParam("gamma", "per_model", float, 0.01))
    return SharedMethod(name, name, tuple(params), ignored=frozenset(ignored), fixed=fixed or {})


SHARED_METHODS: dict[str, SharedMethod] = {m.mergekit: m for m in (
    SharedMethod("linear", "linear", (MkParam("normalize", "shared", bool, True), MkParam("weight", "per_model", float)),
                 base="none"),
    SharedMethod("slerp", "slerp", (MkParam("t", "shared", float),), base="endpoint"),
    _gta("task_arithmetic", normalize=False, rescale=False, density=False),
    _gta("ties", normalize=True, rescale=False),
    # mergekit's DARE rescales each pruned task vector to its L1 norm, not by 1/density
    _gta("dare_ties", normalize=False, rescale=True, fixed={"rescale_mode": "l1"}),
    _gta("dare_linear", normalize=False, rescale=True, fixed={"rescale_mode": "l1"}),
    _gta("breadcrumbs", normalize=False, rescale=False, gamma=True),
    _gta("breadcrumbs_ties", normalize=False, rescale=False, gamma=True),
    SharedMethod("ram", "ram", (MkParam("epsilon", "shared", float, 1e-5),)),
    # RAM+ with rho counted inside each tensor; note mergekit's alpha default (0.2) is not evomerge's (2.0)
    SharedMethod("ramplus_tl", "ram_plus", (MkParam("r", "shared", float, 0.1), MkParam("alpha", "shared", float, 0.2),
                                            MkParam("epsilon", "shared", float, 1e-5)),
                 fixed={"rho_scope": "tensor"}),
)}

# mergekit 0.1.5's other methods, named in refusals
MERGEKIT_ONLY = ("arcee_fusion", "della", "della_linear", "karcher", "model_stock", "multislerp", "nearswap",
                 "nuslerp", "passthrough", "sce")


def by_evomerge_name(method: str) -> list[SharedMethod]:
    return [m for m in SHARED_METHODS.values() if m.evomerge == method]
