"""Process setup through accelerate: one process, or several under torchrun (gloo on CPU, nccl on GPUs), and the
compute precision.

Numerics: weights that train are fp32 master weights; bf16/fp16 is only the compute type, applied by autocast
(accelerate's `mixed_precision` wraps each prepared model's forward in it). AdamW stepping bf16 weights loses most
small updates to rounding (at lr 1e-5 and weights ~N(0, 0.02), 85% of the weights never change).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch


def resolve_mixed_precision(mixed_precision: str, device: torch.device) -> str:
    """ "auto": bf16 on a CUDA GPU that supports it, else fp32; other values as given."""
    if mixed_precision != "auto":
        return mixed_precision
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def precision(accelerator) -> str:
    """The accelerator's compute precision in our names: fp32, bf16 or fp16."""
    return "fp32" if accelerator.mixed_precision == "no" else accelerator.mixed_precision


def compute_dtype(mixed_precision: str) -> torch.dtype:
    """The dtype autocast computes in (fp32 when there is no mixed precision)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision, torch.float32)


def make_accelerator(*, device: str = "auto", mixed_precision: str = "fp32"):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    target = torch.device("cpu") if cpu else torch.device("cuda" if device == "auto" else device)
    # accelerate keeps its settings in process-wide singletons and refuses a second Accelerator with another
    # mixed_precision; one process runs several trainings (the pipeline: SFT, reward model, PPO), so each starts
    # from fresh settings. The process group (PartialState) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    resolved = resolve_mixed_precision(mixed_precision, target)
    return Accelerator(cpu=cpu, mixed_precision="no" if resolved == "fp32" else resolved)


def autocast(accelerator):
    """The accelerator's autocast for forward passes run outside a prepared model (reference, reward model,
    sampler); a no-op in fp32."""
    return accelerator.autocast() if accelerator.mixed_precision != "no" else nullcontext()


def all_reduce_sum(accelerator, value: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over processes (a no-op in one process)."""
    if accelerator.num_processes == 1:
        return value
    return accelerator.reduce(value.to(accelerator.device), reduction="sum")
