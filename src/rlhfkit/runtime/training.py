"""Pieces every training loop uses: data order, optimizer."""

from __future__ import annotations

import torch


def step_indices(step: int, *, n: int, batch_size: int, seed: int) -> list[int]:
    """Example indices of one optimizer step: a fresh seeded permutation per epoch, the remainder dropped.

    Depends only on (step, seed), so a resumed run sees exactly the batches an uninterrupted one would.
    """
    epoch, k = divmod(step, n // batch_size)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    return perm[k * batch_size : (k + 1) * batch_size]


def adamw(model, *, learning_rate: float, weight_decay: float, eps: float = 1e-8) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; no weight decay on biases and norms."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel updates all tensors in one pass (CPU and CUDA); it needs floating-point parameters.
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in decay + no_decay)
    return torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, 0.999), eps=eps, fused=fused)
