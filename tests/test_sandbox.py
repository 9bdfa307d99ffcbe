"""The code sandbox against hostile programs: each attack is contained, scored as a failure, and the next run works.

Every namespace mode available here (bwrap, unshare) runs the whole hostile battery; the limits-only
mode runs the part that is safe without namespaces (see `test_limits_only_*`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("the sandbox needs Linux", allow_module_level=True)

from evaluators.sandbox import Sandbox, SandboxLimits, SandboxUnavailable, WorkspaceError, probe
from evaluators.sandbox import sandbox as sandbox_module
from evaluators.sandbox.identity import processes_of, running_as_root
from evaluators.sandbox.interpreter import Interpreter, current_interpreter
from evaluators.sandbox.limits_only_launcher import interpreter_reachable_by_others

NAMESPACE_MODES = [m for m in ("bwrap", "unshare") if probe(m) is None]
# Roomy wall clock for programs that should finish (the CI machine is shared and can stall for seconds);
# SHORT only where a timeout is the expected outcome.
LIMITS = SandboxLimits(wall_seconds=30.0, cpu_seconds=10.0, memory_mb=256, max_processes=16, max_output_bytes=4096,
                       scratch_mb=16)
SHORT = dataclasses.replace(LIMITS, wall_seconds=2.0, cpu_seconds=2.0)
# Without namespaces, running as root, a program is root: only attacks that rlimits alone contain are safe to try.
LIMITS_ONLY_RUNS_AS_ROOT = running_as_root() and not interpreter_reachable_by_others(current_interpreter())

namespaced = pytest.mark.parametrize("mode", NAMESPACE_MODES or [pytest.param("bwrap", marks=pytest.mark.skip(
    reason=f"no namespace isolation here: bwrap: {probe('bwrap')}; unshare: {probe('unshare')}"))])
every_mode = pytest.mark.parametrize("mode", [*NAMESPACE_MODES, "none"])


@pytest.fixture(autouse=True)
def _quiet_limits_only_warning(caplog):
    caplog.set_level(logging.ERROR, logger="evaluators.sandbox.sandbox")


def make(mode: str, limits: SandboxLimits = LIMITS) -> Sandbox:
    return Sandbox(limits=limits, isolation=mode)


def still_works(sb: Sandbox) -> None:
    r = sb.run("print(int(input()) * 2)", stdin="21\n", limits=LIMITS)
    assert (r.status, r.stdout) == ("ok", "42\n"), r


# -- a normal program ----------------------------------------------------------------------------
@every_mode
def test_program_gets_stdin_argv_and_files(mode):
    sb = make(mode)
    code = ("import sys, helper\n"
            "data = sys.stdin.read().split()\n"
            "print(sum(map(int, data)), sys.argv[1:], helper.VALUE, open('data/input.txt').read())\n"
            "print('to stderr', file=sys.stderr)\n")
    r = sb.run(code, stdin="1 2 3\n", argv=["-v", "x y"], files={"helper.py": "VALUE = 7\n", "data/input.txt": "hi"})
    assert r.status == "ok" and r.returncode == 0 and r.reason == ""
    assert r.stdout == "6 ['-v', 'x y'] 7 hi\n"
    assert r.stderr == "to stderr\n"
    assert r.isolation == mode and not r.truncated and r.seconds > 0


@every_mode
def test_exit_and_quit_work_without_site(mode):
    r = make(mode).run("print('a'); exit(3)")
    assert (r.status, r.returncode, r.stdout) == ("error", 3, "a\n")
    assert make(mode).run("quit()").status == "ok"


@every_mode
def test_multiprocessing_works_inside(mode):
    r = make(mode).run("import multiprocessing as mp\nif __name__ == '__main__':\n"
                       "    with mp.Pool(2) as pool:\n        print(pool.map(abs, [-1, -2, -3]))\n")
    assert (r.status, r.stdout) == ("ok", "[1, 2, 3]\n"), r


@every_mode
def test_exception_is_an_error_with_its_last_line_as_reason(mode):
    r = make(mode).run("def f():\n    assert 1 + 1 == 3, 'math'\nf()\n")
    assert r.status == "error" and r.returncode == 1
    assert "AssertionError: math" in r.reason
    assert 'File "main.py", line 2' in r.stderr


@every_mode
def test_scratch_directory_is_fresh_each_run_and_removed_after(mode, monkeypatch):
    host_tmp = tempfile.mkdtemp(prefix="sandbox-test-")  # where the sandbox makes its host-side directories
    os.chmod(host_tmp, 0o755)
    monkeypatch.setattr(tempfile, "tempdir", host_tmp)
    sb = make(mode)
    first = sb.run("import os\nopen('state', 'w').write('x')\nprint(sorted(os.listdir('.')))")
    assert first.stdout == "['main.py', 'state']\n"
    second = sb.run("import os\nprint(sorted(os.listdir('.')))")
    assert second.stdout == "['main.py']\n"
    assert os.listdir(host_tmp) == []  # nothing left behind on the host
    os.rmdir(host_tmp)


@every_mode
def test_unsafe_file_names_are_refused_before_running(mode):
    sb = make(mode)
    for name in ("../escape.py", "/etc/passwd", "a/../../b", "main.py"):
        with pytest.raises(WorkspaceError):
            sb.run("pass", files={name: "x"})


# -- time ----------------------------------------------------------------------------------------
@every_mode
def test_infinite_loop_times_out(mode):
    sb = make(mode, SHORT)
    start = time.monotonic()
    r = sb.run("while True:\n    pass\n")
    assert r.status == "timeout", r
    assert time.monotonic() - start < SHORT.wall_seconds + 5.0
    still_works(sb)


@every_mode
def test_sleeping_program_hits_the_wall_clock(mode):
    r = make(mode, SandboxLimits(wall_seconds=1.0)).run("import time\ntime.sleep(60)")
    assert r.status == "timeout" and "wall-clock" in r.reason and r.seconds < 6.0


@every_mode
def test_cpu_time_limit(mode):
    r = make(mode, SandboxLimits(wall_seconds=20.0, cpu_seconds=1.0)).run("while True:\n    pass\n")
    assert r.status == "timeout" and "CPU-time" in r.reason, r


# -- processes -----------------------------------------------------------------------------------
@namespaced
def test_fork_bomb_is_contained(mode):
    sb = make(mode, SHORT)
    start = time.monotonic()
    r = sb.run("import os, sys\nprint(os.getuid(), flush=True)\nwhile True:\n"
               "    try:\n        os.fork()\n    except OSError:\n        pass\n")
    assert r.status == "timeout", r
    assert time.monotonic() - start < SHORT.wall_seconds + 5.0
    if running_as_root():  # the bomb ran under its own throwaway uid: nothing of it may survive
        uid = int(r.stdout.split()[0])
        assert uid != 0 and processes_of(uid) == []
    still_works(sb)


@namespaced
def test_process_count_limit_holds(mode):
    code = ("import os, time\nok = 0\nfor _ in range(40):\n    try:\n        pid = os.fork()\n"
            "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(5)\n        os._exit(0)\n"
            "    ok += 1\nprint(ok)\n")
    r = make(mode).run(code)
    assert r.status == "ok", r
    assert 1 <= int(r.stdout) < LIMITS.max_processes  # the interpreter itself takes one slot


@namespaced
def test_escaped_background_processes_die_with_the_run(mode):
    sb = make(mode)
    r = sb.run("import os, time\nprint(os.getuid(), flush=True)\nif os.fork() == 0:\n    os.setsid()\n"
               "    if os.fork() == 0:\n        time.sleep(60)\n    os._exit(0)\nprint('parent exits')\n")
    assert r.status == "ok" and r.seconds < 3.0, r
    if running_as_root():
        assert processes_of(int(r.stdout.split()[0])) == []


@namespaced
def test_killing_the_parent_or_everything_is_contained(mode):
    sb = make(mode)
    sentinel = subprocess.Popen(["sleep", "30"])  # a bystander process of the evaluator's user
    try:
        for attack in ("os.kill(os.getppid(), signal.SIGKILL)", "os.kill(-1, signal.SIGKILL)",
                       "os.killpg(os.getpgid(0), signal.SIGKILL)"):
            r = sb.run("import os, signal\n" + attack + "\nprint('attack returned')\n")
            # Root's throwaway uid gets EPERM / ESRCH; a user-namespace run may signal its own init, which ignores it.
            assert r.status in ("error", "killed", "ok") and r.isolation == mode, (attack, r)
            assert sentinel.poll() is None, f"{attack} killed a process outside the sandbox"
        still_works(sb)
    finally:
        sentinel.kill()
        sentinel.wait()


@every_mode
def test_segfault_is_reported_as_killed(mode):
    r = make(mode).run("import ctypes\nctypes.string_at(0)")
    assert r.status == "killed" and r.returncode == -11 and "SIGSEGV" in r.reason


# -- memory, files, output -----------------------------------------------------------------------
@every_mode
def test_memory_bomb_hits_the_memory_limit(mode):
    sb = make(mode)
    for code in ("x = bytearray(4 * 1024 ** 3)", "chunks = []\nwhile True:\n    chunks.append(b'x' * 10 ** 7)\n"):
        r = sb.run(code)
        assert r.status == "memory", r
    still_works(sb)


@every_mode
def test_file_size_limit(mode):
    r = make(mode, SandboxLimits(file_size_mb=1)).run("open('big', 'wb').write(b'x' * (4 * 1024 ** 2))")
    assert r.status == "error" and "File too large" in r.reason


@every_mode
def test_stdout_flood_is_cut_at_the_bound(mode):
    sb = make(mode, SandboxLimits(wall_seconds=30.0, max_output_bytes=4096))
    r = sb.run("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n")
    # "output_limit" (not "timeout"): killed at the bound, long before the deadline
    assert r.status == "output_limit" and r.truncated and r.seconds < 15.0, r
    assert len(r.stdout) == 4096 and set(r.stdout) == {"x"}
    r = sb.run("import sys\nwhile True:\n    sys.stderr.write('e' * 65536)\n")
    assert r.status == "output_limit" and len(r.stderr) == 4096, r
    still_works(sb)


@every_mode
def test_large_stdin_the_program_never_reads(mode):
    r = make(mode).run("print('done')", stdin="x" * (4 * 1024 * 1024))
    assert (r.status, r.stdout) == ("ok", "done\n")


# -- file system, environment, network -----------------------------------------------------------
@namespaced
def test_cannot_write_outside_the_scratch_directory(mode, tmp_path):
    marker = f"sandbox-escape-{uuid.uuid4().hex}"
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    targets = [f"/tmp/{marker}", os.path.join(repo, marker), os.path.join(os.path.expanduser("~"), marker),
               str(tmp_path / marker), f"/dev/shm/{marker}", f"/var/tmp/{marker}", f"/{marker}", f"/usr/{marker}"]
    code = ("import sys\nfor path in sys.argv[1:]:\n    try:\n        open(path, 'w').write('pwned')\n"
            "    except OSError:\n        pass\nopen('inside', 'w').write('fine')\nprint(open('inside').read())\n")
    r = make(mode).run(code, argv=targets)
    assert (r.status, r.stdout) == ("ok", "fine\n")
    for path in targets:
        assert not os.path.exists(path), f"the sandboxed program wrote {path}"


@namespaced
def test_host_files_outside_the_runtime_are_invisible(mode):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    secret = os.path.join(os.path.expanduser("~"), ".ssh")
    r = make(mode).run("import os, sys\nprint([os.path.exists(p) for p in sys.argv[1:]])",
                       argv=[os.path.abspath(__file__), repo, secret])
    assert r.stdout == "[False, False, False]\n"


@every_mode
def test_environment_secrets_are_not_inherited(mode, monkeypatch):
    monkeypatch.setenv("EVOMERGE_TEST_SECRET", "hunter2-sandbox")
    monkeypatch.setenv("HF_TOKEN", "hf_sandbox_secret")
    r = make(mode).run("import os\nprint(sorted(os.environ))\nprint(os.environ.get('EVOMERGE_TEST_SECRET'))")
    assert r.status == "ok"
    assert "hunter2" not in r.stdout and "hf_sandbox" not in r.stdout and "HF_TOKEN" not in r.stdout
    assert r.stdout.splitlines()[-1] == "None"


@namespaced
def test_network_is_unreachable(mode):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    port = server.getsockname()[1]
    try:
        r = make(mode).run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('connected')")
        assert r.status == "error" and "connected" not in r.stdout, r
        assert any(e in r.reason for e in ("ConnectionRefused", "Network is unreachable", "timed out")), r.reason
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody got through
    finally:
        server.close()


# -- many programs -------------------------------------------------------------------------------
@every_mode
def test_run_many_keeps_order_and_isolates_failures(mode):
    sb = make(mode, dataclasses.replace(LIMITS, max_output_bytes=1000))
    runs = []
    for i in range(16):
        if i % 8 == 3:  # a per-run limit override
            runs.append({"code": "while True:\n    pass\n", "limits": SHORT})
        elif i % 8 == 5:
            runs.append({"code": "import sys\nwhile True:\n    sys.stdout.write('y' * 4096)\n"})
        else:
            runs.append({"code": "print(int(input()) ** 2)", "stdin": f"{i}\n"})
    runs.append({"code": "pass", "no_such_argument": 1})  # a bad request fails alone
    results = sb.run_many(runs, max_workers=4)
    assert len(results) == len(runs)
    for i, r in enumerate(results[:16]):
        expected = {3: "timeout", 5: "output_limit"}.get(i % 8, "ok")
        assert r.status == expected, (i, r)
        if expected == "ok":
            assert r.stdout == f"{i * i}\n"
    assert results[16].status == "sandbox_error" and "no_such_argument" in results[16].reason


def test_run_many_runs_up_to_max_workers_at_once():
    sb = Sandbox(limits=SandboxLimits(wall_seconds=20.0))
    start = time.monotonic()
    results = sb.run_many([{"code": "import time\ntime.sleep(2)\nprint('slept')"}] * 4, max_workers=4)
    elapsed = time.monotonic() - start
    assert [r.stdout for r in results] == ["slept\n"] * 4
    assert elapsed < 6.0  # one after another would take at least 8 s


def test_run_many_of_nothing():
    assert Sandbox(limits=LIMITS).run_many([]) == []


# -- isolation modes and the fallback ------------------------------------------------------------
def test_auto_prefers_the_strongest_mode_that_works():
    sb = Sandbox(limits=LIMITS)
    assert sb.isolation == (NAMESPACE_MODES[0] if NAMESPACE_MODES else "none")
    assert sb.run("pass").isolation == sb.isolation


def test_auto_falls_back_to_limits_only_with_a_loud_warning(monkeypatch, caplog):
    monkeypatch.setitem(sandbox_module._probe_results, "bwrap", "bubblewrap is not installed")
    monkeypatch.setitem(sandbox_module._probe_results, "unshare", "unshare failed: Operation not permitted")
    monkeypatch.setattr(sandbox_module, "_warned_limits_only", False)
    caplog.set_level(logging.WARNING, logger="evaluators.sandbox.sandbox")
    sb = Sandbox(limits=LIMITS)
    assert sb.isolation == "none"
    warnings = [rec for rec in caplog.records if rec.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "WITHOUT OS ISOLATION" in warnings[0].getMessage() and "bubblewrap is not installed" in warnings[0].getMessage()
    Sandbox(limits=LIMITS)  # once per process, not once per sandbox
    assert len([rec for rec in caplog.records if rec.levelno == logging.WARNING]) == 1
    still_works(sb)


def test_explicit_mode_that_does_not_work_raises(monkeypatch):
    monkeypatch.setitem(sandbox_module._probe_results, "bwrap", "bubblewrap is not installed")
    with pytest.raises(SandboxUnavailable, match="bubblewrap is not installed"):
        Sandbox(isolation="bwrap")
    with pytest.raises(ValueError, match="isolation must be one of"):
        Sandbox(isolation="docker")


@every_mode
def test_a_sandbox_that_cannot_start_reports_sandbox_error(mode, monkeypatch):
    real = current_interpreter()
    broken = Interpreter(executable=os.path.join(real.prefixes[0], "bin", "no-such-python"), prefixes=real.prefixes)
    monkeypatch.setattr(sandbox_module, "current_interpreter", lambda: broken)
    r = Sandbox(limits=LIMITS, isolation=mode).run("print('never')")
    assert r.status == "sandbox_error" and r.stdout == "", r


# -- the limits-only mode ------------------------------------------------------------------------
@pytest.mark.skipif(LIMITS_ONLY_RUNS_AS_ROOT, reason="limits-only runs programs as root here: a fork bomb would hit the machine")
def test_limits_only_fork_bomb_is_contained_by_the_uid_limit():
    r = make("none", SHORT).run("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n")
    assert r.status == "timeout"
    still_works(make("none"))


def test_limits_only_warning_names_the_gaps(monkeypatch, caplog):
    """Without namespaces a program can reach the network and world-writable places: the warning must say so."""
    monkeypatch.setattr(sandbox_module, "_warned_limits_only", False)
    caplog.set_level(logging.WARNING, logger="evaluators.sandbox.sandbox")
    Sandbox(limits=LIMITS, isolation="none")
    assert "CAN use the network" in caplog.text and "write to world-writable places" in caplog.text
    if LIMITS_ONLY_RUNS_AS_ROOT:
        assert "AS ROOT" in caplog.text
