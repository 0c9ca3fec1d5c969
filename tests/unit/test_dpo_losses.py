"""DPO-family losses, KTO and critic-free advantages against numbers computed by hand."""

import math

import pytest
import torch

from rlhfkit.advantages import discounted_returns, group_advantages
from rlhfkit.losses import dpo_loss, ipo_loss, kto_loss, robust_dpo_loss, tie_dpo_loss

t = torch.tensor
# h = (logp_a - ref_a) - (logp_b - ref_b) = (-1 + 1.5) - (-2 + 1.5) = 1; with beta 0.1, beta h = 0.1
LOGPS = (t([-1.0]), t([-2.0]), t([-1.5]), t([-1.5]))
L_POS, L_NEG = math.log(1 + math.exp(-0.1)), math.log(1 + math.exp(0.1))  # -log sigmoid(0.1), -log sigmoid(-0.1)
ONE, ZERO = t([1.0]), t([0.0])


def close(x, y):
    assert x == pytest.approx(y, abs=1e-6, rel=0)


def test_dpo_by_hand():
    close(dpo_loss(*LOGPS, ONE, ZERO, ZERO, beta=0.1).item(), L_POS)  # 0.644397
    close(dpo_loss(*LOGPS, ZERO, ONE, ZERO, beta=0.1).item(), L_NEG)  # the other direction
    close(dpo_loss(*LOGPS, ZERO, ZERO, ONE, beta=0.1).item(), 0.5 * (L_POS + L_NEG))  # a tie: half each way
    close(dpo_loss(*LOGPS, ONE, ZERO, ZERO, beta=0.1, label_smoothing=0.1).item(), 0.9 * L_POS + 0.1 * L_NEG)
    # soft target from three annotators (2 for a, 1 for b)
    close(dpo_loss(*LOGPS, t([2 / 3]), t([1 / 3]), ZERO, beta=0.1).item(), 2 / 3 * L_POS + 1 / 3 * L_NEG)


def test_robust_dpo_by_hand():
    close(robust_dpo_loss(*LOGPS, ONE, ZERO, beta=0.1, label_smoothing=0.1).item(), (0.9 * L_POS - 0.1 * L_NEG) / 0.8)
    close(robust_dpo_loss(*LOGPS, ONE, ZERO, beta=0.1, label_smoothing=0.0).item(), L_POS)
    # b preferred: the same loss of -h; a 1:1 split weighs both directions alike, whichever answer is listed first
    close(robust_dpo_loss(*LOGPS, ZERO, ONE, beta=0.1, label_smoothing=0.1).item(), (0.9 * L_NEG - 0.1 * L_POS) / 0.8)
    half = t([0.5])
    split = robust_dpo_loss(*LOGPS, half, half, beta=0.1, label_smoothing=0.1).item()
    swapped = robust_dpo_loss(LOGPS[1], LOGPS[0], LOGPS[3], LOGPS[2], half, half, beta=0.1, label_smoothing=0.1)
    close(split, swapped.item())
    close(robust_dpo_loss(*LOGPS, ZERO, ONE, beta=0.1, label_smoothing=0.0).item(), L_NEG)  # b preferred: h flips
    with pytest.raises(ValueError):
        robust_dpo_loss(*LOGPS, ONE, ZERO, beta=0.1, label_smoothing=0.5)


def test_ipo_by_hand():
    close(ipo_loss(*LOGPS, ONE, ZERO, beta=0.1).item(), (1 - 5) ** 2)  # h regressed to 1 / (2 beta) = 5
    close(ipo_loss(*LOGPS, ZERO, ZERO, beta=0.1).item(), 1.0)  # a tie regresses h to 0


def test_tie_dpo_is_davidson_over_implicit_rewards_by_hand():
    # implicit rewards 0.1 * 0.5 = 0.05 and 0.1 * -0.5 = -0.05; Davidson with nu = 1, d/2 = 0.05
    z = math.exp(0.05) + math.exp(-0.05) + 1
    close(tie_dpo_loss(*LOGPS, ONE, ZERO, ZERO, beta=0.1).item(), -math.log(math.exp(0.05) / z))
    close(tie_dpo_loss(*LOGPS, ZERO, ZERO, ONE, beta=0.1).item(), -math.log(1 / z))


def test_kto_by_hand():
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    # r = logp - ref = 0.5, z = 0.2: good 1 - sigmoid(0.1 * 0.3), bad 1 - sigmoid(-0.03)
    loss = kto_loss(t([-1.0, -1.0]), t([-1.5, -1.5]), t([True, False]), beta=0.1, kl=t(0.2), undesirable_weight=2.0)
    close(loss[0].item(), 1 - sig(0.03))
    close(loss[1].item(), 2.0 * (1 - sig(-0.03)))
    # the reference point is never negative
    close(kto_loss(t([-1.0]), t([-1.5]), t([True]), beta=0.1, kl=t(-3.0)).item(), 1 - sig(0.05))


