"""One-off check, beyond the vendored verdicts: `scoring: bfcl` against bfcl-eval itself on EVERY single-turn
item of the supported categories (the replies make_verdicts.py derives from each item's ground truth), and the
decoder against bfcl-eval's `default_decode_ast_prompting` on randomly mutated replies.

Needs bfcl-eval 2026.3.23 installed (its SDKs are stubbed as in make_verdicts.py). From the repository root:

    PYTHONPATH=$PWD python -W ignore tests/bfcl/compare_all.py

Prints the number of verdicts compared and every disagreement (documented ones: see test_bfcl_scoring.py).
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import make_verdicts as mv  # noqa: E402

from evaluators.suites.bfcl_scoring import bfcl_verdict, decode_prompting  # noqa: E402

MUTATION_CHARACTERS = "[](),=+-*/'\" 0123456789.:{}~\n`"  # no letters: a mutation cannot spell a new name


def every_item() -> None:
    verdict = mv.reference()
    data = Path(importlib.util.find_spec("bfcl_eval").submodule_search_locations[0]) / "data"
    differ: Counter = Counter()
    total = 0
    for category in mv.PER_CATEGORY:
        records = [json.loads(line) for line in (data / f"BFCL_v4_{category}.json").read_text().splitlines() if line]
        answer_file = data / "possible_answer" / f"BFCL_v4_{category}.json"
        answers = ({r["id"]: r["ground_truth"] for r in map(json.loads, answer_file.read_text().splitlines())}
                   if answer_file.is_file() else {})
        for record in records:
            if len(record["question"]) != 1:
                continue
            item = {"id": record["id"], "category": category, "function": record["function"],
                    "ground_truth": answers.get(record["id"], [])}
            for label, reply in mv.replies(item):
                total += 1
                if verdict(item, reply)["valid"] != bfcl_verdict(category, reply, item["function"],
                                                                 item["ground_truth"]).passed:
                    differ[(category, label)] += 1
                    print("differs:", item["id"], label, repr(reply[:160]))
    print(f"every item: {total} verdicts compared, {sum(differ.values())} differ {dict(differ)}")


def _same(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def mutated_replies(count: int = 40000, seed: int = 5) -> None:
    mv.reference()  # installs the SDK stubs
    from bfcl_eval.model_handler.utils import default_decode_ast_prompting

    replies = [r["reply"] for r in map(json.loads, mv.OUT.read_text().splitlines()) if "reply" in r]
    rng = random.Random(seed)
    compared = differ = 0
    for _ in range(count):
        chars = list(rng.choice(replies))
        for _ in range(rng.randint(1, 3)):
            op = rng.random()
            if op < 0.4 and chars:
                del chars[rng.randrange(len(chars))]
            elif op < 0.8:
                chars.insert(rng.randrange(len(chars) + 1), rng.choice(MUTATION_CHARACTERS))
            elif chars:
                chars[rng.randrange(len(chars))] = rng.choice(MUTATION_CHARACTERS)
        text = "".join(chars)
        if "**" in text:
            continue  # a huge power would hang the reference
        try:
            reference = ("ok", default_decode_ast_prompting(text))
        except Exception:  # the reference's runner treats any exception as a failed decode
            reference = ("failed", None)
        try:
            ours = ("ok", decode_prompting(text))
        except ValueError:
            ours = ("failed", None)
        compared += 1
        if reference[0] != ours[0] or (reference[0] == "ok" and not _same(reference[1], ours[1])):
            differ += 1
            print("decodes differ:", repr(text[:160]), reference, ours)
    print(f"mutated replies: {compared} decodes compared, {differ} differ")


if __name__ == "__main__":
    every_item()
    mutated_replies()
