"""The arena leaderboard against ratings worked out by hand: Bradley-Terry's maximum-likelihood odds equal the win
ratio of a pair, ties count half, the prior adds virtual ties, a chain of pairs fits each link exactly, and the
bootstrap interval of a two-battle arena is the spread of its three possible resamples."""

from __future__ import annotations

import math

import pytest

from rlhfkit.annotate.leaderboard import bradley_terry, leaderboard

ELO = 400.0  # points per factor of 10 in the odds


def test_a_pair_gets_its_win_ratio():
    # A beat B 3 times and lost once: p_A / p_B = 3, so A is 400 log10 3 = 190.85 points above B, around 1000
    battles = [("A", "B", "a"), ("B", "A", "b"), ("A", "B", "a"), ("A", "B", "b")]
    r = bradley_terry(battles, prior=0)
    assert r["A"] == pytest.approx(1000 + ELO / 2 * math.log10(3), abs=1e-6, rel=0)
    assert r["B"] == pytest.approx(1000 - ELO / 2 * math.log10(3), abs=1e-6, rel=0)
    assert r["A"] - r["B"] == pytest.approx(190.848501887865, abs=1e-6, rel=0)


def test_ties_and_both_bad_count_half_a_win_each():
    # 2 wins for A, 1 for B, a tie and a both-bad: A has 3 wins, B 2, so the odds are 1.5
    battles = [("A", "B", "a"), ("B", "A", "b"), ("A", "B", "b"), ("A", "B", "tie"), ("B", "A", "both_bad")]
    r = bradley_terry(battles, prior=0)
    assert r["A"] - r["B"] == pytest.approx(ELO * math.log10(1.5), abs=1e-6, rel=0)


def test_the_prior_adds_virtual_ties():
    # 3-1 plus one virtual tie: 3.5 to 1.5
    battles = [("A", "B", "a")] * 3 + [("A", "B", "b")]
    r = bradley_terry(battles, prior=1.0)
    assert r["A"] - r["B"] == pytest.approx(ELO * math.log10(3.5 / 1.5), abs=1e-6, rel=0)
    # a model that won every game is finite with a prior, refused without one
    assert math.isfinite(bradley_terry([("A", "B", "a")], prior=1.0)["A"])
    with pytest.raises(ValueError, match="without a prior"):
        bradley_terry([("A", "B", "a")], prior=0)


def test_a_chain_fits_each_link():
    # A-B 2:1 and B-C 2:1, A and C never met: two free odds, two pairs, so each pair's ratio is met exactly
    battles = [("A", "B", "a"), ("A", "B", "a"), ("A", "B", "b"), ("C", "B", "b"), ("B", "C", "a"), ("C", "B", "a")]
    r = bradley_terry(battles, prior=0)
    step = ELO * math.log10(2)
    assert [r["A"], r["B"], r["C"]] == pytest.approx([1000 + step, 1000, 1000 - step], abs=1e-6, rel=0)


def test_the_bootstrap_interval_of_two_battles():
    # Two battles, one won by each. A resample of 2 holds A's win twice (1/4), both (1/2) or B's twice (1/4). With
    # one virtual tie, twice A's win is 2.5 : 0.5, odds 5, A at 1000 + 200 log10 5; the 2.5th and 97.5th
    # percentiles fall inside the quarters at either end.
    rows = leaderboard([("A", "B", "a"), ("A", "B", "b")], rounds=2000, seed=1, prior=1.0)
    half = ELO / 2 * math.log10(5)
    by_model = {row["model"]: row for row in rows}
    assert by_model["A"]["rating"] == pytest.approx(1000, abs=1e-9, rel=0)
    for m in "AB":
        assert by_model[m]["low"] == pytest.approx(1000 - half, abs=1e-6, rel=0)
        assert by_model[m]["high"] == pytest.approx(1000 + half, abs=1e-6, rel=0)
        assert (by_model[m]["battles"], by_model[m]["wins"], by_model[m]["losses"], by_model[m]["ties"]) == (2, 1, 1, 0)


def test_the_leaderboard_orders_counts_and_is_reproducible():
    battles = [("A", "B", "a")] * 6 + [("B", "A", "a")] * 2 + [("B", "C", "a")] * 5 + [("C", "B", "tie")] * 2
    rows = leaderboard(battles, rounds=300, seed=3)
    assert [row["model"] for row in rows] == ["A", "B", "C"]
    assert rows == leaderboard(battles, rounds=300, seed=3)
    a, b, c = rows
    assert (a["battles"], a["wins"], a["losses"], a["ties"]) == (8, 6, 2, 0)
    assert (b["battles"], b["wins"], b["losses"], b["ties"]) == (15, 7, 6, 2)
    assert (c["battles"], c["wins"], c["losses"], c["ties"]) == (7, 0, 5, 2)
    for row in rows:
        assert row["low"] <= row["rating"] <= row["high"]
    # only ties: every resample rates both 1000
    tied = leaderboard([("A", "B", "tie"), ("B", "A", "both_bad")], rounds=50)
    assert [(row["low"], row["rating"], row["high"]) for row in tied] == [(1000.0, 1000.0, 1000.0)] * 2
    assert leaderboard([]) == []
    with pytest.raises(ValueError, match="label"):
        leaderboard([("A", "B", "c")])