def test_group_advantages_by_hand():
    scores = t([1.0, 2.0, 3.0, 4.0, 4.0, 4.0])
    torch.testing.assert_close(
        group_advantages(scores, group_size=3, kind="grpo"), t([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0]), rtol=0, atol=1e-5
    )
    # leave-one-out: 1 - mean(2, 3) = -1.5, 2 - mean(1, 3) = 0, 3 - mean(1, 2) = 1.5
    torch.testing.assert_close(
        group_advantages(scores, group_size=3, kind="rloo"), t([-1.5, 0.0, 1.5, 0.0, 0.0, 0.0]), rtol=0, atol=1e-6
    )
    with pytest.raises(ValueError):
        group_advantages(scores, group_size=4, kind="grpo")


def test_discounted_returns_by_hand():
    rewards, mask = t([[1.0, 0.0, 2.0, 9.0]]), t([[1.0, 1.0, 1.0, 0.0]])
    # G2 = 2, G1 = 0 + 0.5 * 2 = 1, G0 = 1 + 0.5 * 1 = 1.5; nothing after the mask
    torch.testing.assert_close(discounted_returns(rewards, mask, gamma=0.5), t([[1.5, 1.0, 2.0, 0.0]]), rtol=0, atol=0)


def test_rpo_adds_the_winners_per_token_nll_by_hand():
    """preference_losses with rpo_alpha: each item's mean DPO loss over its judgements plus alpha x the mean, over its
    decisive judgements (ties have no winner), of the winner's NLL per token."""
    from rlhfkit.algorithms.dpo import Example, preference_losses
    from rlhfkit.config import DPOConfig
    from rlhfkit.data.preferences import Judgement

    def judged(a, b, p_a, p_b, p_tie):
        return Judgement(a, b, p_a, p_b, p_tie, votes=3)

    examples = [
        # a 3-way item: 0 beats 1; 1 and 2 tie; 0 over 2 by 2 votes to 1 (a soft target, still decisive: 0 wins)
        Example(
            [1],
            ([2, 3], [4, 5, 6], [7, 8, 9]),
            (judged(0, 1, 1, 0, 0), judged(1, 2, 0, 0, 1), judged(0, 2, 2 / 3, 1 / 3, 0)),
        ),
        Example([1], ([2, 3, 4, 5], [6]), (judged(0, 1, 0, 1, 0),)),  # the second answer (b) wins
        Example([1], ([2], [3]), (judged(0, 1, 0, 0, 1),)),  # a tie alone: no NLL term
    ]
    logp = [-4.0, -6.0, -9.0, -2.0, -3.0, -1.0, -1.5]
    ref = [-5.0, -5.0, -8.0, -2.5, -2.0, -1.2, -1.0]
    lengths = [2, 3, 3, 4, 1, 1, 1]
    beta, alpha = 0.1, 0.5

    def dpo(a, b, p_a, p_tie):  # -(q log sigmoid(beta h) + (1 - q) log sigmoid(-beta h)), q = p_a + p_tie / 2
        h = (logp[a] - ref[a]) - (logp[b] - ref[b])
        q = p_a + p_tie / 2
        return q * math.log(1 + math.exp(-beta * h)) + (1 - q) * math.log(1 + math.exp(beta * h))

    # item 0: winner 0 twice (NLL 4 / 2 tokens = 2 each, mean 2); item 1: answer 4 wins (3 / 1 token); item 2: none
    dpo_part = [
        (dpo(0, 1, 1, 0) + dpo(1, 2, 0, 1) + dpo(0, 2, 2 / 3, 0)) / 3,
        dpo(3, 4, 0, 0),
        dpo(5, 6, 0, 1),
    ]
    expected = [dpo_part[0] + alpha * 2.0, dpo_part[1] + alpha * 3.0, dpo_part[2]]
    logps = torch.tensor(logp, requires_grad=True)
    losses, stats = preference_losses(logps, t(ref), t(lengths), examples, DPOConfig(beta=beta, rpo_alpha=alpha))
    torch.testing.assert_close(losses, t(expected), rtol=0, atol=1e-6)
    assert stats["decisive"].item() == 3
    close(stats["logps_chosen"].item(), -4.0 - 4.0 - 3.0)
    plain, _ = preference_losses(logps, t(ref), t(lengths), examples, DPOConfig(beta=beta))  # rpo_alpha 0: DPO alone
    torch.testing.assert_close(plain, t(dpo_part), rtol=0, atol=1e-6)
    # the term is differentiated: d/dlogp of alpha x mean NLL per token is -alpha / length / decisive judgements
    (grad,) = torch.autograd.grad((losses - plain).sum(), logps)
    torch.testing.assert_close(grad, t([-alpha * (1 / 2 + 1 / 2) / 2, 0, 0, 0, -alpha, 0, 0]), rtol=0, atol=1e-6)
    # on top of any preference loss: IPO plus the same NLL
    ipo, _ = preference_losses(logps, t(ref), t(lengths), examples, DPOConfig(beta=beta, loss="ipo", rpo_alpha=alpha))
    ipo_plain, _ = preference_losses(logps, t(ref), t(lengths), examples, DPOConfig(beta=beta, loss="ipo"))
    torch.testing.assert_close(ipo - ipo_plain, t([alpha * 2.0, alpha * 3.0, 0.0]), rtol=0, atol=1e-6)
