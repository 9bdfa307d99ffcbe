"""Answer metrics shared by the suites: SQuAD-style normalisation, exact match, substring EM, token F1, pass@k.

All pure functions of strings and counts. Against several gold answers a metric takes the best
match (the SQuAD / HotpotQA convention).
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
    """Harmonic mean of token precision and recall after normalisation, best over the gold answers."""
    pred_tokens = normalize_answer(prediction).split()
    return max(_f1(pred_tokens, normalize_answer(g).split()) for g in _golds(gold))


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)  # both empty: a match; one empty: none
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


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
