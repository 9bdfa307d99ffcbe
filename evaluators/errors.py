"""Errors a user can act on, raised by the evaluators package (which must not import evomerge).

The `evomerge` command turns them into its own error type, so they print without a traceback (exit 1).
Each message names the file, suite, request id or tensor at fault and what to do.
"""


class EvaluatorError(Exception):
    """Base class of every error the evaluators raise on purpose."""


class SuiteConfigError(EvaluatorError):
    """An unknown suite or backend name, or an invalid suite configuration / YAML file."""


class DataError(EvaluatorError):
    """A data file is missing, unreadable, or its records are not in a supported format."""


class BackendError(EvaluatorError):
    """A generation backend cannot load a model, render a prompt, replay a completion or swap weights."""


def describe_validation(exc) -> str:
    """A pydantic ValidationError on one line: 'generation.n: Input should be greater than or equal to 1; ...'."""
    return "; ".join(f"{'.'.join(map(str, err['loc'])) or 'value'}: {err['msg']}" for err in exc.errors())
