"""One-off tool: write the prompts bfcl-eval itself builds for a prompting model, as references for `prompt: bfcl`.

Writes two files, both from bfcl-eval 2026.3.23's own functions (never from this project's code):

- evaluators/data/bfcl/prompt.json: the data `prompt: bfcl` builds its prompts from - bfcl-eval's default system
  prompt (`formulate_system_prompt` with `DEFAULT_SYSTEM_PROMPT_FORMAT`, the function docs replaced by a
  placeholder), the Python hint that `load_dataset_entry` appends to every function description, and the JSON
  indent of the function docs. The text is bfcl-eval's (Apache-2.0), kept verbatim so prompts stay comparable.
- tests/bfcl/prompts.jsonl: for a seeded sample of real BFCL v4 items of every supported category (and every
  item whose first turn is not a lone user message), the item as stored in the data files and what bfcl-eval's
  prompting pipeline makes of it: `load_dataset_entry` (the language hint), then the Qwen prompting handler's
  `_pre_query_processing_prompting` + `add_first_turn_message_prompting` (the chat messages: the system prompt
  as a new system turn, or prepended to the item's own) and its `_format_prompt` (the exact text sent to the
  model: ChatML). tests/test_bfcl_prompt.py requires byte-equal messages and text.

Run from the repository root where `bfcl-eval==2026.3.23` is installed (its SDK imports are stubbed as in
make_verdicts.py):

    python tests/bfcl/make_prompts.py                                   # rewrites the two files
    PYTHONPATH=$PWD python tests/bfcl/make_prompts.py --check-all        # compares EVERY supported item instead

`--check-all` writes nothing: it builds every single-turn item of the supported categories with the tool_use
suite's `prompt: bfcl` (from the installed wheel's data, through the suite's own loader) and with bfcl-eval, and
prints how many messages and ChatML texts differ (0 expected).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import make_verdicts as mv  # noqa: E402  (the SDK stubs, the model and the category list)

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).with_name("prompts.jsonl")
TEMPLATE_OUT = ROOT / "evaluators" / "data" / "bfcl" / "prompt.json"
SEED = 20260323
PER_CATEGORY = 3  # random items per category, besides the special ones below
MAX_SPECIAL = 6  # per category: one item per shape of first turn (system message, assistant turns, several users)
MAX_FUNCTION_CHARS = 2500  # keeps the vendored file small (items with non-ASCII docs are kept whatever their size)
PLACEHOLDER = "{functions}"


def bfcl_functions():
    sys.meta_path.append(mv._StubFinder())
    from bfcl_eval import utils
    from bfcl_eval.constants.default_prompts import DEFAULT_SYSTEM_PROMPT_FORMAT
    from bfcl_eval.model_handler import utils as handler_utils
    from bfcl_eval.model_handler.local_inference.qwen import QwenHandler

    return utils, handler_utils, DEFAULT_SYSTEM_PROMPT_FORMAT, QwenHandler


def template_data() -> dict:
    utils, handler_utils, prompt_format, _ = bfcl_functions()
    real = handler_utils.format_function_doc
    handler_utils.format_function_doc = lambda functions, fmt: PLACEHOLDER  # the docs' place in the template
    try:
        system_prompt = handler_utils.formulate_system_prompt(prompt_format, [])
    finally:
        handler_utils.format_function_doc = real
    assert system_prompt.count(PLACEHOLDER) == 1
    probe = [{"a": [1]}]
    indent = next(i for i in range(9) if json.dumps(probe, indent=i) == real(probe, "json"))
    return {
        "_source": ("bfcl-eval 2026.3.23 (Berkeley Function Calling Leaderboard, Gorilla project, UC Berkeley), "
                    "Apache License 2.0. Verbatim text of its default prompting system prompt "
                    "(bfcl_eval.model_handler.utils.formulate_system_prompt with DEFAULT_SYSTEM_PROMPT_FORMAT) and "
                    "of the Python hint bfcl_eval.utils.load_dataset_entry adds to function descriptions. "
                    "Written by tests/bfcl/make_prompts.py; do not edit by hand."),
        "prompt_format": prompt_format,
        "system_prompt": system_prompt,
        "functions_placeholder": PLACEHOLDER,
        "function_doc_json_indent": indent,
        "python_description_hint": utils._get_language_specific_hint("simple_python"),
    }


def sample_ids(data: Path) -> dict[str, list[str]]:
    rng = random.Random(SEED)
    chosen: dict[str, list[str]] = {}
    for category in mv.PER_CATEGORY:
        records = [json.loads(line) for line in (data / f"BFCL_v4_{category}.json").read_text().splitlines() if line]
        patterns: dict[tuple, str] = {}  # one item per shape of first turn other than a lone user message
        for r in records:
            patterns.setdefault(tuple(m["role"] for m in r["question"][0]), r["id"])
        special = [i for shape, i in patterns.items() if shape != ("user",)][:MAX_SPECIAL]
        non_ascii = [r["id"] for r in records if not json.dumps(r["function"], ensure_ascii=False).isascii()][:1]
        small = [r["id"] for r in records if len(json.dumps(r["function"])) <= MAX_FUNCTION_CHARS]
        ids = special + non_ascii + rng.sample(small, min(PER_CATEGORY, len(small)))
        chosen[category] = list(dict.fromkeys(ids))
    return chosen


def main() -> None:
    TEMPLATE_OUT.write_text(json.dumps(template_data(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    utils, _, _, QwenHandler = bfcl_functions()
    data = Path(importlib.util.find_spec("bfcl_eval").submodule_search_locations[0]) / "data"
    handler = QwenHandler.__new__(QwenHandler)  # the prompting methods read nothing from the instance
    rows = []
    for category, ids in sample_ids(data).items():
        raw = {r["id"]: r for r in map(json.loads, (data / f"BFCL_v4_{category}.json").read_text().splitlines()) if r}
        entries = {e["id"]: e for e in utils.load_dataset_entry(category)}  # with bfcl-eval's own pre-processing
        for item_id in ids:
            messages, text = bfcl_eval_prompt(handler, entries[item_id])
            rows.append({"id": item_id, "category": category, "question": raw[item_id]["question"],
                         "function": raw[item_id]["function"], "messages": messages, "formatted_prompt": text})
    with OUT.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(rows)} items -> {OUT}; template -> {TEMPLATE_OUT}")


def bfcl_eval_prompt(handler, entry: dict) -> tuple[list[dict], str]:
    """The chat messages and the ChatML text bfcl-eval's Qwen prompting handler builds for a loaded entry."""
    entry = copy.deepcopy(entry)
    inference_data = handler._pre_query_processing_prompting(entry)
    inference_data = handler.add_first_turn_message_prompting(inference_data, entry["question"][0])
    messages = inference_data["message"]
    return messages, handler._format_prompt(messages, inference_data["function"])


def check_all() -> None:
    from evaluators.suites.bfcl_data import SUPPORTED_CATEGORIES, load_tool_items
    from evaluators.suites.tool_use import build_prompt

    utils, _, _, QwenHandler = bfcl_functions()
    handler = QwenHandler.__new__(QwenHandler)
    total, differ = 0, []
    for category in SUPPORTED_CATEGORIES:
        ours = {it["id"]: it for it in load_tool_items("bfcl", (category,))}
        for entry in utils.load_dataset_entry(category):
            messages, text = bfcl_eval_prompt(handler, entry)
            item = ours[entry["id"]]
            total += 1
            if build_prompt(item, chat=True, prompt="bfcl") != messages:
                differ.append((entry["id"], "messages"))
            if build_prompt(item, chat=False, prompt="bfcl") != text:
                differ.append((entry["id"], "text"))
    print(f"every item: {total} prompts compared (messages and ChatML text), {len(differ)} differ {differ[:10]}")


if __name__ == "__main__":
    check_all() if "--check-all" in sys.argv[1:] else main()
