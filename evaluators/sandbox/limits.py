"""Resource limits of one sandboxed run, and how they map onto `prlimit` (POSIX rlimits)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

MIB = 1024 * 1024


@dataclass(frozen=True)
class SandboxLimits:
    """Limits for one program. Defaults suit a unit-test-sized program (HumanEval, a stdin/stdout task).

    `memory_mb` bounds each process's address space (RLIMIT_AS), so a fork bomb of allocators could
    hold up to max_processes x memory_mb; the wall-clock limit and the process limit keep that short.
    `max_output_bytes` bounds stdout and stderr each. `scratch_mb` sizes the tmpfs of the scratch
    directory and of /tmp under the namespace modes (the limits-only mode has only `file_size_mb`).
    """

    wall_seconds: float = 10.0
    cpu_seconds: float = 5.0
    memory_mb: int = 512
    file_size_mb: int = 16
    max_processes: int = 64
    max_output_bytes: int = 64_000
    scratch_mb: int = 64
    max_open_files: int = 256

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"SandboxLimits.{f.name} must be a positive number, got {value!r}")
        if self.max_processes < 2:
            raise ValueError("SandboxLimits.max_processes must be >= 2 (the interpreter itself counts as one)")

    def prlimit_args(self) -> list[str]:
        """`prlimit` options applying these limits to the program (run as the last step before the interpreter).

        CPU: SIGXCPU at the soft limit, SIGKILL one second later if the program ignores it.
        Core dumps are off: they would write outside the bounds and leak memory contents.
        """
        cpu = max(1, math.ceil(self.cpu_seconds))
        return [
            f"--cpu={cpu}:{cpu + 1}",
            f"--as={int(self.memory_mb * MIB)}",
            f"--fsize={int(self.file_size_mb * MIB)}",
            f"--nproc={int(self.max_processes)}",
            f"--nofile={int(self.max_open_files)}",
            "--core=0",
        ]
