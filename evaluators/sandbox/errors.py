"""Errors the sandbox raises to its caller (a hostile program never raises: it gets a failure status)."""

from evaluators.errors import EvaluatorError


class SandboxError(EvaluatorError):
    """Base class of the sandbox's own errors."""


class SandboxUnavailable(SandboxError):
    """The isolation asked for cannot run on this machine; the message says what failed and what to install."""


class WorkspaceError(SandboxError, ValueError):
    """A file name given to Sandbox.run is unsafe or clashes with the program file."""
