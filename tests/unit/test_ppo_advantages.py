"""rlhf ppo's critic-free paths against hand values and naive loops: advantages_and_returns for advantage=reinforce_pp,
rloo and grpo on a small hand-built rollout, and GRPO's k3 KL term in policy_loss on a module with fixed logits."""

import math
import statistics
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from rlhfkit.algorithms.ppo import Rollout, advantages_and_returns, policy_loss
from rlhfkit.config import PPOConfig

t = torch.tensor

# 2 prompts x 3 responses of up to 3 tokens; masked slots hold junk the code must ignore (ref 0 there, as after EOS)
MASK = [[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0], [1, 1, 1]]
LOGP = [
    [-1.0, -0.5, -2.0],
    [-0.3, -1.2, -7.0],
    [-0.9, -7.0, -7.0],
    [-1.5, -0.2, -0.4],
    [-0.6, -0.8, -7.0],
    [-2.0, -1.1, -0.7],
]
REF = [
    [-1.2, -0.4, -2.3],
    [-0.8, -1.3, 0.0],
    [-0.5, 0.0, 0.0],
    [-1.5, -0.4, -0.5],
    [-0.2, -1.0, 0.0],
    [-1.7, -1.0, -0.9],
]
SCORES = [1.0, 0.0, 2.0, -1.0, 0.5, 0.25]
KL_COEF = 0.5


def rollout() -> Rollout:
    return Rollout(None, None, None, t(MASK), t(LOGP), t(REF), torch.zeros(6, 3), t(SCORES), t(SCORES))


def token_kl(kind: str, b: int, i: int) -> float:
    d = LOGP[b][i] - REF[b][i]
    return d if kind == "k1" else math.exp(-d) - 1 + d  # k3 = ref/pi - 1 - log(ref/pi)


def length(b: int) -> int:
    return sum(MASK[b])


def expected_kl(kind: str) -> list[list[float]]:
    return [[token_kl(kind, b, i) if i < length(b) else 0.0 for i in range(3)] for b in range(6)]


def per_sequence(values: list[float]) -> list[list[float]]:
    """A sequence's advantage on each of its tokens, zero after its end."""
    return [[values[b] if i < length(b) else 0.0 for i in range(3)] for b in range(6)]


def check(actual, expected, atol=1e-6):
    torch.testing.assert_close(actual, t(expected), rtol=0, atol=atol)


@pytest.mark.parametrize("kind", ["k1", "k3"])
def test_reinforce_pp_by_a_naive_loop(kind):
    """REINFORCE++: token rewards -kl_coef x KL_t plus the score on the last token, discounted returns (gamma 0.5),
    whitened over all response tokens of the batch (mean 0, unbiased variance 1); no critic targets."""
    cfg = PPOConfig(advantage="reinforce_pp", gamma=0.5, kl_estimator=kind, num_generations=3, batch_size=6)
    kl, advantages, returns = advantages_and_returns(rollout(), kl_coef=KL_COEF, cfg=cfg)
    check(kl, expected_kl(kind))
    g = [[0.0] * 3 for _ in range(6)]
    for b in range(6):
        n = length(b)
        rewards = [-KL_COEF * token_kl(kind, b, i) for i in range(n)]
        rewards[-1] += SCORES[b]
        running = 0.0
        for i in reversed(range(n)):
            running = rewards[i] + 0.5 * running
            g[b][i] = running
    if kind == "k1":  # by hand, the first response: rewards -0.5 x (0.2, -0.1, 0.3) + (0, 0, 1) = (-0.1, 0.05, 0.85)
        assert g[0] == pytest.approx([-0.1 + 0.5 * (0.05 + 0.5 * 0.85), 0.05 + 0.5 * 0.85, 0.85], abs=1e-12)
    tokens = [g[b][i] for b in range(6) for i in range(length(b))]
    mean, std = statistics.mean(tokens), statistics.stdev(tokens)
    check(advantages, [[(g[b][i] - mean) / std if i < length(b) else 0.0 for i in range(3)] for b in range(6)])
    check(returns, [[0.0] * 3] * 6, atol=0)


