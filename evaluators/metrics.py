"""Answer metrics shared by the suites: SQuAD-style normalisation, exact match, substring EM, token F1, RULER's
substring match, pass@k.

All pure functions of strings and counts. Against several gold answers a metric takes the best
match (the SQuAD / HotpotQA convention; RULER's `string_match_part`).

| metric | definition | reference |
|---|---|---|
| `normalize_answer` | lower case, delete punctuation (string.punctuation), drop the words a/an/the, collapse whitespace | SQuAD v1.1 / HotpotQA `normalize_answer` (identical) |
| `exact_match` | normalised prediction == normalised gold (two empty strings: 1) | SQuAD / HotpotQA `exact_match_score` |
| `token_f1` | F1 of the normalised token multisets; 0 when either side normalises to yes / no / noanswer and the two differ; 0 when no token is shared, so also when both are empty | HotpotQA `f1_score` (SQuAD v1.1 the same without the yes/no rule; SQuAD v2.0 gives 1 for two empty strings) |
| `sub_em` | a normalised, non-empty gold occurs inside the normalised prediction | MemAgent / RAM's sub_em |
| `ruler_match` | a gold, lower-cased, occurs inside the prediction, lower-cased, after RULER's clean-up (strip; control characters to newlines): no other normalisation, so "4,821,937" does not contain "4821937" | RULER `string_match_part` (per item, 0/1; for one gold also `string_match_all`) |
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Iterable

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation and the articles a/an/the, collapse whitespace (the SQuAD v1.1 script's rule)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _golds(gold: str | Iterable[str]) -> list[str]:
    golds = [gold] if isinstance(gold, str) else list(gold)
    if not golds:
        raise ValueError("no gold answer given: a metric needs at least one")
    return golds


def exact_match(prediction: str, gold: str | Iterable[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold answer."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in _golds(gold)))


def sub_em(prediction: str, gold: str | Iterable[str]) -> float:
    """Substring exact match: 1.0 when a normalised gold answer occurs inside the normalised prediction.

    The memory-agent papers' metric (MemAgent, RAM): long answers that contain the fact count.
    An empty normalised gold never matches, so punctuation-only answers cannot pass by accident.
    """
    pred = normalize_answer(prediction)
    return float(any((g_norm := normalize_answer(g)) and g_norm in pred for g in _golds(gold)))


def token_f1(prediction: str, gold: str | Iterable[str]) -> float:
    """HotpotQA's token F1 after normalisation, best over the gold answers."""
    pred = normalize_answer(prediction)
    return max(_f1(pred, normalize_answer(g)) for g in _golds(gold))


YES_NO_NOANSWER = frozenset({"yes", "no", "noanswer"})


def _f1(pred: str, gold: str) -> float:
    """F1 of two normalised answers (HotpotQA's f1_score)."""
    # A yes/no (or noanswer) question has no partial credit: "yes it is" against "no" shares no meaning.
    if (pred in YES_NO_NOANSWER or gold in YES_NO_NOANSWER) and pred != gold:
        return 0.0
    pred_tokens, gold_tokens = pred.split(), gold.split()
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:  # also two empty answers, as in HotpotQA and SQuAD v1.1
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f]")


def ruler_match(prediction: str, gold: str | Iterable[str]) -> float:
    """RULER's substring match: 1.0 when a gold answer, lower-cased, occurs in the lower-cased prediction.

    The prediction is cleaned as RULER's evaluate.py does (strip, control characters to newlines, strip) and
    nothing else: punctuation, articles and spacing must match. An empty gold matches anything, as in RULER.
    """
    pred = _CONTROL_CHARACTERS.sub("\n", prediction.strip()).strip().lower()
    return float(any(g.lower() in pred for g in _golds(gold)))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c passed: 1 - C(n-c, k) / C(n, k) (Chen et al. 2021, eq. 1).

    Computed as a running product, which stays exact in floating point where the binomials overflow.
    """
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 1 <= k <= n, got n={n}, k={k}: draw at least k samples per item")
    if n - c < k:
        return 1.0
    fail_all = 1.0
    for i in range(n - c + 1, n + 1):  # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
        fail_all *= 1.0 - k / i
    return 1.0 - fail_all
