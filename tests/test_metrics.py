"""Answer metrics and pass@k: exact values, computed by hand or from the closed form."""

from __future__ import annotations

import math
import random
import re
import string
from collections import Counter

import pytest

from evaluators.metrics import exact_match, normalize_answer, pass_at_k, ruler_match, sub_em, token_f1


def test_normalize_answer_follows_squad():
    assert normalize_answer("  The Cat,  sat on a MAT! ") == "cat sat on mat"
    assert normalize_answer("An apple-pie") == "applepie"  # punctuation is deleted, not spaced


def test_exact_match_after_normalisation_and_best_gold():
    assert exact_match("The Paris.", "paris") == 1.0
    assert exact_match("Paris, France", "Paris") == 0.0
    assert exact_match("london", ["Paris", "London"]) == 1.0


def test_sub_em_finds_gold_inside_prediction():
    assert sub_em("I think it is Paris, France.", ["London", "paris"]) == 1.0
    assert sub_em("Lyon", "Paris") == 0.0
    assert sub_em("", "Paris") == 0.0
    assert sub_em("anything at all", "...") == 0.0  # a gold that normalises to nothing never matches


def test_token_f1_hand_computed():
    # prediction tokens {cat, sat, on, mat}, gold {cat, on, mat}: P = 3/4, R = 1, F1 = 6/7
    assert token_f1("The cat sat on the mat", "cat on the mat") == pytest.approx(6 / 7)
    # repeated tokens are counted with multiplicity: common = min(2,1) + min(1,2) = 2 -> P = R = 2/3
    assert token_f1("x x y", "x y y") == pytest.approx(2 / 3)
    assert token_f1("red", ["blue", "red"]) == 1.0
    assert token_f1("", "red") == 0.0


def test_metrics_need_a_gold_answer():
    with pytest.raises(ValueError, match="gold"):
        sub_em("x", [])


@pytest.mark.parametrize("n,c,k", [(1, 0, 1), (1, 1, 1), (10, 3, 1), (10, 3, 5), (10, 8, 5), (200, 13, 100),
                                   (20, 0, 10)])
def test_pass_at_k_matches_closed_form(n, c, k):
    expected = 1.0 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_pass_at_1_is_the_pass_rate():
    assert pass_at_k(8, 3, 1) == pytest.approx(3 / 8)


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(5, 1, 10)
    with pytest.raises(ValueError, match="c <= n"):
        pass_at_k(5, 6, 1)


# -- the memory metrics against their references (issue 11, part 3) ---------------------------------------------

def test_hotpotqa_yes_no_rule_hand_computed():
    assert token_f1("yes", "no") == 0.0
    # without the rule: P = 1/3, R = 1, F1 = 0.5; gold "yes" is a yes/no answer and the prediction differs
    assert token_f1("yes it is", "yes") == 0.0
    assert token_f1("no", "no way") == 0.0  # the prediction is "no", the gold is not: 0, not 2/3
    assert token_f1("No.", "no") == 1.0
    assert token_f1("noanswer", "no answer") == 0.0  # "noanswer" is one of the three, "no answer" is not
    assert token_f1("the yes", "Yes!") == 1.0  # both normalise to "yes"
    assert token_f1("maybe yes", ["no", "maybe yes"]) == 1.0  # best over the golds


def test_two_empty_answers_have_f1_zero_and_em_one():
    assert token_f1("", "") == 0.0          # HotpotQA / SQuAD v1.1: no shared token
    assert token_f1("The", "a") == 0.0      # both normalise to the empty string
    assert exact_match("", "") == 1.0
    assert exact_match("The", "a") == 1.0


def test_ruler_match_does_not_normalise():
    assert ruler_match("4,821,937", "4821937") == 0.0
    assert sub_em("4,821,937", "4821937") == 1.0   # normalisation deletes the commas
    assert ruler_match("The value is 4821937.", "4821937") == 1.0
    assert ruler_match("It is PARIS, France", "paris") == 1.0   # case is ignored
    assert ruler_match("U.S.A.", "USA") == 0.0 and sub_em("U.S.A.", "USA") == 1.0
    assert ruler_match("the  Eiffel Tower", "the Eiffel Tower") == 0.0  # spacing counts
    assert ruler_match("  answer: x\n", ["y", "x"]) == 1.0
    assert ruler_match("a\tb", "a\tb") == 0.0  # RULER turns control characters of the prediction into newlines
    assert ruler_match("anything", "") == 1.0  # an empty gold matches, as in RULER


# The references' formulas, written out from their published scripts (SQuAD v1.1 evaluate-v1.1.py,
# HotpotQA hotpot_evaluate_v1.py, RULER scripts/eval/synthetic/constants.py) as independent oracles.

def _squad_normalize(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def _hotpot_f1(prediction, ground_truth):
    normalized_prediction = _squad_normalize(prediction)
    normalized_ground_truth = _squad_normalize(ground_truth)
    if normalized_prediction in ["yes", "no", "noanswer"] and normalized_prediction != normalized_ground_truth:
        return 0.0
    if normalized_ground_truth in ["yes", "no", "noanswer"] and normalized_prediction != normalized_ground_truth:
        return 0.0
    prediction_tokens = normalized_prediction.split()
    ground_truth_tokens = normalized_ground_truth.split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def _ruler_part(pred, ref):
    pred = re.sub(r"[\x00-\x1f]", "\n", pred.strip()).strip()
    return max([1.0 if r.lower() in pred.lower() else 0.0 for r in ref])


def _random_answer(rng):
    words = ["yes", "no", "noanswer", "The", "a", "an", "Paris", "paris,", "4,821,937", "4821937", "U.S.A.", "USA",
             "cat", "cat.", "—", "!", "", "x\ty", "New-York", "new york"]
    return " ".join(rng.choice(words) for _ in range(rng.randint(0, 4)))


def test_f1_em_and_ruler_match_equal_the_reference_formulas_on_random_answers():
    rng = random.Random(11)
    for _ in range(3000):
        pred = _random_answer(rng)
        golds = [_random_answer(rng) for _ in range(rng.randint(1, 3))]
        assert normalize_answer(pred) == _squad_normalize(pred)
        assert token_f1(pred, golds) == pytest.approx(max(_hotpot_f1(pred, g) for g in golds)), (pred, golds)
        assert exact_match(pred, golds) == float(max(_squad_normalize(pred) == _squad_normalize(g) for g in golds))
        assert ruler_match(pred, golds) == _ruler_part(pred, golds), (pred, golds)
