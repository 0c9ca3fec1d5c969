"""Loss functions as pure functions of tensors. Torch only; every one is unit-tested against hand values."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100


def sft_nll(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Summed next-token negative log-likelihood over the target tokens, and how many there were.

    logits: (B, T, V) for inputs (B, T); labels: (B, T) with IGNORE_INDEX on prompt and padding.
    Position t predicts labels[t + 1]. The sum (not the mean) is returned so that callers can divide by the
    token count of the whole optimizer step: that keeps gradient accumulation and data parallelism exact.
    """
    shift_logits = logits[:, :-1].reshape(-1, logits.size(-1)).float()
    shift_labels = labels[:, 1:].reshape(-1)
    nll = F.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return nll, (shift_labels != IGNORE_INDEX).sum()


# --- reward model (preferences) ---------------------------------------------------------------------------------
#
# Every preference loss below is per comparison and takes scores r_a, r_b of shape (P,). Outcome probabilities
# (p_a, p_b, p_tie) sum to 1 per comparison: a hard label is one-hot; several annotators give shares (soft target).


def bradley_terry(r_chosen: Tensor, r_rejected: Tensor, *, margin: Tensor | float | None = None) -> Tensor:
    """Per-pair -log sigmoid(r_chosen - r_rejected - margin) (Bradley & Terry 1952; margin: Touvron et al. 2023).
    The reference form: training uses `soft_bradley_terry`, `tie_aware_loss` and `plackett_luce`, each tested to
    reduce to this for one hard label (and K = 2 without ties)."""
    diff = r_chosen - r_rejected
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff)


def soft_bradley_terry(r_a: Tensor, r_b: Tensor, p_a: Tensor) -> Tensor:
    """Cross-entropy of sigmoid(r_a - r_b) against the share p_a of annotators preferring a. p_a = 1 is plain BT."""
    d = r_a - r_b
    return -(p_a * F.logsigmoid(d) + (1 - p_a) * F.logsigmoid(-d))


def davidson_logprobs(r_a: Tensor, r_b: Tensor, *, log_nu: float) -> tuple[Tensor, Tensor, Tensor]:
    """log P(a wins), log P(b wins), log P(tie) under Davidson (1970) with strengths exp(r) and tie weight nu:
    P(a) = e^{d/2} / Z, P(b) = e^{-d/2} / Z, P(tie) = nu / Z, Z = e^{d/2} + e^{-d/2} + nu, d = r_a - r_b."""
    half = (r_a - r_b) / 2
    log_z = torch.logsumexp(torch.stack([half, -half, torch.full_like(half, log_nu)]), dim=0)
    return half - log_z, -half - log_z, log_nu - log_z


def rao_kupper_logprobs(r_a: Tensor, r_b: Tensor, *, log_theta: float) -> tuple[Tensor, Tensor, Tensor]:
    """log P(a wins), log P(b wins), log P(tie) under Rao & Kupper (1967), theta > 1:
    P(a) = sigmoid(d - log theta), P(b) = sigmoid(-d - log theta), P(tie) = the rest,
    log P(tie) = log(theta^2 - 1) + log P(a) + log P(b)."""
    if log_theta <= 0:
        raise ValueError(f"Rao-Kupper needs theta > 1 (log_theta > 0), got {log_theta}")
    d = r_a - r_b
    log_pa, log_pb = F.logsigmoid(d - log_theta), F.logsigmoid(-d - log_theta)
    return log_pa, log_pb, math.log(math.expm1(2 * log_theta)) + log_pa + log_pb


def decisive_win_probability(r_a: Tensor, r_b: Tensor, *, tie_model: str, tie_param: float) -> Tensor:
    """P(a wins | the judgement is not a tie): sigmoid(r_a - r_b) under Bradley-Terry and Davidson (whose win odds
    are e^{d/2} : e^{-d/2}), P(a) / (P(a) + P(b)) under Rao-Kupper, where the tie threshold changes the odds."""
    if tie_model == "rao_kupper":
        log_pa, log_pb, _ = rao_kupper_logprobs(r_a, r_b, log_theta=tie_param)
        return torch.sigmoid(log_pa - log_pb)
    return torch.sigmoid(r_a - r_b)


