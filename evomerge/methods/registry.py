"""The explicit table of merge methods. Add a method here; nothing registers itself on import."""

from __future__ import annotations

from evomerge.errors import RecipeError
from evomerge.methods.spec import MethodSpec

METHODS: dict[str, MethodSpec] = {}


def get_method(name: str) -> MethodSpec:
    try:
        return METHODS[name]
    except KeyError:
        raise RecipeError(f"unknown merge method {name!r}; known methods: {', '.join(sorted(METHODS))}") from None
