"""The code sandbox: run untrusted generated programs isolated and resource-limited.

    from evaluators.sandbox import Sandbox, SandboxLimits, RunResult
    sb = Sandbox(limits=SandboxLimits(wall_seconds=10.0), isolation="auto")
    r = sb.run("print(input()[::-1])", stdin="abc\\n")   # r.status == "ok", r.stdout == "cba\\n"
"""

from .errors import SandboxError, SandboxUnavailable, WorkspaceError
from .function_tests import FunctionTests
from .limits import SandboxLimits
from .result import STATUSES, RunResult
from .sandbox import ISOLATIONS, Sandbox, probe

__all__ = ["FunctionTests", "ISOLATIONS", "STATUSES", "RunResult", "Sandbox", "SandboxError", "SandboxLimits", "SandboxUnavailable",
           "WorkspaceError", "probe"]
