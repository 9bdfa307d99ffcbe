"""The function-test harness that runs inside the sandbox: tests in one process, the candidate in another.

This file is not imported by the evaluator: it is compiled once by the evaluator and its code object
(marshalled) becomes the `-c` code of the sandboxed interpreter (function_tests.py), so it uses the
standard library only and holds no secrets itself.

Process layout inside the sandbox (see function_tests.py for the mechanism and its limits):

- the **tester** (the sandbox's first process) marks itself non-dumpable, reads the public part of
  the spec from an inherited memory file (the problem's prompt, which ./main.py holds anyway, the
  entry point and the time limit) and runs the prompt (its imports then load once for both
  processes), forks the candidate, and only then reads the secret part (the tests and a one-time
  token). It runs the tests in the prompt's namespace, with the entry point bound to a proxy that forwards each call to the candidate process
  and returns the answer, which crosses the pipe as `marshal` data: only plain built-in values can.
  When `check(candidate)` returns, and only then, it writes (token, "passed") on the result pipe;
  on any failure (token, "<why>").
- the **candidate** closes the spec and result descriptors before any of its code runs, executes
  ./main.py (the prompt and the completion, nothing else) as module `candidate`, then serves calls.
  It never held the tests or the token in memory, and cannot read the tester's memory or
  descriptors (the tester is non-dumpable: /proc/PID/mem, /proc/PID/fd and ptrace are refused).
"""

import _signal
import marshal
import os
import select
import sys
import time

# Plain built-in types a returned value may be made of (checked by exact type, never isinstance).
_PLAIN = (int, float, complex, str, bytes, type(None), bool, list, tuple, dict, set, frozenset)
_PLAIN_IDS = frozenset(id(t) for t in _PLAIN)
_MAX_MESSAGE = 64 << 20  # bytes of one marshalled answer: a larger value fails the item
_MAX_NODES = 1_000_000  # objects inside one answer (HumanEval answers hold a few dozen)
_TOO_MANY = "more than %d objects" % _MAX_NODES
_REFUSALS = ("returned a non-builtin value: ", "returned a value too large to check")
_PR_GET_DUMPABLE, _PR_SET_DUMPABLE = 3, 4
_SIGKILL, _SIGINT = 9, 2  # not `import signal`: it pulls in enum, milliseconds per run


def _non_plain(value):
    """The first object in `value` whose type is not exactly a plain built-in (by `type(x) is T`), else None.

    Iterative (no recursion limit), visits each container once (cycles end), and gives up on huge values
    (returns _TOO_MANY).
    """
    stack, seen, nodes = [value], set(), 0
    while stack:
        x = stack.pop()
        t = type(x)
        if id(t) not in _PLAIN_IDS:
            return x
        nodes += 1
        if nodes > _MAX_NODES:
            return _TOO_MANY
        if t is list or t is tuple or t is set or t is frozenset or t is dict:
            if id(x) in seen:
                continue
            seen.add(id(x))
            if t is dict:
                stack.extend(dict.keys(x))
                stack.extend(dict.values(x))
            else:
                stack.extend(x)
    return None


def _verdict_for(bad):
    if bad is _TOO_MANY:
        return "returned a value too large to check (%s)" % _TOO_MANY
    return "returned a non-builtin value: %s" % repr(type(bad))


# -- framing: 4-byte little-endian length, then a marshal payload ------------------------------------------
def _send(fd, message):
    data = marshal.dumps(message)
    data = len(data).to_bytes(4, "little") + data
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class _Stop(BaseException):
    """Ends the tests with a verdict; a BaseException so that a test's `except Exception` cannot swallow it."""

    def __init__(self, verdict):
        super().__init__(verdict)
        self.verdict = verdict


def _read_exact(fd, n, deadline):
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise _Stop("timed out")
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _receive(fd, deadline):
    """The next message on `fd`, None at end of file; _Stop on timeout or an oversized message."""
    head = _read_exact(fd, 4, deadline)
    if head is None:
        return None
    size = int.from_bytes(head, "little")
    if size > _MAX_MESSAGE:
        raise _Stop("returned a value too large to check (%d bytes marshalled, over %d)" % (size, _MAX_MESSAGE))
    body = _read_exact(fd, size, deadline)
    if body is None:
        return None
    return marshal.loads(body)


