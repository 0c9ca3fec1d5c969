"""Loss functions as pure functions of tensors. Torch only; every one is unit-tested against hand values."""

from __future__ import annotations

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
