"""Errors a user can act on. Each message names the file, tensor or key at fault."""


class EvomergeError(Exception):
    """Base class: the CLI prints these without a traceback and exits with status 1 (see exit_status)."""


class RecipeError(EvomergeError):
    """A recipe, method name or parameter is invalid."""


class CheckpointError(EvomergeError):
    """A checkpoint directory is missing, corrupt, unsafe or incompatible with the others."""


class SearchSpaceError(EvomergeError):
    """A search space YAML is invalid, or a genome or recipe does not fit the space."""


class ExperimentError(EvomergeError):
    """An experiment YAML is invalid, or a run directory does not match it."""


class EvaluationError(EvomergeError):
    """A benchmark suite, its data, a generation backend or saved completions cannot be used as asked."""


def validation_problems(exc, whole: str) -> str:
    """A pydantic ValidationError as one line, 'field.path: message; ...' (`whole` names an error of the whole)."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or whole}: {e['msg']}" for e in exc.errors())