def tie_aware_loss(
    r_a: Tensor, r_b: Tensor, p_a: Tensor, p_b: Tensor, p_tie: Tensor, *, tie_model: str, tie_param: float
) -> Tensor:
    """Per-comparison cross-entropy over the three outcomes (a, b, tie) with a tie model "davidson" (tie_param =
    log nu) or "rao_kupper" (tie_param = log theta)."""
    if tie_model == "davidson":
        log_pa, log_pb, log_pt = davidson_logprobs(r_a, r_b, log_nu=tie_param)
    elif tie_model == "rao_kupper":
        log_pa, log_pb, log_pt = rao_kupper_logprobs(r_a, r_b, log_theta=tie_param)
    else:
        raise ValueError(f"unknown tie_model {tie_model!r} (davidson, rao_kupper)")
    return -(p_a * log_pa + p_b * log_pb + p_tie * log_pt)


def plackett_luce(scores: Tensor, ranks: Tensor) -> Tensor:
    """Negative log-likelihood of one ranking under Plackett-Luce (Plackett 1975), divided by K - 1 (the number of
    choices a strict ranking makes), so that for K = 2 without ties it equals the Bradley-Terry loss.

    scores, ranks: (K,); rank 1 is best. Tied items share a risk set (Breslow 1974): each item's term is
    r_i - logsumexp(r_j over items ranked at or below it), which pulls tied items together. For K = 2 without ties
    this is -log sigmoid(r_1 - r_2).
    """
    at_or_below = ranks.unsqueeze(0) >= ranks.unsqueeze(1)  # [i, j]: item j is in item i's risk set
    masked = scores.unsqueeze(0).masked_fill(~at_or_below, float("-inf"))
    return -(scores - torch.logsumexp(masked, dim=1)).sum() / (scores.numel() - 1)


def reward_centering(r_a: Tensor, r_b: Tensor) -> Tensor:
    """(r_a + r_b)^2 per pair: keeps scores near zero mean (Eisenstein et al. 2023, "Helping or herding")."""
    return (r_a + r_b) ** 2


# --- direct preference optimization (policy logprobs against a frozen reference) ------------------------------
#
# Inputs are summed response logprobs of shape (P,): logp_a, logp_b under the policy, ref_a, ref_b under the
# reference; outcome shares p_a, p_b, p_tie as for the reward model (a hard label is one-hot). The implicit reward of
# a response is beta * (logp - ref) (Rafailov et al. 2023, Eq. 5).


