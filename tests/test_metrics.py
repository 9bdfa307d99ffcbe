"""Answer metrics and pass@k: exact values, computed by hand or from the closed form."""

from __future__ import annotations

import math

import pytest

from evaluators.metrics import exact_match, normalize_answer, pass_at_k, sub_em, token_f1


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
