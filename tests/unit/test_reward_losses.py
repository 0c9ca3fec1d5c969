"""Preference losses, item building and reward metrics against hand-computed values."""

import math

import pytest
import torch

from rlhfkit.config import RewardConfig
from rlhfkit.data.preferences import Judgement, build_items
from rlhfkit.data.schema import Comparison, PreferencePair, Ranking
from rlhfkit.eval.reward import expected_calibration_error, preference_metrics
from rlhfkit.losses import (
    bradley_terry,
    davidson_logprobs,
    plackett_luce,
    rao_kupper_logprobs,
    reward_centering,
    soft_bradley_terry,
    tie_aware_loss,
)

t = torch.tensor


def close(x, y):
    assert x == pytest.approx(y, abs=1e-6, rel=0)


def test_bradley_terry_by_hand():
    close(bradley_terry(t([1.0]), t([0.0])).item(), math.log(1 + math.exp(-1)))  # 0.313262
    close(bradley_terry(t([1.0]), t([0.0]), margin=0.5).item(), math.log(1 + math.exp(-0.5)))  # 0.474077
    close(soft_bradley_terry(t([1.0]), t([0.0]), t([0.75])).item(), 0.75 * 0.3132617 + 0.25 * 1.3132617)
    close(soft_bradley_terry(t([1.0]), t([0.0]), t([1.0])).item(), bradley_terry(t([1.0]), t([0.0])).item())


def test_davidson_by_hand():
    # d = 0, nu = 1: every outcome has probability 1/3
    for lp in davidson_logprobs(t([0.0]), t([0.0]), log_nu=0.0):
        close(lp.item(), -math.log(3))
    # d = 2 ln 2: e^{d/2} = 2, e^{-d/2} = 1/2, Z = 3.5 -> P(a) = 4/7, P(b) = 1/7, P(tie) = 2/7
    la, lb, lt = davidson_logprobs(t([2 * math.log(2)]), t([0.0]), log_nu=0.0)
    close(la.item(), math.log(4 / 7))
    close(lb.item(), math.log(1 / 7))
    close(lt.item(), math.log(2 / 7))
    loss = tie_aware_loss(
        t([2 * math.log(2)]), t([0.0]), t([1.0]), t([0.0]), t([0.0]), tie_model="davidson", tie_param=0.0
    )
    close(loss.item(), math.log(7 / 4))


def test_rao_kupper_by_hand():
    # theta = 2, d = 0: P(a) = P(b) = sigmoid(-ln 2) = 1/3, P(tie) = (4 - 1) / 9 = 1/3
    la, lb, lt = rao_kupper_logprobs(t([0.5]), t([0.5]), log_theta=math.log(2))
    for lp in (la, lb, lt):
        close(lp.item(), -math.log(3))
    # d = ln 4, theta = 2: P(a) = 4/(4+2) = 2/3, P(b) = 1/(1+8) = 1/9, P(tie) = 1 - 2/3 - 1/9 = 2/9
    la, lb, lt = rao_kupper_logprobs(t([math.log(4)]), t([0.0]), log_theta=math.log(2))
    close(la.exp().item(), 2 / 3)
    close(lb.exp().item(), 1 / 9)
    close(lt.exp().item(), 2 / 9)
    with pytest.raises(ValueError):
        rao_kupper_logprobs(t([0.0]), t([0.0]), log_theta=0.0)


def test_plackett_luce_by_hand():
    lse = lambda *x: math.log(sum(math.exp(v) for v in x))  # noqa: E731
    # strict ranking 1,2,3 of scores 2,1,0: -( (2 - lse(2,1,0)) + (1 - lse(1,0)) ) / (3 - 1)
    close(plackett_luce(t([2.0, 1.0, 0.0]), t([1, 2, 3])).item(), -((2 - lse(2, 1, 0)) + (1 - lse(1, 0))) / 2)
    # ties share a risk set: ranks 1,2,2 -> the two tied items both use lse(1, 0)
    expected = -((2 - lse(2, 1, 0)) + (1 - lse(1, 0)) + (0 - lse(1, 0))) / 2
    close(plackett_luce(t([2.0, 1.0, 0.0]), t([1, 2, 2])).item(), expected)
    # order of the inputs does not matter
    close(
        plackett_luce(t([0.0, 2.0, 1.0]), t([3, 1, 2])).item(), plackett_luce(t([2.0, 1.0, 0.0]), t([1, 2, 3])).item()
    )


