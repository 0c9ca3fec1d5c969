"""Exact match, token F1 and ROUGE-L against hand-computed values."""

import pytest

from rlhfkit.eval.gold import exact_match, gold_metrics, lcs_length, normalize_answer, rouge_l, token_f1


def test_normalize_answer():
    assert normalize_answer("  The 3rd Floor, Building A! ") == "3rd floor building"


def test_exact_match_ignores_case_punctuation_articles():
    assert exact_match("3rd floor, Building A.", "3rd floor building a") == 1.0
    assert exact_match("3rd floor", "3rd floor, Building A") == 0.0


def test_token_f1_by_hand():
    # pred tokens: 3rd floor building b ; gold: 3rd floor building  ("a" is an article, dropped)
    # common 3, precision 3/4, recall 3/3 -> F1 = 2 * 0.75 * 1 / 1.75 = 6/7
    assert token_f1("3rd floor, Building B", "3rd floor, Building A") == pytest.approx(6 / 7, abs=1e-12)
    assert token_f1("nothing shared", "3rd floor") == 0.0
    assert token_f1("", "") == 1.0 and token_f1("", "x") == 0.0


def test_rouge_l_by_hand():
    assert lcs_length("a b c d".split(), "b d c".split()) == 2
    # pred: "cat sat on mat", gold: "cat on mat" after normalization; LCS 3: P 3/4, R 1 -> 6/7
    assert rouge_l("the cat sat on the mat", "a cat on the mat") == pytest.approx(6 / 7, abs=1e-12)
    # order matters for ROUGE-L but not for F1
    assert rouge_l("mat on cat", "cat on mat") == pytest.approx(1 / 3, abs=1e-12)
    assert token_f1("mat on cat", "cat on mat") == 1.0


def test_gold_metrics_means():
    m = gold_metrics(["3rd floor", "wrong"], ["3rd floor", "Building A"])
    assert m == {"exact_match": 0.5, "token_f1": 0.5, "rouge_l": 0.5}
    with pytest.raises(ValueError):
        gold_metrics(["a"], [])
