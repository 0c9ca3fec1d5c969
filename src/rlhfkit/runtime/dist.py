"""Process setup through accelerate: one process, or several under torchrun (gloo on CPU, nccl on GPUs)."""

from __future__ import annotations

import os

import torch


def make_accelerator(*, device: str = "auto"):
    from accelerate import Accelerator

    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    return Accelerator(cpu=cpu)


def all_reduce_sum(accelerator, value: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over processes (a no-op in one process)."""
    if accelerator.num_processes == 1:
        return value
    return accelerator.reduce(value.to(accelerator.device), reduction="sum")


def is_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ
