"""`rlhf demo`: build the Lumen & Pike help-desk chatbot through the whole loop, offline on a CPU.

It is `rlhf pipeline run` on demo/pipeline.yaml with the bundled data: a tiny Llama pretrained on the handbook,
SFT on the experts' gold answers, K sampled answers per question ranked by simulated annotators (standing in for
people; clearly labelled), a reward model on those rankings, PPO against it, and a held-out evaluation by the
hidden-rubric judge. `--model` starts from any Hugging Face model instead of the tiny one.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from rlhfkit.demo import data_path


def demo_config(out: Path, *, model: str | None, overrides: list[str]):
    from rlhfkit.config import load_config
    from rlhfkit.pipeline import PipelineConfig

    fixed = [
        f"output_dir={out}",
        f"train_file={data_path('helpdesk_train.jsonl')}",
        f"heldout_file={data_path('helpdesk_heldout.jsonl')}",
        f"pretrain_text={data_path('handbook.md')}",
    ]
    if model:
        fixed.append(f"base_model={model}")
    return load_config(PipelineConfig, str(Path(__file__).with_name("pipeline.yaml")), [*fixed, *overrides])


def run_demo(out: Path, *, model: str | None = None, overrides: list[str] | None = None) -> dict:
    from rlhfkit.pipeline import run_pipeline

    console = Console()
    cfg = demo_config(out, model=model, overrides=overrides or [])
    console.print(
        "[bold]rlhfkit demo[/]: the Lumen & Pike help desk. Rankings come from [bold]simulated "
        "annotators[/] (not people) that follow a hidden rubric with noise and disagreement."
    )
    summary = run_pipeline(cfg, log=console.print)
    table = Table(title="Held-out questions (never trained on)")
    table.add_column("measure")
    table.add_column("SFT", justify="right")
    table.add_column("PPO", justify="right")
    for label, key in (
        ("fact accuracy", "fact_accuracy"),
        ("courteous answers", "courteous"),
        ("token F1 vs gold", "token_f1"),
        ("reward-model score", "rm_score"),
    ):
        if f"{key}_sft" in summary:
            table.add_row(label, f"{summary[f'{key}_sft']:.3f}", f"{summary[f'{key}_ppo']:.3f}")
    console.print(table)
    console.print(
        f"gold judge win rate, PPO vs SFT: [bold]{summary.get('win_rate_ppo_vs_sft', float('nan')):.3f}[/]"
        f"   reward-model accuracy: {summary.get('rm_eval_accuracy', float('nan')):.3f}"
        f"   final KL: {summary.get('ppo_kl_last_tenth', float('nan')):.2f}"
        f"   {summary.get('wall_seconds', 0):.0f}s"
    )
    console.print(
        f"report: {out / 'report.html'}   summary: {out / 'summary.json'}   answers: {out / 'eval_samples.jsonl'}"
    )
    return summary
