"""Advantages, KL estimators, the KL controller and the PPO losses against hand values and a naive loop."""

import math

import pytest
import torch

from rlhfkit.advantages import (
    AdaptiveKLController,
    FixedKLController,
    explained_variance,
    gae,
    kl_estimate,
    kl_shaped_rewards,
    normalize_scores,
    whiten_advantages,
)
from rlhfkit.losses import ppo_clip_loss, value_clip_loss
from rlhfkit.models.sampler import top_p_filter

t = torch.tensor


def naive_gae(rewards, values, mask, gamma, lam):
    """Textbook GAE, one sequence at a time, over its unmasked tokens only."""
    adv = torch.zeros_like(rewards)
    for b in range(rewards.size(0)):
        idx = [i for i in range(rewards.size(1)) if mask[b, i] > 0]
        last = 0.0
        for k in reversed(range(len(idx))):
            i = idx[k]
            next_v = values[b, idx[k + 1]].item() if k + 1 < len(idx) else 0.0
            delta = rewards[b, i].item() + gamma * next_v - values[b, i].item()
            last = delta + gamma * lam * last
            adv[b, i] = last
    return adv, (adv + values) * mask


def test_gae_matches_naive_loop():
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(4, 9, generator=g), torch.randn(4, 9, generator=g)
    mask = torch.ones(4, 9)
    mask[1, 6:] = 0  # ended early
    mask[2, 0] = 0  # a hole (never produced by the sampler, but must not break the chain)
    mask[2, 4] = 0  # and one in the middle: the values after it must reach the tokens before it
    mask[3, :] = 0
    mask[3, 0] = 1
    for gamma, lam in ((1.0, 0.95), (0.9, 0.5), (1.0, 1.0)):
        adv, ret = gae(rewards * mask, values, mask, gamma=gamma, lam=lam)
        ref_adv, ref_ret = naive_gae(rewards * mask, values * mask, mask, gamma, lam)
        torch.testing.assert_close(adv, ref_adv, rtol=0, atol=1e-6)
        torch.testing.assert_close(ret, ref_ret, rtol=0, atol=1e-6)


def test_gae_passes_values_through_a_masked_hole_by_hand():
    # tokens 0 and 2 count, 1 is a hole; gamma 1, lam 1:
    # A_2 = r_2 - V_2 = -1, A_0 = r_0 + V_2 - V_0 + A_2 = r_0 + r_2 - V_0 = 2.5
    adv, _ = gae(t([[1.0, 0.0, 2.0]]), t([[0.5, 9.0, 3.0]]), t([[1.0, 0.0, 1.0]]), gamma=1.0, lam=1.0)
    torch.testing.assert_close(adv, t([[2.5, 0.0, -1.0]]), rtol=0, atol=1e-7)


def test_gae_by_hand():
    # two tokens, gamma 1, lam 1: A_1 = r_1 - V_1, A_0 = r_0 + r_1 - V_0
    adv, ret = gae(t([[0.5, 2.0]]), t([[1.0, 3.0]]), t([[1.0, 1.0]]), gamma=1.0, lam=1.0)
    torch.testing.assert_close(adv, t([[1.5, -1.0]]), rtol=0, atol=1e-7)
    torch.testing.assert_close(ret, t([[2.5, 2.0]]), rtol=0, atol=1e-7)


def test_kl_estimators_by_hand():
    logp, ref = t([math.log(0.5), math.log(0.2)]), t([math.log(0.25), math.log(0.4)])
    torch.testing.assert_close(kl_estimate(logp, ref, kind="k1"), t([math.log(2), math.log(0.5)]), rtol=0, atol=1e-6)
    # k3 = q/p - 1 - log(q/p): q/p = 0.5 -> 0.5 - 1 + log 2; q/p = 2 -> 1 - log 2
    torch.testing.assert_close(
        kl_estimate(logp, ref, kind="k3"), t([-0.5 + math.log(2), 1 - math.log(2)]), rtol=0, atol=1e-6
    )
    torch.testing.assert_close(kl_estimate(logp, ref, kind="k2"), t([0.5 * math.log(2) ** 2] * 2), rtol=0, atol=1e-6)
    assert (kl_estimate(torch.randn(100), torch.randn(100), kind="k3") >= 0).all()


def test_kl_shaped_rewards_put_the_score_on_the_last_token():
    kl = t([[0.1, 0.2, 0.3], [0.5, 0.0, 0.0]])
    mask = t([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    r = kl_shaped_rewards(t([2.0, -1.0]), kl, mask, kl_coef=0.5)
    torch.testing.assert_close(r, t([[-0.05, -0.1, -0.15 + 2.0], [-0.25 - 1.0, 0.0, 0.0]]), rtol=0, atol=1e-7)


def test_adaptive_kl_controller_moves_beta_the_right_way():
    ctl = AdaptiveKLController(0.1, target=1.0, horizon=100)
    assert ctl.update(2.0, 10) == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))  # too much KL: beta up (error capped)
    ctl = AdaptiveKLController(0.1, target=1.0, horizon=100)
    assert ctl.update(0.9, 10) == pytest.approx(0.1 * (1 - 0.1 * 10 / 100))  # too little: beta down
    ctl.load_state_dict({"value": 0.3})
    assert ctl.state_dict() == {"value": 0.3}
    ctl = AdaptiveKLController(0.1, target=1.0, horizon=100)
    assert ctl.update(0.1, 10) == pytest.approx(0.1 * (1 - 0.2 * 10 / 100))  # far too little: error capped at -0.2


