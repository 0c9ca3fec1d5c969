"""Rewards, KL penalties and advantages for PPO. Torch only; every function is unit-tested.

Shapes: (B, T) over response tokens, `mask` 1 on tokens that count (up to and including EOS).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlhfkit.ops import masked_mean, masked_whiten


def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, *, kind: str = "k1") -> Tensor:
    """Per-token estimate of KL(policy || reference) from tokens sampled by the policy (Schulman 2020,
    "Approximating KL divergence"): k1 = log p - log q (unbiased, can be negative), k3 = (q/p - 1) - log(q/p)
    (unbiased, never negative, lower variance), k2 = (log p - log q)^2 / 2."""
    log_ratio = logprobs - ref_logprobs
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    if kind == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {kind!r} (k1, k2, k3)")


def kl_shaped_rewards(scores: Tensor, kl: Tensor, mask: Tensor, *, kl_coef: float) -> Tensor:
    """Token rewards: -kl_coef * KL_t on every response token, plus the sequence score on its last token
    (Ziegler et al. 2019). scores: (B,); kl, mask: (B, T). Returns (B, T), zero outside the mask."""
    rewards = -kl_coef * kl * mask
    last = (mask.cumsum(dim=1) == mask.sum(dim=1, keepdim=True)) & (mask > 0)  # the last 1 in each row
    return rewards + last * scores.unsqueeze(1)


def gae(rewards: Tensor, values: Tensor, mask: Tensor, *, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016, Eq. 16) over response tokens.

    delta_t = r_t + gamma * V_{t+1} - V_t, A_t = delta_t + gamma * lam * A_{t+1}; the value after the last token is
    0 (the episode ends). Returns (advantages, returns = advantages + values), both zero outside the mask.
    """
    values = values * mask
    next_value = torch.zeros_like(values[:, 0])
    next_adv = torch.zeros_like(values[:, 0])
    advantages = torch.zeros_like(values)
    for t in reversed(range(values.size(1))):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = (delta + gamma * lam * next_adv) * m
        advantages[:, t] = adv
        # Masked (padding) positions pass the following values through unchanged, so they never break the chain.
        next_value = torch.where(m > 0, values[:, t], next_value)
        next_adv = torch.where(m > 0, adv, next_adv)
    return advantages, (advantages + values) * mask


def group_advantages(scores: Tensor, *, group_size: int, kind: str, eps: float = 1e-6) -> Tensor:
    """Critic-free advantages of sequence scores (B,), B = prompts x group_size with each prompt's samples side by
    side: "grpo" (Shao et al. 2024, Sec. 4.1.2): (r - group mean) / (group std + eps); "rloo" (Ahmadian et al. 2024,
    Eq. 7): r minus the mean of the other samples of its prompt, K / (K - 1) (r - group mean)."""
    if scores.numel() % group_size or group_size < 2:
        raise ValueError(f"{scores.numel()} scores do not split into groups of {group_size} (at least 2)")
    groups = scores.view(-1, group_size)
    mean = groups.mean(dim=1, keepdim=True)
    if kind == "grpo":
        out = (groups - mean) / (groups.std(dim=1, keepdim=True) + eps)
    elif kind == "rloo":
        out = (groups - mean) * group_size / (group_size - 1)
    else:
        raise ValueError(f"unknown group advantage {kind!r} (grpo, rloo)")
    return out.reshape(-1)


def discounted_returns(rewards: Tensor, mask: Tensor, *, gamma: float) -> Tensor:
    """G_t = r_t + gamma G_{t+1} over each row's masked tokens (REINFORCE returns), zero outside the mask."""
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.size(1))):
        running = torch.where(mask[:, t] > 0, rewards[:, t] + gamma * running, running)
        returns[:, t] = running * mask[:, t]
    return returns


def whiten_advantages(advantages: Tensor, mask: Tensor) -> Tensor:
    """Zero mean, unit variance over the response tokens of the batch."""
    return masked_whiten(advantages, mask)


def normalize_scores(scores: Tensor, *, mean: float, std: float) -> Tensor:
    """Scores in units of the reward model's spread on its training data (mean 0, std 1 there)."""
    return (scores - mean) / max(std, 1e-8)


class AdaptiveKLController:
    """Adapts the KL coefficient towards a target KL (Ziegler et al. 2019, Sec. 2.2):
    e = clip(KL / target - 1, -0.2, 0.2); beta <- beta * (1 + e * n_steps / horizon)."""

    def __init__(self, init_kl_coef: float, *, target: float, horizon: int):
        if target <= 0 or horizon <= 0:
            raise ValueError("target KL and horizon must be positive")
        self.value, self.target, self.horizon = init_kl_coef, target, horizon

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max(current_kl / self.target - 1, -0.2), 0.2)
        self.value *= 1 + error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = state["value"]


class FixedKLController:
    def __init__(self, kl_coef: float):
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = state["value"]


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> float:
    """1 - Var(returns - values) / Var(returns) over masked tokens: 1 is a perfect critic, <= 0 a useless one."""
    var_returns = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    residual = returns - values
    var_residual = masked_mean((residual - masked_mean(residual, mask)) ** 2, mask)
    return (1 - var_residual / var_returns).item() if var_returns > 0 else float("nan")
