"""Load BFCL-style tool-use items: from the `bfcl-eval` wheel's data folder, a BFCL directory, or one file.

Sources (a suite's `data:`):
- `toy`: the RL toy zoo's tool-use items (evaluators/data/toy/tool_use.jsonl, one file as below);
- not set, or `bfcl`: the data folder of the installed `bfcl-eval` wheel, found without importing the
  package (its pinned dependencies clash with ours): `pip install --no-deps bfcl-eval==2026.3.23`;
- a directory laid out like that folder: `BFCL_v<N>_<category>.json` question files (JSON lines) and
  `possible_answer/BFCL_v<N>_<category>.json` ground-truth files, joined by `id`;
- one `.json` (a list) or `.jsonl` file whose records carry their answers inline:
  `{"id", "question", "function", "ground_truth", "category"?, "split"?}`, where `question` is a string,
  a list of chat messages, or BFCL's list of turns (one turn); `function` is the list of tool schemas;
  `ground_truth` is BFCL's list of `{"func": {"param": [acceptable values]}}` (empty or absent:
  the model must not call anything).

Every item comes out as `{"id", "category", "messages", "function", "ground_truth", "split"?}`.
"""

from __future__ import annotations

import importlib.util
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from evaluators.errors import DataError

__all__ = [
    "CATEGORY_GROUPS", "DEFAULT_CATEGORIES", "SUPPORTED_CATEGORIES", "expected_behaviour", "installed_bfcl_dir",
    "load_tool_items", "normalize_item", "resolve_categories",
]

INSTALL_HINT = "pip install --no-deps bfcl-eval==2026.3.23"
NON_LIVE = ("simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance")
LIVE = ("live_simple", "live_multiple", "live_parallel", "live_parallel_multiple", "live_irrelevance", "live_relevance")
SUPPORTED_CATEGORIES = NON_LIVE + LIVE  # single-turn, Python-typed: scored by call matching alone
DEFAULT_CATEGORIES = NON_LIVE
CATEGORY_GROUPS = {"non_live": NON_LIVE, "live": LIVE, "all": SUPPORTED_CATEGORIES}
_ALIASES = {"simple": "simple_python"}
_LEGACY_FILE_NAMES = {"simple_python": ("simple",)}  # BFCL v3 and earlier
# Data names besides `bfcl` (the installed wheel): files shipped inside this package.
BUNDLED_FILES = {"toy": "data/toy/tool_use.jsonl"}  # the RL toy zoo's tool-use family (`evomerge zoo build`)


def resolve_categories(names: str | Iterable[str] | None) -> tuple[str, ...]:
    """Category names (with the groups `non_live`, `live`, `all` and the alias `simple`) -> BFCL categories."""
    if names is None:
        return DEFAULT_CATEGORIES
    names = [names] if isinstance(names, str) else list(names)
    resolved: list[str] = []
    for name in names:
        expanded = CATEGORY_GROUPS.get(name, (_ALIASES.get(name, name),))
        for category in expanded:
            if category not in SUPPORTED_CATEGORIES:
                raise DataError(f"tool_use category {name!r} is not supported; use some of {list(SUPPORTED_CATEGORIES)} "
                                f"or a group {list(CATEGORY_GROUPS)} (multi-turn, memory, web-search and Java/JavaScript "
                                "categories need BFCL's executable environments)")
            if category not in resolved:
                resolved.append(category)
    return tuple(resolved)


def expected_behaviour(category: str) -> str:
    """'no_call' (irrelevance: any call fails), 'any_call' (relevance: some call passes) or 'match'."""
    if "irrelevance" in category:
        return "no_call"
    if "relevance" in category:
        return "any_call"
    return "match"


def installed_bfcl_dir() -> Path:
    """The `bfcl_eval/data` folder of the installed wheel, located without importing the package."""
    spec = importlib.util.find_spec("bfcl_eval")  # a top-level find_spec does not run the package's __init__
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        folder = Path(location) / "data"
        if folder.is_dir():
            return folder
    raise DataError(f"the BFCL data is not installed: run `{INSTALL_HINT}` (data only, no dependencies), "
                    "or point the tool_use suite's `data:` at a BFCL directory or a JSONL file")


