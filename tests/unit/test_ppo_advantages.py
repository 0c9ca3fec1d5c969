"""rlhf ppo's critic-free paths against hand values and naive loops: advantages_and_returns for advantage=reinforce_pp,
rloo and grpo on a small hand-built rollout."""

import math
import statistics

import pytest
import torch

from rlhfkit.algorithms.ppo import Rollout, advantages_and_returns
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
