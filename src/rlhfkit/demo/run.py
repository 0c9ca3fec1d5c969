"""`rlhf demo`: fine-tune a model on the bundled help-desk gold answers and show what changed.

Offline by default: the base model is a tiny Llama with a tokenizer trained on the bundled text (cached in
OUT/base). `--model` uses any Hugging Face model instead.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rlhfkit.demo import data_path

TRAIN, HELD_OUT = "helpdesk_train.jsonl", "helpdesk_heldout.jsonl"


def _texts() -> list[str]:
    rows = []
    for name in (TRAIN, HELD_OUT):
        for line in Path(data_path(name)).read_text().splitlines():
            r = json.loads(line)
            rows += [r["prompt"], r["completion"]]
    return rows


def build_base(out: Path) -> Path:
    """The tiny base model: built once, then reused from OUT/base."""
    from rlhfkit.models.tiny import build_tiny_causal_lm

    base = out / "base"
    if not (base / "config.json").exists():
        build_tiny_causal_lm(base, _texts() * 4, vocab_size=600, hidden=128, layers=2, seed=0)
    return base


def run_demo(out: Path, *, model: str | None = None, steps: int = 0) -> dict:
    from rlhfkit.algorithms.sft import train
    from rlhfkit.config import SFTConfig
    from rlhfkit.data.io import read_records
    from rlhfkit.eval.gold import gold_metrics
    from rlhfkit.models.generate import generate_answers
    from rlhfkit.models.load import load_causal_lm, load_tokenizer

    console = Console()
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    base = model or str(build_base(out))
    train_records = read_records(data_path(TRAIN)).records
    held_out = read_records(data_path(HELD_OUT)).records
    shown = train_records[:3] + held_out[:3]

    def answers(model_dir: str, records) -> list[str]:
        tok, lm = load_tokenizer(model_dir, padding_side="left"), load_causal_lm(model_dir)
        return [
            a[0] for a in generate_answers(lm, tok, [r.prompt for r in records], max_new_tokens=40, temperature=0.0)
        ]

    before = answers(base, shown)
    console.print(f"[bold]SFT[/] of {base} on {len(train_records)} gold answers ...")
    cfg = SFTConfig(
        model=base,
        train_file=data_path(TRAIN),
        eval_file=data_path(HELD_OUT),
        output_dir=str(out / "sft"),
        max_steps=steps or (300 if model is None else 100),
        learning_rate=3e-3 if model is None else 2e-5,
        batch_size=8,
        logging_steps=25,
        warmup_ratio=0.05,
    )
    summary = train(cfg)
    after = answers(cfg.output_dir, shown)
    train_metrics = gold_metrics(answers(cfg.output_dir, train_records), [r.completion for r in train_records])

    table = Table(title="Answers before and after SFT", show_lines=True)
    for col in ("question", "gold answer", "before (base)", "after (SFT)"):
        table.add_column(col, overflow="fold")
    for r, b, a in zip(shown, before, after):
        split = "" if r in train_records else " [dim](held out)[/]"
        table.add_row(str(r.prompt) + split, r.completion, b, a)
    console.print(table)
    result = {
        "train_exact_match": train_metrics["exact_match"],
        "train_token_f1": train_metrics["token_f1"],
        "heldout_exact_match": summary.get("eval_exact_match"),
        "heldout_token_f1": summary.get("eval_token_f1"),
        "heldout_rouge_l": summary.get("eval_rouge_l"),
        "eval_loss": summary.get("eval_loss"),
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    console.print({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()})
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"model: {cfg.output_dir}   summary: {out / 'summary.json'}")
    return result
