"""SFT throughput: rlhfkit beside TRL's SFTTrainer on the same tiny Llama, data, batch and steps (CPU, fp32).

usage: python bench/sft.py [--steps 30] [--batch 16] [--hidden 256] [--layers 7]
Prints tokens/s (real tokens: padding not counted), achieved GFLOP/s and the share of a measured fp32 matmul peak.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from common import matmul_peak_gflops, param_counts, synthetic_qa, train_flops_per_token, write_jsonl  # noqa: E402

from rlhfkit.models.tiny import build_tiny_causal_lm  # noqa: E402


def real_tokens(tokenizer, rows: list[dict], steps: int, batch: int) -> tuple[int, float]:
    """Tokens (prompt + completion + EOS) the training loop processes, and the mean sequence length."""
    lengths = [len(tokenizer(r["prompt"] + r["completion"]).input_ids) + 1 for r in rows]
    per_epoch = len(rows) // batch * batch
    mean = sum(lengths[:per_epoch]) / per_epoch
    return round(mean * steps * batch), mean


def run_rlhfkit(model_dir: Path, data: Path, out: Path, *, steps: int, batch: int, packing: bool) -> float:
    from rlhfkit.algorithms.sft import train
    from rlhfkit.config import SFTConfig

    cfg = SFTConfig(
        model=str(model_dir),
        train_file=str(data),
        output_dir=str(out),
        max_steps=steps,
        batch_size=batch,
        learning_rate=1e-3,
        logging_steps=steps,
        gold_metrics=False,
        prompt_template="raw",
        max_length=512,
        device="cpu",
        packing=packing,
    )
    return train(cfg)["train_seconds"]


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=7)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--skip-trl", action="store_true")
    a = p.parse_args()

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
    peak = matmul_peak_gflops()

    results = {}
    for packing in (False, True):
        results[f"rlhfkit packing={packing}"] = run_rlhfkit(
            model_dir, data, work / f"ours-{packing}", steps=a.steps, batch=a.batch, packing=packing
        )
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
