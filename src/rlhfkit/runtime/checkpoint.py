"""Resumable checkpoints in output_dir/checkpoints/step-N: model, optimizer, scheduler and RNG states (accelerate's
save_state) plus state.json. A checkpoint is written under a temp name and renamed when complete."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

_STEP = re.compile(r"^step-(\d+)$")


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    root = checkpoint_dir(output_dir)
    if not root.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP.match(p.name)) and (p / "state.json").exists()]
    return max(found)[1] if found else None


def save_checkpoint(
    accelerator, output_dir: str | Path, step: int, state: dict[str, Any], *, keep: int, sharded=None
) -> Path:
    """`sharded`: the TrainingState of models trained under fsdp, written as a distributed checkpoint (each process
    its own shards) beside accelerate's state (schedulers, RNG states)."""
    root = checkpoint_dir(output_dir)
    final, tmp = root / f"step-{step}", root / f".step-{step}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if sharded is not None:
        sharded.save(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "state.json").write_text(json.dumps({"step": step, **state}))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        steps = sorted((int(m.group(1)), p) for p in root.iterdir() if (m := _STEP.match(p.name)))
        for _, old in steps[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: Path, *, sharded=None) -> dict[str, Any]:
    accelerator.load_state(str(path))
    if sharded is not None:
        sharded.load(path)
    return json.loads((path / "state.json").read_text())


def resume_state(accelerator, output_dir: str | Path, *, resume: bool, total: int, unit: str, sharded=None):
    """(step to start from, the checkpoint's state.json or None): the newest checkpoint's models, optimizers,
    schedulers and RNG states are loaded into the prepared objects when `resume` is set and one exists."""
    checkpoint = latest_checkpoint(output_dir) if resume else None
    if checkpoint is None:
        if resume:
            accelerator.print(f"resume=true but {output_dir}/checkpoints holds no checkpoint; starting from {unit} 0")
        return 0, None
    state = load_checkpoint(accelerator, checkpoint, sharded=sharded)
    accelerator.print(f"resuming from {checkpoint} ({unit} {state['step']} of {total})")
    return state["step"], state
