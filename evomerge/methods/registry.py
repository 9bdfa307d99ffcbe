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

METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
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
    )
}


def get_method(name: str) -> MethodSpec:
    try:
        return METHODS[name]
    except KeyError:
        raise RecipeError(f"unknown merge method {name!r}; known methods: {', '.join(sorted(METHODS))}") from None