def test_k2_ranking_losses_equal_pairwise_loss():
    from rlhfkit.algorithms.reward import TokenizedItem, item_losses

    scores = t([0.7, -0.4])
    bt = bradley_terry(scores[:1], scores[1:]).item()
    close(plackett_luce(scores, t([1, 2])).item(), bt)
    (item,), _ = build_items([Ranking("q", ["x", "y"], [1, 2])], tie_model="none")
    tok = [TokenizedItem(item, [0], ([1], [2]))]
    for loss in ("bt", "plackett_luce"):
        close(item_losses(scores, tok, RewardConfig(loss=loss, tie_model="none")).item(), bt)


def test_kwise_loss_averages_pairs_per_prompt():
    from rlhfkit.algorithms.reward import TokenizedItem, item_losses

    (item,), _ = build_items([Ranking("q", ["a", "b", "c"], [1, 2, 3])], tie_model="none")
    scores = t([1.0, 0.0, -2.0])
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = sum(bradley_terry(scores[i : i + 1], scores[j : j + 1]).item() for i, j in pairs) / 3
    got = item_losses(scores, [TokenizedItem(item, [0], ([1], [2], [3]))], RewardConfig(tie_model="none"))
    close(got.item(), expected)


def test_centering_by_hand():
    close(reward_centering(t([1.0]), t([2.0])).item(), 9.0)


def test_build_items_pools_annotators_and_handles_ties():
    recs = [
        Comparison("q", "x", "y", "a", "ann1"),
        Comparison("q", "y", "x", "b", "ann2"),  # the same preference, shown in the other order
        Comparison("q", "x", "y", "tie", "ann3"),
        Comparison("q2", "u", "v", "both_bad"),
        PreferencePair("q3", "good", "bad", votes={"chosen": 3, "rejected": 1}),
        Ranking("q4", ["a", "b"], [1, 2], not_rankable=True),
    ]
    items, skipped = build_items(recs)
    by_prompt = {it.prompt: it for it in items}
    (j,) = by_prompt["q"].judgements
    assert by_prompt["q"].responses == ("x", "y")
    assert (j.p_a, j.p_b, j.p_tie, j.votes) == (2 / 3, 0.0, 1 / 3, 3) and j.agreement == 2 / 3
    assert by_prompt["q2"].judgements[0].p_tie == 1.0  # both_bad counts as a tie by default
    assert (by_prompt["q3"].judgements[0].p_a, by_prompt["q3"].judgements[0].p_b) == (0.75, 0.25)
    assert skipped == {"not_rankable": 1}
    items, skipped = build_items(recs, tie_model="none", both_bad="drop")
    assert {it.prompt for it in items} == {"q", "q3"} and skipped == {"not_rankable": 1, "both_bad": 1}


def test_ece_and_metrics_by_hand():
    # two predictions 0.15 (target 0) and 0.85 (target 1): each bin is off by 0.15
    close(expected_calibration_error(t([0.15, 0.85]), t([0.0, 1.0])), 0.15)
    j_hard = Judgement(0, 1, 1.0, 0.0, 0.0, 1)
    j_split = Judgement(0, 1, 2 / 3, 1 / 3, 0.0, 3)
    j_tie = Judgement(0, 1, 0.0, 0.0, 1.0, 1)
    m = preference_metrics([(1.0, 0.0, j_hard), (0.0, 1.0, j_split), (0.3, 0.2, j_tie)], [1.0, 0.0, 3.0, 0.0])
    assert m["eval_accuracy"] == 0.5 and m["eval_pairs"] == 2  # the tie is excluded
    assert m["eval_accuracy_by_agreement"] == {"0.67": 0.0, "1.00": 1.0}
    assert m["eval_score_mean"] == 1.0


def test_decisive_win_probability_by_hand():
    from rlhfkit.losses import decisive_win_probability

    d = t([math.log(4)])
    close(decisive_win_probability(d, t([0.0]), tie_model="davidson", tie_param=0.0).item(), 0.8)  # sigmoid(ln 4)
    close(decisive_win_probability(d, t([0.0]), tie_model="none", tie_param=0.0).item(), 0.8)
    # Rao-Kupper, theta = 2: P(a) = 2/3, P(b) = 1/9 -> 6/7
    close(decisive_win_probability(d, t([0.0]), tie_model="rao_kupper", tie_param=math.log(2)).item(), 6 / 7)