@pytest.mark.parametrize("kind", ["k1", "k3"])
def test_rloo_by_a_naive_loop(kind):
    """RLOO: each response's reward is its score minus kl_coef x its summed token KL, minus the mean reward of the
    other responses to its prompt; every token of the response gets it."""
    cfg = PPOConfig(advantage="rloo", kl_estimator=kind, num_generations=3, batch_size=6)
    kl, advantages, returns = advantages_and_returns(rollout(), kl_coef=KL_COEF, cfg=cfg)
    check(kl, expected_kl(kind))
    reward = [SCORES[b] - KL_COEF * sum(token_kl(kind, b, i) for i in range(length(b))) for b in range(6)]
    if kind == "k1":  # by hand: 1 - 0.5 x 0.4, 0 - 0.5 x 0.6, 2 - 0.5 x -0.4
        assert reward[:3] == pytest.approx([0.8, -0.3, 2.2], abs=1e-12)
    loo = [reward[b] - statistics.mean(reward[j] for j in range(6) if j // 3 == b // 3 and j != b) for b in range(6)]
    if kind == "k1":
        assert loo[:3] == pytest.approx([0.8 - 0.95, -0.3 - 1.5, 2.2 - 0.25], abs=1e-12)
    check(advantages, per_sequence(loo))
    check(returns, [[0.0] * 3] * 6, atol=0)


def test_grpo_by_a_naive_loop():
    """GRPO: scores normalised within each prompt's group, (s - mean) / (std + 1e-6) with the unbiased std; the KL
    stays out of the advantage (it is a loss term) and no critic targets."""
    cfg = PPOConfig(advantage="grpo", kl_estimator="k1", num_generations=3, batch_size=6)
    kl, advantages, returns = advantages_and_returns(rollout(), kl_coef=KL_COEF, cfg=cfg)
    check(kl, expected_kl("k1"))
    norm = []
    for b in range(6):
        group = SCORES[3 * (b // 3) : 3 * (b // 3) + 3]
        norm.append((SCORES[b] - statistics.mean(group)) / (statistics.stdev(group) + 1e-6))
    assert norm[:3] == pytest.approx([0.0, -1.0, 1.0], abs=1e-5)  # scores 1, 0, 2: mean 1, std 1
    check(advantages, per_sequence(norm))
    check(returns, [[0.0] * 3] * 6, atol=0)
    # kl_coef does not reach GRPO's advantages
    check(advantages_and_returns(rollout(), kl_coef=5.0, cfg=cfg)[1], per_sequence(norm))


class FixedLogits(nn.Module):
    """A policy whose logits at each position are a row of `table` picked by the token there."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = nn.Parameter(table)

    def forward(self, input_ids, attention_mask, position_ids, use_cache, logits_to_keep):
        return SimpleNamespace(logits=self.table[input_ids][:, -logits_to_keep:])


def policy_and_rollout():
    """Two responses of 2 tokens to one-token prompts: row 0 = (0 | 1, 2), row 1 = (3 | 4, then 5 after EOS).
    The policy gives token 1 after 0 probability 0.5, token 2 after 1 0.25, token 4 after 3 0.5 and token 5 after 4
    about e^-1000 (its log-probability is -1000: k3 of it against the zero reference logprob after EOS is inf)."""
    log = math.log
    table = torch.zeros(6, 6)
    table[0] = t([log(p) for p in (0.1, 0.5, 0.1, 0.1, 0.1, 0.1)])
    table[1] = t([log(p) for p in (0.15, 0.15, 0.25, 0.15, 0.15, 0.15)])
    table[3] = t([log(p) for p in (0.1, 0.1, 0.1, 0.1, 0.5, 0.1)])
    table[4, 5] = -1000.0
    ids = t([[0, 1, 2], [3, 4, 5]])
    old = t([[log(0.5), log(0.25)], [log(0.5), 0.0]])  # the policy's own: ratio 1
    ref = t([[log(0.25), log(0.5)], [log(0.5), 0.0]])
    mask = t([[1, 1], [1, 0]])
    attention = t([[1, 1, 1], [1, 1, 0]])
    data = Rollout(ids, attention, t([[0, 1, 2], [0, 1, 2]]), mask, old, ref, torch.zeros(2, 2), None, None)
    return FixedLogits(table), data, table


def test_grpo_policy_loss_adds_kl_coef_times_the_k3_token_mean_by_hand():
    policy, data, table = policy_and_rollout()
    advantages = t([[1.0, 1.0], [-0.5, 0.0]])
    cfg = PPOConfig(advantage="grpo", temperature=1.0, cliprange=0.2)
    idx = torch.arange(2)
    loss, stats = policy_loss(policy, data, advantages, idx, context=1, cfg=cfg, kl_coef=0.3)
    # k3 = ref/pi - 1 - log(ref/pi): ref/pi = 0.5 -> log 2 - 0.5; ref/pi = 2 -> 1 - log 2; ref/pi = 1 -> 0;
    # the token after EOS does not count. Token mean: 0.5 / 3
    kl = ((math.log(2) - 0.5) + (1 - math.log(2)) + 0.0) / 3
    pg = -(1.0 + 1.0 - 0.5) / 3  # ratio 1: minus the token mean of the advantages
    assert stats["kl_loss"].item() == pytest.approx(kl, abs=1e-6, rel=0)
    assert stats["pg_loss"].item() == pytest.approx(pg, abs=1e-6, rel=0)
    assert loss.item() == pytest.approx(pg + 0.3 * kl, abs=1e-6, rel=0)
    # its gradient: d(0.3 x mean k3)/d logpi_t = 0.3 / 3 x (1 - ref/pi), and d logpi(y)/d logits = onehot(y) - pi
    (with_kl,) = torch.autograd.grad(loss, policy.table)
    loss0, _ = policy_loss(policy, data, advantages, idx, context=1, cfg=cfg, kl_coef=0.0)
    (without,) = torch.autograd.grad(loss0, policy.table)
    expected = torch.zeros(6, 6)
    probs = table.softmax(dim=-1)
    expected[0] = 0.1 * (1 - 0.5) * (torch.eye(6)[1] - probs[0])
    expected[1] = 0.1 * (1 - 2.0) * (torch.eye(6)[2] - probs[1])
    torch.testing.assert_close(with_kl - without, expected, rtol=0, atol=1e-6)  # finite: the inf token is masked
    # the other critic-free methods keep the KL in the reward, not in the loss
    other, stats = policy_loss(
        policy, data, advantages, idx, context=1, cfg=PPOConfig(advantage="rloo", temperature=1.0), kl_coef=0.3
    )
    assert "kl_loss" not in stats and other.item() == pytest.approx(pg, abs=1e-6, rel=0)


def test_held_out_evaluation_runs_after_the_first_every_nth_and_the_last_iteration_and_only_the_last_when_off():
    from rlhfkit.algorithms.ppo import evaluates_after

    def after(iterations: int, every: int) -> list[int]:
        return [d for d in range(1, iterations + 1) if evaluates_after(d, iterations, every)]

    assert after(12, 4) == [1, 4, 8, 12]
    assert after(10, 3) == [1, 3, 6, 9, 10]
    assert after(12, 0) == [12]  # off: the end alone (the pipeline's eval_every=0), not every iteration
    assert after(1, 0) == after(1, 5) == [1]
