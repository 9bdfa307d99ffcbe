"""The explicit table of merge methods. Add a method here; nothing registers itself on import."""

from __future__ import annotations

from evomerge.errors import RecipeError
from evomerge.methods.linear import LINEAR
from evomerge.methods.ram import RAM, RAM_PLUS, RAM_PLUS_SOFT
from evomerge.methods.slerp import SLERP
from evomerge.methods.spec import MethodSpec
from evomerge.methods.task_arithmetic import (
    BREADCRUMBS,
    BREADCRUMBS_TIES,
    DARE_LINEAR,
    DARE_TIES,
    TASK_ARITHMETIC,
    TIES,
)

METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec, table: dict[str, MethodSpec] | None = None) -> MethodSpec:
    """Add `spec` to the method table (default: METHODS) under its name and return it.

    A second method under a taken name is refused, as mergekit's registry does: silently keeping the
    last one would make a recipe's `method: ties` mean whichever definition happened to come later.
    """
    table = METHODS if table is None else table
    taken = table.get(spec.name)
    if taken is not None:
        raise ValueError(
            f"merge method {spec.name!r} is already registered ({taken.description[:60]!r}); "
            "give the new method another name"
        )
    table[spec.name] = spec
    return spec


for _spec in (
    RAM,
    RAM_PLUS,
    RAM_PLUS_SOFT,
    LINEAR,
    TASK_ARITHMETIC,
    TIES,
    DARE_LINEAR,
    DARE_TIES,
    BREADCRUMBS,
    BREADCRUMBS_TIES,
    SLERP,
):
    register(_spec)
del _spec


def get_method(name: str) -> MethodSpec:
    try:
        return METHODS[name]
    except KeyError:
        raise RecipeError(f"unknown merge method {name!r}; known methods: {', '.join(sorted(METHODS))}") from None
