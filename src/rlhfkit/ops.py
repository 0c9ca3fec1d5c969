"""Tensor helpers shared by every algorithm. Torch only."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def logprobs_from_logits(logits: Tensor, labels: Tensor, *, temperature: float = 1.0) -> Tensor:
    """Log-probability of each label under `logits / temperature`.

    logits: (..., V), labels: (...) -> (...). Logits are cast to fp32 before the division: bf16 logits divided in
    bf16 round differently from the same logits divided in fp32, and logprobs that are compared (policy vs
    reference, old vs new) must come from the same arithmetic. Uses log_softmax + gather.
    """
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    logp = F.log_softmax(logits, dim=-1)
    return logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def masked_sum(values: Tensor, mask: Tensor, *, dim: int | None = None) -> Tensor:
    """Sum of `values` where `mask` is 1."""
    return (values * mask).sum() if dim is None else (values * mask).sum(dim=dim)


def masked_mean(values: Tensor, mask: Tensor, *, dim: int | None = None) -> Tensor:
    """Mean of `values` where `mask` is 1 (over everything, or along `dim`). An empty mask gives 0, not NaN."""
    total = mask.sum() if dim is None else mask.sum(dim=dim)
    return masked_sum(values, mask, dim=dim) / total.clamp(min=1)


def masked_var(values: Tensor, mask: Tensor, *, unbiased: bool = True) -> Tensor:
    """Variance of the masked entries; unbiased (n - 1) by default, as in the PPO implementation details."""
    mean = masked_mean(values, mask)
    centered = (values - mean) * mask
    n = mask.sum()
    var = (centered**2).sum() / n.clamp(min=1)
    if unbiased:
        if n <= 1:
            return torch.zeros((), dtype=values.dtype, device=values.device)
        var = var * n / (n - 1)
    return var


def masked_whiten(values: Tensor, mask: Tensor, *, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(values - mean) / std over the masked entries; entries outside the mask are returned as zero."""
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the categorical distribution at each position: (..., V) -> (...)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)