def load_tool_items(source: str | Path | None, categories: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Items from the installed wheel (source None or 'bfcl'), a BFCL directory, or one JSON/JSONL file.

    `categories` (already resolved) selects categories; None means the default set for a BFCL
    directory and every item for a single file.
    """
    if source is None or str(source) == "bfcl":
        items = _load_directory(installed_bfcl_dir(), categories or DEFAULT_CATEGORIES)
    else:
        path = _bundled_file(str(source)) if str(source) in BUNDLED_FILES else Path(source).expanduser()
        if path.is_dir():
            items = _load_directory(path, categories or DEFAULT_CATEGORIES)
        elif path.is_file():
            items = [normalize_item(r, where=f"{path}:{n}") for n, r in _read_records(path)]
            if categories is not None:
                items = [it for it in items if it["category"] in categories]
        else:
            raise DataError(f"tool_use data {path} does not exist; give a BFCL directory or a JSON/JSONL file "
                            f"(or leave `data:` unset to use the installed bfcl-eval wheel: {INSTALL_HINT})")
    _check_unique_ids(items, source)
    return items


def _bundled_file(name: str) -> Path:
    path = Path(str(resources.files("evaluators").joinpath(BUNDLED_FILES[name])))
    if not path.is_file():
        raise DataError(f"the bundled tool_use data {name!r} ({path}) is missing; build it with `evomerge zoo build`")
    return path


def normalize_item(record: Mapping[str, Any], category: str | None = None, where: str = "item") -> dict[str, Any]:
    """One record (BFCL or inline-answer form) -> the suite's item dict; DataError names `where` on a bad record."""
    if not isinstance(record, Mapping):
        raise DataError(f"{where}: a tool_use record must be a JSON object")
    if "messages" in record and "function" in record and "category" in record:
        return dict(record)  # already normalised
    for key in ("id", "question"):
        if key not in record:
            raise DataError(f"{where}: a tool_use record needs {key!r} (keys: id, question, function, ground_truth)")
    functions = record.get("function", record.get("functions", record.get("tools")))
    if not isinstance(functions, list) or not all(isinstance(f, Mapping) for f in functions):
        raise DataError(f"{where}: 'function' must be a list of tool schemas (objects with name and parameters)")
    functions = [dict(f["function"]) if isinstance(f.get("function"), Mapping) else dict(f) for f in functions]
    ground_truth = _ground_truth(record.get("ground_truth"), where)
    item = {
        "id": str(record["id"]),
        "category": record.get("category") or category or _infer_category(ground_truth, functions),
        "messages": _messages(record["question"], where),
        "function": functions,
        "ground_truth": ground_truth,
    }
    if "split" in record:
        item["split"] = record["split"]
    return item


# -- helpers ------------------------------------------------------------------------------------------

def _load_directory(directory: Path, categories: Sequence[str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for category in categories:
        question_file = _category_file(directory, category)
        answers: dict[str, Any] = {}
        if expected_behaviour(category) == "match":
            answer_file = directory / "possible_answer" / question_file.name
            if not answer_file.is_file():
                raise DataError(f"{answer_file} is missing: category {category!r} needs its ground truth "
                                f"(possible_answer/{question_file.name} next to {question_file.name})")
            answers = {str(r.get("id")): r.get("ground_truth") for _, r in _read_records(answer_file)}
        for lineno, record in _read_records(question_file):
            where = f"{question_file}:{lineno}"
            if isinstance(record, Mapping) and isinstance(record.get("question"), list) and len(record["question"]) > 1:
                raise DataError(f"{where}: {record.get('id')} has {len(record['question'])} turns; only single-turn "
                                "items can be scored")
            record = dict(record)
            if answers:
                if str(record.get("id")) not in answers:
                    raise DataError(f"{where}: no ground truth for {record.get('id')!r} in possible_answer/{question_file.name}")
                record["ground_truth"] = answers[str(record["id"])]
            items.append(normalize_item(record, category, where))
    return items


def _category_file(directory: Path, category: str) -> Path:
    """The newest BFCL_v<N>_<category>.json in `directory` (v3-era names accepted)."""
    for name in (category,) + _LEGACY_FILE_NAMES.get(category, ()):
        pattern = re.compile(rf"BFCL_v(\d+)_{re.escape(name)}\.json")
        found = [(int(m.group(1)), p) for p in directory.glob("BFCL_v*_*.json") if (m := pattern.fullmatch(p.name))]
        if found:
            return max(found)[1]
    raise DataError(f"no BFCL file for category {category!r} in {directory} (expected BFCL_v4_{category}.json)")


def _read_records(path: Path) -> list[tuple[int, Any]]:
    """(line number, record) pairs from a JSON array file or a JSON-lines file (BFCL's .json files are JSON lines)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return [(n, r) for n, r in enumerate(records, 1)]
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append((lineno, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg}); one JSON object per line") from None
    return out


def _messages(question: Any, where: str) -> list[dict[str, str]]:
    if isinstance(question, str):
        return [{"role": "user", "content": question}]
    if isinstance(question, list) and question and all(isinstance(turn, list) for turn in question):
        if len(question) != 1:
            raise DataError(f"{where}: 'question' has {len(question)} turns; only single-turn items can be scored")
        question = question[0]
    if (isinstance(question, list) and question
            and all(isinstance(m, Mapping) and "role" in m and "content" in m for m in question)):
        return [{"role": str(m["role"]), "content": str(m["content"])} for m in question]
    raise DataError(f"{where}: 'question' must be a string, a list of chat messages or a list of one turn of messages")


def _ground_truth(raw: Any, where: str) -> list[dict[str, dict[str, list]]]:
    if raw in (None, "", []):
        return []
    if not isinstance(raw, list):
        raise DataError(f"{where}: 'ground_truth' must be a list of {{function: {{param: [acceptable values]}}}}")
    calls = []
    for call in raw:
        if not (isinstance(call, Mapping) and len(call) == 1 and isinstance(next(iter(call.values())), Mapping)):
            raise DataError(f"{where}: each ground-truth call must be {{function: {{param: [acceptable values]}}}}, "
                            f"got {call!r}")
        (name, params), = call.items()
        # A bare value is one acceptable value (BFCL always writes lists).
        calls.append({str(name): {str(p): v if isinstance(v, list) else [v] for p, v in params.items()}})
    return calls


def _infer_category(ground_truth: list, functions: list) -> str:
    if not ground_truth:
        return "irrelevance"
    if len(ground_truth) == 1:
        return "multiple" if len(functions) > 1 else "simple_python"
    return "parallel_multiple" if len({next(iter(c)) for c in ground_truth}) > 1 else "parallel"


def _check_unique_ids(items: Sequence[Mapping[str, Any]], source: Any) -> None:
    seen: set[str] = set()
    for item in items:
        if item["id"] in seen:
            raise DataError(f"tool_use data {source or 'bfcl'}: the id {item['id']!r} appears twice; ids must be unique")
        seen.add(item["id"])