# -- the candidate process ----------------------------------------------------------------------------------
def _candidate(req_r, resp_w):
    import builtins

    module = type(sys)("candidate")
    module.__file__ = "main.py"
    sys.modules["candidate"] = module
    sys.argv[0] = "main.py"
    sys.path.insert(0, os.getcwd())
    builtins.exit = builtins.quit = sys.exit  # missing without `site`; generated code calls them
    try:
        with open("main.py", "rb") as f:
            source = f.read()
        exec(compile(source, "main.py", "exec"), module.__dict__)
    except SystemExit:
        _send(resp_w, ("exited",))
        os._exit(0)
    except BaseException as exc:  # the completion does not load: say why, as Python would
        import traceback

        traceback.print_exc()
        _send(resp_w, ("error", "%s: %s" % (type(exc).__name__, str(exc)[:300])))
        os._exit(1)
    _send(resp_w, ("ready",))
    while True:
        request = _receive(req_r, None)
        if request is None:  # the tester is done (or gone)
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(0)
        name, args, kwargs = request
        try:
            fn = module.__dict__.get(name)
            if fn is None:
                raise NameError("name %r is not defined" % name)
            value = fn(*args, **kwargs)
        except SystemExit:
            reply = ("exited",)
        except BaseException as exc:  # the function raised: the tester re-raises it by name
            reply = ("raised", type(exc).__name__, str(exc)[:300])
        else:
            bad = _non_plain(value)
            reply = ("ok", value) if bad is None else ("refused", _verdict_for(bad))
        try:
            _send(resp_w, reply)
        except (ValueError, RecursionError) as exc:  # marshal refuses it (too deep): not a plain value
            _send(resp_w, ("refused", "returned a non-builtin value: an unsendable value (%s)" % exc))