def dpo_loss(
    logp_a: Tensor,
    logp_b: Tensor,
    ref_a: Tensor,
    ref_b: Tensor,
    p_a: Tensor,
    p_b: Tensor,
    p_tie: Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Per-pair DPO loss (Rafailov et al. 2023, Eq. 7) against soft outcome shares: -(q log sigmoid(beta h) + (1 - q)
    log sigmoid(-beta h)), h = (logp_a - ref_a) - (logp_b - ref_b), q = p_a + p_tie / 2 (a tie is half a vote each
    way, which pulls h to 0). label_smoothing eps moves q towards 1/2 as q (1 - eps) + (1 - q) eps: conservative DPO
    (cDPO, Mitchell 2023), for labels that are wrong with probability eps."""
    h = (logp_a - ref_a) - (logp_b - ref_b)
    q = p_a + 0.5 * p_tie
    q = q * (1 - label_smoothing) + (1 - q) * label_smoothing
    return -(q * F.logsigmoid(beta * h) + (1 - q) * F.logsigmoid(-beta * h))


def robust_dpo_loss(
    logp_a: Tensor,
    logp_b: Tensor,
    ref_a: Tensor,
    ref_b: Tensor,
    p_a: Tensor,
    p_b: Tensor,
    *,
    beta: float,
    label_smoothing: float,
) -> Tensor:
    """Robust DPO (Chowdhury et al. 2024, Eq. 8): an unbiased loss when each label is flipped with probability eps,
    L(h) = ((1 - eps) l(h) - eps l(-h)) / (1 - 2 eps), l(h) = -log sigmoid(beta h). Votes weigh the two directions:
    p_a L(h) + p_b L(-h), which is the paper's loss for a hard label and symmetric for a split vote (ties carry no
    direction: callers drop tie-only judgements)."""
    if not 0 <= label_smoothing < 0.5:
        raise ValueError(f"robust DPO needs 0 <= label_smoothing < 0.5, got {label_smoothing}")
    h = (logp_a - ref_a) - (logp_b - ref_b)
    eps = label_smoothing

    def robust(x: Tensor) -> Tensor:
        return ((1 - eps) * -F.logsigmoid(beta * x) - eps * -F.logsigmoid(-beta * x)) / (1 - 2 * eps)

    return p_a * robust(h) + p_b * robust(-h)


def ipo_loss(
    logp_a: Tensor, logp_b: Tensor, ref_a: Tensor, ref_b: Tensor, p_a: Tensor, p_b: Tensor, *, beta: float
) -> Tensor:
    """IPO (Azar et al. 2023, Eq. 17): (h - (p_a - p_b) / (2 beta))^2, h the log-ratio difference; a hard label
    regresses h to 1 / (2 beta) (beta is the paper's tau), a tie to 0. (The mixture over outcomes sum_i p_i (h - t_i)^2
    differs from this by a constant only.)"""
    h = (logp_a - ref_a) - (logp_b - ref_b)
    return (h - (p_a - p_b) / (2 * beta)) ** 2


def tie_dpo_loss(
    logp_a: Tensor,
    logp_b: Tensor,
    ref_a: Tensor,
    ref_b: Tensor,
    p_a: Tensor,
    p_b: Tensor,
    p_tie: Tensor,
    *,
    beta: float,
    tie_model: str = "davidson",
    tie_param: float = 0.0,
) -> Tensor:
    """DPO with ties (Chen et al. 2024, "On Extending DPO to Accommodate Ties"): the three-outcome likelihood of the
    reward model (Davidson or Rao-Kupper) over the implicit rewards beta (logp - ref), so a tie pulls the two
    implicit rewards together as it pulls reward-model scores together."""
    r_a, r_b = beta * (logp_a - ref_a), beta * (logp_b - ref_b)
    return tie_aware_loss(r_a, r_b, p_a, p_b, p_tie, tie_model=tie_model, tie_param=tie_param)


def kto_loss(
    logp: Tensor,
    ref: Tensor,
    desirable: Tensor,
    *,
    beta: float,
    kl: Tensor,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> Tensor:
    """KTO (Ethayarajh et al. 2024, Eq. 8) for unpaired good/bad answers: with r = logp - ref and the reference point
    z = max(0, kl) (an estimate of KL(policy || reference), not differentiated), a good answer costs
    w_D (1 - sigmoid(beta (r - z))), a bad one w_U (1 - sigmoid(beta (z - r))). desirable: (N,) bool."""
    z = kl.detach().clamp(min=0)
    r = logp - ref
    good = desirable_weight * (1 - torch.sigmoid(beta * (r - z)))
    bad = undesirable_weight * (1 - torch.sigmoid(beta * (z - r)))
    return torch.where(desirable, good, bad)


# --- PPO -------------------------------------------------------------------------------------------------------


def ppo_clip_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, *, cliprange: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Clipped surrogate objective (Schulman et al. 2017, Eq. 7) as a loss, mean over masked tokens.

    Returns (loss, clip fraction, approx KL = mean (ratio - 1) - log ratio)."""
    log_ratio = logprobs - old_logprobs
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - cliprange, 1 + cliprange)
    n = mask.sum().clamp(min=1)
    loss = (torch.maximum(unclipped, clipped) * mask).sum() / n
    with torch.no_grad():
        clipfrac = ((clipped > unclipped).float() * mask).sum() / n
        approx_kl = (((ratio - 1) - log_ratio) * mask).sum() / n
    return loss, clipfrac, approx_kl


def value_clip_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, *, cliprange_value: float
) -> tuple[Tensor, Tensor]:
    """0.5 * max((V - R)^2, (clip(V, V_old +- eps) - R)^2), mean over masked tokens (PPO implementation details,
    Huang et al. 2022). Returns (loss, fraction of tokens where the clipped term was used)."""
    clipped_values = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)
    loss_unclipped = (values - returns) ** 2
    loss_clipped = (clipped_values - returns) ** 2
    n = mask.sum().clamp(min=1)
    loss = 0.5 * (torch.maximum(loss_unclipped, loss_clipped) * mask).sum() / n
    with torch.no_grad():
        clipfrac = ((loss_clipped > loss_unclipped).float() * mask).sum() / n
    return loss, clipfrac
