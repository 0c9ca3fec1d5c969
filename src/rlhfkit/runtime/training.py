"""Pieces every training loop uses: the run's start, step count, data order, optimizer."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from rlhfkit.config import ConfigError


def start_training(cfg: Any):
    """Checks the settings, makes the accelerator, checks that each step's batch splits over the processes and the
    accumulation micro-steps, and seeds every generator; returns the accelerator."""
    from accelerate.utils import set_seed

    from rlhfkit.runtime.dist import make_accelerator

    cfg.validate()
    acc = make_accelerator(device=cfg.device, mixed_precision=cfg.mixed_precision)
    world = acc.num_processes
    if cfg.batch_size % (world * cfg.grad_accum):
        raise ConfigError(
            f"batch_size ({cfg.batch_size}) must be a multiple of processes x grad_accum ({world} x {cfg.grad_accum})"
        )
    set_seed(cfg.seed)
    return acc


def plan_steps(cfg: Any, n_items: int) -> tuple[int, int]:
    """(steps per epoch, optimizer steps to run): max_steps, or epochs over the training set."""
    steps_per_epoch = n_items // cfg.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"batch_size ({cfg.batch_size}) is larger than the training set ({n_items} items)")
    return steps_per_epoch, cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.epochs * steps_per_epoch)


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
    # The fused kernel updates all tensors in one pass (CPU and CUDA); it needs plain floating-point parameters
    # (sharded DTensors take the foreach path).
    from torch.distributed.tensor import DTensor

    fused = all(
        p.is_floating_point() and p.device.type in ("cpu", "cuda") and not isinstance(p, DTensor)
        for p in decay + no_decay
    )
    return torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, 0.999), eps=eps, fused=fused)


def shards(acc, distributed: str) -> bool:
    """Whether a run shards its trained model: distributed=fsdp with more than one process (one process has
    nothing to shard over and trains as plain)."""
    return distributed == "fsdp" and acc.num_processes > 1


def prepare_trainable(acc, model: torch.nn.Module, cfg: Any, *, total_steps: int):
    """(model, optimizer, scheduler, sharded) for a model that trains, its fp32 master weights in place: AdamW
    (cfg.learning_rate, cfg.weight_decay) and linear warmup (cfg.warmup_ratio) then cosine decay over total_steps.

    ddp (or one process): the accelerator prepares model and optimizer (its autocast wraps the forward, DDP sums
    gradients). fsdp on several processes: the model is sharded (runtime/shard.py) and the optimizer is made over
    the shards; `sharded` is then a TrainingState for checkpoints, else None. The scheduler is checkpointed either
    way."""
    from transformers import get_cosine_schedule_with_warmup

    from rlhfkit.runtime.dist import precision
    from rlhfkit.runtime.shard import TrainingState, shard

    sharded = shards(acc, cfg.distributed)
    if sharded:
        shard(model, mixed_precision=precision(acc))
    optimizer = adamw(model, learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, round(cfg.warmup_ratio * total_steps), total_steps)
    if sharded:
        state = TrainingState([(model, optimizer)])
    else:
        model, optimizer = acc.prepare(model, optimizer)
        state = None
    acc.register_for_checkpointing(scheduler)  # stepped by us once per optimizer step, on every process
    return model, optimizer, scheduler, state


def trained_model(acc, model: torch.nn.Module, build: Callable[[], torch.nn.Module], *, sharded) -> Any:
    """The plain model to evaluate alone and save, on the main process: the unwrapped module, or under fsdp an
    unsharded copy of it that `build` makes the shell of (every process must call; None on the others)."""
    if sharded is None:
        return acc.unwrap_model(model)
    from rlhfkit.runtime.shard import unsharded_copy

    return unsharded_copy(model, build, main=acc.is_main_process)


def clip_gradients(acc, model: torch.nn.Module, max_grad_norm: float, *, sharded) -> torch.Tensor:
    """Clip the global gradient norm; returns the norm before clipping."""
    if sharded is None:
        return acc.clip_grad_norm_(model.parameters(), max_grad_norm)
    from rlhfkit.runtime.shard import clip_grad_norm

    return clip_grad_norm(model.parameters(), max_grad_norm)


def memory_report(acc, *models: torch.nn.Module) -> dict[str, list]:
    """Parameters each process holds (all models given) and each process's peak memory in GiB, for metrics.json."""
    from rlhfkit.runtime.shard import local_numel, peak_memory_gib

    mine = torch.tensor([float(sum(local_numel(m) for m in models)), peak_memory_gib()], device=acc.device)
    every = acc.gather(mine.unsqueeze(0)).cpu() if acc.num_processes > 1 else mine.unsqueeze(0).cpu()
    return {
        "parameters_per_process": [int(x) for x in every[:, 0].tolist()],
        "peak_memory_gib_per_process": [round(x, 3) for x in every[:, 1].tolist()],
    }


def optimizer_step(acc, model, optimizer, scheduler, *, max_grad_norm: float, sharded=None) -> torch.Tensor | None:
    """Clip the gradient norm (0: no clipping), step the optimizer and the schedule, clear the gradients; returns
    the norm before clipping (None without clipping), as a tensor: reading it waits for the device, so callers
    read it only when they log."""
    grad_norm = clip_gradients(acc, model, max_grad_norm, sharded=sharded) if max_grad_norm > 0 else None
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm
