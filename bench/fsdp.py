"""Memory and step time of `distributed=ddp` vs `distributed=fsdp`: `rlhf sft` on SmolLM2-135M-Instruct, full
fine-tuning in fp32, two processes under torchrun (gloo, one thread each), the same data, batch and steps.

usage: python bench/fsdp.py [--steps 6] [--batch 8]
Training state per process = what each process holds of the parameters, gradients and AdamW's two moments: 4 fp32
tensors the size of its parameters (its shards under fsdp), from the shard sizes the run reports. Peak memory is
each process's peak resident set (CPU), as the run reports it. Seconds per step: training time over steps.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import smollm2_dir  # noqa: E402

DATA = Path(__file__).parents[1] / "examples" / "helpdesk" / "sft_train.jsonl"


def run(distributed: str, out: Path, *, steps: int, batch: int, port: int) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]
    cmd += ["-m", "rlhfkit.cli", "sft", f"model={smollm2_dir()}", f"train_file={DATA}", f"output_dir={out}"]
    cmd += [f"max_steps={steps}", f"batch_size={batch}", f"logging_steps={steps}", "learning_rate=1e-4"]
    cmd += ["gold_metrics=false", "device=cpu", "mixed_precision=fp32", f"distributed={distributed}"]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{distributed} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads((out / "metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-fsdp-"))
    results = {
        d: run(d, work / d, steps=args.steps, batch=args.batch, port=29650 + i) for i, d in enumerate(("ddp", "fsdp"))
    }
    print(
        f"\nrlhf sft, SmolLM2-135M-Instruct, full fine-tuning, fp32, 2 processes x 1 thread, batch {args.batch}, "
        f"{args.steps} steps"
    )
    print(
        f"{'distributed':<12}{'params held':>24}{'training state GiB':>22}{'peak RSS GiB':>18}{'s/step':>9}{'loss':>9}"
    )
    state = {}
    for name, m in results.items():
        held = m["parameters_per_process"]
        state[name] = [4 * 4 * n / 2**30 for n in held]
        print(
            f"{name:<12}{' / '.join(f'{n / 1e6:.1f}M' for n in held):>24}"
            f"{' / '.join(f'{g:.2f}' for g in state[name]):>22}"
            f"{' / '.join(f'{g:.2f}' for g in m['peak_memory_gib_per_process']):>18}"
            f"{m['train_seconds'] / m['steps']:>9.2f}{m['train_loss']:>9.4f}"
        )
    share = max(state["fsdp"]) / max(state["ddp"])
    peak = max(results["fsdp"]["peak_memory_gib_per_process"]) / max(results["ddp"]["peak_memory_gib_per_process"])
    print(f"fsdp training state per process: {share:.0%} of ddp's (target <= 55%); peak RSS {peak:.0%} of ddp's")


if __name__ == "__main__":
    main()