def test_fixed_kl_controller_keeps_beta():
    ctl = FixedKLController(0.05)
    assert ctl.update(100.0, 10) == 0.05 and ctl.update(0.0, 10) == 0.05
    ctl.load_state_dict({"value": 0.2})
    assert ctl.value == 0.2 and ctl.state_dict() == {"value": 0.2}


def test_whiten_advantages_over_response_tokens_only():
    adv = t([[1.0, 3.0, 99.0], [5.0, -99.0, -99.0]])
    mask = t([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    # masked entries 1, 3, 5: mean 3, unbiased variance (4 + 0 + 4) / 2 = 4, std 2
    torch.testing.assert_close(whiten_advantages(adv, mask), t([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]), rtol=0, atol=1e-6)


def test_ppo_clip_loss_by_hand():
    old = t([[0.0, 0.0, 0.0]])
    new = t([[math.log(1.5), math.log(0.5), math.log(1.1)]])  # ratios 1.5, 0.5, 1.1
    adv = t([[1.0, 1.0, -2.0]])
    mask = t([[1.0, 1.0, 1.0]])
    loss, clipfrac, approx_kl = ppo_clip_loss(new, old, adv, mask, cliprange=0.2)
    # token 1: max(-1.5, -1.2) = -1.2 (clipped); token 2: max(-0.5, -0.8) = -0.5; token 3: max(2.2, 2.2) = 2.2
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 2.2) / 3, abs=1e-6)
    assert clipfrac.item() == pytest.approx(1 / 3, abs=1e-6)
    expected_kl = sum((r - 1) - math.log(r) for r in (1.5, 0.5, 1.1)) / 3
    assert approx_kl.item() == pytest.approx(expected_kl, abs=1e-6)
    masked, _, _ = ppo_clip_loss(new, old, adv, t([[1.0, 1.0, 0.0]]), cliprange=0.2)
    assert masked.item() == pytest.approx((-1.2 - 0.5) / 2, abs=1e-6)


def test_value_clip_loss_by_hand():
    values, old, returns = t([[2.0, 0.0]]), t([[1.0, 0.0]]), t([[3.0, 1.0]])
    loss, clipfrac = value_clip_loss(values, old, returns, t([[1.0, 1.0]]), cliprange_value=0.5)
    # token 1: unclipped (2-3)^2 = 1, clipped V=1.5 -> 2.25: max 2.25; token 2: both 1
    assert loss.item() == pytest.approx(0.5 * (2.25 + 1.0) / 2, abs=1e-6)
    assert clipfrac.item() == pytest.approx(0.5, abs=1e-6)


def test_explained_variance_and_normalization():
    mask = torch.ones(1, 4)
    returns = t([[1.0, 2.0, 3.0, 4.0]])
    assert explained_variance(returns, returns, mask) == 1.0
    assert explained_variance(torch.zeros(1, 4) + 2.5, returns, mask) == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(normalize_scores(t([3.0, 1.0]), mean=1.0, std=2.0), t([1.0, 0.0]))


def test_top_p_filter_by_hand():
    logits = torch.log(t([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(top_p_filter(logits, 0.7))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.7, 0.5 + 0.3 reaches it
    assert torch.isfinite(top_p_filter(logits, 0.4)).tolist() == [[True, False, False, False]]
    assert torch.equal(top_p_filter(logits, 1.0), logits)


def test_diagnostics_warn_with_likely_causes():
    from rlhfkit.eval.diagnostics import Diagnostics

    said: list[str] = []
    diag = Diagnostics(target_kl=0.5, learning_rate=1e-5, critic_learning_rate=1e-5, emit=said.append)
    row = dict(kl=0.1, value_explained_variance=0.5, reward_mean=0.0, response_length=10.0, reward_length_corr=0.0)
    assert diag.check(1, row) == [] and said == []
    assert diag.check(2, {**row, "kl": -0.05}) == []  # one slightly negative batch is noise
    assert diag.check(3, {**row, "kl": -0.3}) == ["negative_kl"] and "temperature" in said[-1]
    assert diag.check(4, {**row, "kl": 9.0}) == ["exploding_kl"] and "lower learning_rate" in said[-1]
    assert diag.check(5, {**row, "kl": -0.9}) == []  # each kind at most once per 20 iterations
    assert diag.check(12, {**row, "value_explained_variance": 0.01}) == ["critic"]
    for it in range(13, 40):  # reward and length rise together, and length explains the reward
        grow = it - 12
        diag.check(
            it, {**row, "reward_mean": 0.1 * grow, "response_length": 10.0 + 2 * grow, "reward_length_corr": 0.95}
        )
    assert any("length_hacking" in s for s in said)


def test_the_critic_warning_names_the_critics_learning_rate():
    from rlhfkit.eval.diagnostics import Diagnostics

    said: list[str] = []
    diag = Diagnostics(target_kl=0.5, learning_rate=1e-4, critic_learning_rate=3e-6, emit=said.append)
    row = dict(kl=0.1, value_explained_variance=0.01, reward_mean=0.0, response_length=10.0, reward_length_corr=0.0)
    assert diag.check(10, row) == ["critic"]
    assert "lower critic_learning_rate (now 3e-06)" in said[-1] and "0.0001" not in said[-1]
