"""Errors a user can act on. Each message names the file, tensor or key at fault."""


class EvomergeError(Exception):
    """Base class: the CLI prints these without a traceback and exits with status 2."""


class RecipeError(EvomergeError):
    """A recipe, method name or parameter is invalid."""


class CheckpointError(EvomergeError):
    """A checkpoint directory is missing, corrupt, unsafe or incompatible with the others."""