# -- the tester process -------------------------------------------------------------------------------------
def _not_dumpable():
    """PR_SET_DUMPABLE 0: the candidate (same uid) can no longer ptrace this process or open its /proc files.

    Calls prctl through `_ctypes` directly: `import ctypes` costs ~10 ms a run on a loaded machine.
    """
    import _ctypes

    class Int(_ctypes._SimpleCData):
        _type_ = "i"

    class Function(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = Int

    class Library:
        _handle = _ctypes.dlopen(None, 0)

    prctl = Function(("prctl", Library()))
    if prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 or prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(_ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


class _Proxy:
    """What the tests call as `candidate`: forwards the call to the candidate process, returns its plain value."""

    def __init__(self, name, req_w, resp_r, deadline):
        self.name, self.req_w, self.resp_r, self.deadline = name, req_w, resp_r, deadline
        self.stopped = None  # the first _Stop raised: it decides even if a test swallowed it

    def stop(self, verdict):
        if self.stopped is None:
            self.stopped = verdict
        raise _Stop(self.stopped)

    def __call__(self, *args, **kwargs):
        if self.stopped is not None:
            raise _Stop(self.stopped)
        try:
            _send(self.req_w, (self.name, args, kwargs))
        except (ValueError, RecursionError) as exc:
            self.stop("failed: the tests passed a value the harness cannot send (%s)" % exc)
        except OSError:
            self.stop("exited before the tests finished")
        reply = self.wait()
        tag = reply[0]
        if tag == "ok" and len(reply) == 2:
            bad = _non_plain(reply[1])
            if bad is not None:
                self.stop(_verdict_for(bad))
            return reply[1]
        if tag == "raised" and len(reply) == 3 and type(reply[1]) is str and type(reply[2]) is str:
            raise _rebuilt_exception(reply[1], reply[2])
        if tag == "refused" and len(reply) == 2 and type(reply[1]) is str and reply[1].startswith(_REFUSALS):
            self.stop(reply[1][:200])  # the candidate's own check, for a precise verdict; marshal is the guard
        if tag == "exited":
            self.stop("exited before the tests finished")
        self.stop("failed: the candidate process broke the harness protocol")

    def wait(self):
        """The candidate's next reply, as a tuple starting with a str tag."""
        try:
            reply = _receive(self.resp_r, self.deadline)
        except _Stop as stop:
            self.stop(stop.verdict)
        except Exception:  # noqa: BLE001 (bytes that marshal cannot read, or too deep, or too big)
            self.stop("failed: the candidate process broke the harness protocol")
        if reply is None:
            self.stop("exited before the tests finished")
        if type(reply) is not tuple or not reply or type(reply[0]) is not str:
            self.stop("failed: the candidate process broke the harness protocol")
        return reply


def _rebuilt_exception(name, text):
    """The candidate's exception as the tests would have seen it: the built-in class of that name, else RuntimeError."""
    import builtins

    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(text)
        except Exception:  # noqa: BLE001 (a built-in that needs other arguments)
            pass
    return RuntimeError("%s: %s" % (name, text))


def _setup_namespace(setup):
    """The tests' namespace: what the problem's prompt defines (its imports and helpers)."""
    namespace = {"__name__": "tests"}
    try:
        exec(compile(setup, "prompt.py", "exec"), namespace)
    except Exception:  # noqa: BLE001 (a prompt that does not run alone: the tests see what it defined)
        pass
    return namespace


def _run_tests(namespace, test, entry_point, proxy):
    """The verdict of `check(candidate)`: 'passed' only when it returned and nothing went wrong on the way."""
    namespace[entry_point] = proxy  # tests that call the function by name reach the candidate too
    try:
        exec(compile(test, "tests.py", "exec"), namespace)
        check = namespace.get("check")
        if not callable(check):
            return "failed: the tests define no check(candidate) function"
        ready = proxy.wait()
        if ready[0] == "error" and len(ready) == 2 and type(ready[1]) is str:
            return "failed: %s" % ready[1][:300]
        if ready[0] == "exited":
            return "exited before the tests finished"
        if ready != ("ready",):
            return "failed: the candidate process broke the harness protocol"
        check(proxy)
    except _Stop as stop:
        return proxy.stopped or stop.verdict
    except AssertionError as exc:
        return proxy.stopped or ("failed: AssertionError" + (": %s" % str(exc)[:200] if str(exc) else ""))
    except BaseException as exc:  # noqa: BLE001 (any other failure of the tests)
        return proxy.stopped or "failed: %s: %s" % (type(exc).__name__, str(exc)[:200])
    return proxy.stopped or "passed"


def _end_candidate(pid, exit_fd, req_w, grace=0.1):
    """Close its request pipe (an idle candidate flushes its output and exits), then SIGKILL what is left.

    `exit_fd` is a pidfd of the candidate: it turns readable the moment the candidate exits.
    """
    os.close(req_w)
    try:
        if exit_fd is None or not select.select([exit_fd], [], [], grace)[0]:
            os.kill(pid, _SIGKILL)
        os.waitpid(pid, 0)
    except OSError:
        pass


def main(ready_fd, spec_fd, result_fd):
    try:
        _not_dumpable()
    except Exception as exc:  # noqa: BLE001 (fail closed: without it the candidate could read the tests)
        sys.stderr.write("sandbox setup failed: %s\n" % exc)
        os._exit(125)
    # The candidate (same uid) can signal the tester: SIGINT would raise KeyboardInterrupt inside the tests,
    # which a test's bare `except:` could swallow. Ignored here; any other signal kills the tester: no result.
    _signal.signal(_SIGINT, _signal.SIG_IGN)
    os.write(ready_fd, b"1")  # the sandbox reached the program: what follows is the program's doing
    os.close(ready_fd)
    # The spec file: 4-byte length, the public part (the prompt, which ./main.py holds anyway), the secret part.
    public_size = int.from_bytes(os.pread(spec_fd, 4, 0), "little")
    setup, entry_point, timeout = marshal.loads(os.pread(spec_fd, public_size, 4))
    # The prompt runs before the fork, so that its imports (typing: tens of ms) load once for both processes.
    namespace = _setup_namespace(setup)
    req_r, req_w = os.pipe()
    resp_r, resp_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        for fd in (spec_fd, result_fd, req_w, resp_r):
            os.close(fd)
        _signal.signal(_SIGINT, _signal.default_int_handler)  # the candidate's Ctrl-C behaves as usual
        _candidate(req_r, resp_w)
        os._exit(0)
    os.close(req_r)
    os.close(resp_w)
    try:
        exit_fd = os.pidfd_open(pid)
    except OSError:  # Linux < 5.3: no grace, the candidate's unflushed output is lost
        exit_fd = None
    proxy = _Proxy(entry_point, req_w, resp_r, time.monotonic() + timeout)
    # Read only now, after the fork: the candidate's memory never held the tests or the token.
    secret_at = 4 + public_size
    token, test = marshal.loads(os.pread(spec_fd, os.fstat(spec_fd).st_size - secret_at, secret_at))
    os.close(spec_fd)
    verdict = _run_tests(namespace, test, entry_point, proxy)
    _end_candidate(pid, exit_fd, req_w)
    _send(result_fd, (token, verdict))
    os.close(result_fd)
    os._exit(0)
