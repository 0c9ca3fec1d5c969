"""FSDP2 sharding (`distributed=fsdp`): every process holds 1/N of each weight, gradient and optimizer state.

We call PyTorch's `fully_shard` directly rather than through accelerate's FSDP plugin: the plugin is configured by
environment variables or a launcher config file, while here one setting decides, the wrap unit (each decoder layer
of `_no_split_modules`, then the root for embeddings, final norm and head) is explicit, and the same call can
shard a frozen model that accelerate never prepares (PPO's reference and reward model).

Numerics (as in `runtime/dist.py`): the sharded parameters are fp32 master weights; with `mixed_precision=bf16` the
FSDP mixed-precision policy gathers them as bf16 for each layer's forward and backward and reduces gradients in
fp32, so AdamW steps fp32 shards. A process group must exist (torchrun starts one; accelerate initialises it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

SHARDED_DIR = "sharded"  # inside a checkpoint directory: the distributed checkpoint of models and optimizers


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated transformer blocks of a Hugging Face model (its `_no_split_modules` classes), inside peft or
    our scorer wrappers too."""
    names: set[str] = set()
    for m in model.modules():
        names.update(getattr(m, "_no_split_modules", None) or ())
    return [m for m in model.modules() if type(m).__name__ in names]


def shard(model: nn.Module, *, mixed_precision: str = "fp32", frozen: bool = False) -> nn.Module:
    """Shard `model` in place over all processes: each decoder layer is one unit (gathered for its own forward and
    backward, freed after), the root holds the rest. A trained root stays gathered from its forward to its backward
    (needed again at once); a `frozen` one has no backward to free it after, so it is freed after its forward."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    layers = decoder_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__}: no decoder layers found (_no_split_modules) to shard")
    low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)
    policy = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32 if low else None)
    for layer in layers:
        fully_shard(layer, mp_policy=policy)
    fully_shard(model, mp_policy=policy, reshard_after_forward=frozen)
    return model


def shard_if_layered(model: nn.Module, *, mixed_precision: str = "fp32") -> bool:
    """Shard a frozen model that has decoder layers (PPO's reference, its reward model); one without them (an encoder
    whose classes name no `_no_split_modules`) stays whole on every process. Whether it was sharded."""
    if not decoder_layers(model):
        return False
    shard(model, mixed_precision=mixed_precision, frozen=True)
    return True


@contextmanager
def unsharded(model: nn.Module) -> Iterator[nn.Module]:
    """Every weight of a sharded model gathered in full (in the mixed-precision policy's dtype) for a decoding loop,
    and sharded again after: each process holds the whole model only while inside. The loop may run a different
    number of steps on each process, so it must call no forward of a sharded unit (whose hooks are collective): the
    project's fast decoder reads the weights directly. Every process must enter (the gather is collective)."""
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for unit in units:
        unit.unshard()
    try:
        yield model
    finally:
        for unit in units:
            unit.reshard()


def local_numel(model: nn.Module) -> int:
    """Parameter elements this process holds (its shards; everything when not sharded)."""
    from torch.distributed.tensor import DTensor

    return sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in model.parameters())


def clip_grad_norm(parameters: Iterable[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Clip the global gradient norm of sharded parameters (norms of the local shards summed over processes by
    DTensor); the same formula as torch.nn.utils.clip_grad_norm_, whose norm it returns."""
    from torch.distributed.tensor import DTensor

    params = [p for p in parameters if p.grad is not None]
    total = torch.nn.utils.get_total_norm([p.grad for p in params], norm_type=2.0)
    if isinstance(total, DTensor):
        total = total.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's state dict on the main process (CPU tensors), empty elsewhere; every process must call."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def unsharded_copy(model: nn.Module, build: Callable[[], nn.Module], *, main: bool) -> nn.Module | None:
    """A plain (unsharded) copy of a sharded model on the main process, built by `build` and loaded with the gathered
    weights; None elsewhere. Every process must call it (the gather is collective)."""
    state = full_state_dict(model)
    if not main:
        return None
    copy = build()
    copy.load_state_dict(state)
    return copy


class TrainingState:
    """Sharded models and their optimizers as one distributed-checkpoint entry (each process writes its shards)."""

    def __init__(self, pairs: list[tuple[nn.Module, torch.optim.Optimizer]]):
        self.pairs = pairs

    def state_dict(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        out: dict[str, Any] = {}
        for i, (model, optimizer) in enumerate(self.pairs):
            out[f"model{i}"], out[f"optimizer{i}"] = get_state_dict(model, optimizer)
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import set_state_dict

        for i, (model, optimizer) in enumerate(self.pairs):
            set_state_dict(
                model, optimizer, model_state_dict=state[f"model{i}"], optim_state_dict=state[f"optimizer{i}"]
            )

    def save(self, checkpoint: Path) -> None:
        import torch.distributed.checkpoint as dcp

        dcp.save({"training": self}, checkpoint_id=str(checkpoint / SHARDED_DIR))

    def load(self, checkpoint: Path) -> None:
        import torch.distributed.checkpoint as dcp

        if not (checkpoint / SHARDED_DIR).is_dir():
            raise FileNotFoundError(
                f"{checkpoint} holds no {SHARDED_DIR}/ (it was not written with distributed=fsdp); resume it with the "
                "distributed setting it was written with"
            )
        dcp.load({"training": self}, checkpoint_id=str(checkpoint / SHARDED_DIR))


def even_batches(n: int, *, world: int, batch_size: int) -> int:
    """Forward passes each process makes over its 1/world of n items in batches: the same count on every process,
    which sharded models need (each forward is a collective)."""
    return math.ceil(math.ceil(n / world) / batch_size)


def peak_memory_gib() -> float:
    """This process's peak memory: the accelerator's peak allocation on a GPU, else the peak resident set."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
