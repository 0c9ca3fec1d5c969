"""`rlhf demo`: build the Lumen & Pike help-desk chatbot through the whole loop, offline on a CPU.

It is `rlhf pipeline run` on demo/pipeline.yaml with the bundled data and what only the demo knows, passed to the
pipeline as hooks: a tiny Llama pretrained on the handbook as the base model, simulated annotators that rank the
samples (standing in for people; clearly labelled), and the hidden-rubric judge for the held-out evaluation.
`--model` starts from any Hugging Face model instead of the tiny one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rlhfkit.demo import data_path
from rlhfkit.pipeline import Hooks, PipelineConfig


@dataclass
class DemoConfig(PipelineConfig):
    """The pipeline's settings plus the demo's own (the tiny base model it pretrains when no model is given)."""

    pretrain_steps: int = 600
    """Optimizer steps of tiny-model pretraining on the handbook."""
    tiny_hidden: int = 128
    """Hidden size of the tiny base model."""
    tiny_layers: int = 4
    """Layers of the tiny base model."""
    tiny_vocab: int = 1024
    """BPE vocabulary of the tiny base model's tokenizer."""


class RubricJudge:
    """The demo's gold judge: the hidden rubric, which knows each held-out question's fact."""

    def __init__(self, facts_by_question: dict):
        self.facts = facts_by_question

    def assess(self, question: str, answer: str) -> dict[str, bool]:
        from rlhfkit.demo.judge import assess

        a = assess(answer, self.facts[question])
        return {"fact_accuracy": a.correct, "courteous": a.courteous}

    def compare(self, question: str, answer_a: str, answer_b: str) -> str:
        from rlhfkit.demo.judge import judge

        return judge(answer_a, answer_b, self.facts[question])


def facts_by_question() -> dict:
    """{question: Fact} for every wording of every demo fact."""
    from rlhfkit.demo.company import facts

    return {q: f for f in facts() for q in f.questions}


def demo_hooks(cfg: DemoConfig) -> Hooks:
    from rlhfkit.demo.annotators import simulate_rankings
    from rlhfkit.demo.pretrain import pretrain_tiny_base

    known = facts_by_question()

    def build_base(out: Path) -> None:
        pretrain_tiny_base(
            out,
            Path(data_path("handbook.md")).read_text(encoding="utf-8"),
            hidden=cfg.tiny_hidden,
            layers=cfg.tiny_layers,
            vocab_size=cfg.tiny_vocab,
            steps=cfg.pretrain_steps,
            seed=cfg.seed,
        )

    return Hooks(
        build_base=build_base,
        rank=lambda generations: simulate_rankings(generations, known, seed=cfg.seed),
        judge=RubricJudge(known),
    )


def demo_config(out: Path, *, model: str | None, overrides: list[str]) -> DemoConfig:
    """demo/pipeline.yaml, then the bundled data paths and output directory (and the model, if given), then the
    user's `key=value` overrides: later wins."""
    import yaml

    from rlhfkit.config import ConfigError, build_config, merge_settings, parse_overrides

    path = Path(__file__).with_name("pipeline.yaml")
    fixed = {
        "output_dir": str(out),
        "train_file": data_path("helpdesk_train.jsonl"),
        "heldout_file": data_path("helpdesk_heldout.jsonl"),
    }
    if model:
        fixed["base_model"] = model
    values = {**yaml.safe_load(path.read_text(encoding="utf-8")), **fixed}
    try:
        return build_config(DemoConfig, merge_settings(values, parse_overrides(overrides)))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def run_demo(out: Path, *, model: str | None = None, overrides: list[str] | None = None) -> dict:
    from rlhfkit.pipeline import run_pipeline

    console = Console()
    cfg = demo_config(out, model=model, overrides=overrides or [])
    console.print(
        "[bold]rlhfkit demo[/]: the Lumen & Pike help desk. Rankings come from [bold]simulated "
        "annotators[/] (not people) that follow a hidden rubric with noise and disagreement."
    )
    summary = run_pipeline(cfg, hooks=demo_hooks(cfg), log=console.print)
    methods = summary.get("methods", ["ppo"])
    table = Table(title="Held-out questions (never trained on)")
    table.add_column("measure")
    for name in ("sft", *methods):
        table.add_column(name.upper() if name in ("sft", "ppo", "grpo", "rloo", "dpo") else name, justify="right")

    def cell(key: str) -> str:
        v = summary.get(key)
        return "" if v is None else f"{v:.3f}"

    for label, key in (
        ("win rate vs SFT (gold judge)", "win_rate_{}_vs_sft"),
        ("fact accuracy", "fact_accuracy_{}"),
        ("courteous answers", "courteous_{}"),
        ("token F1 vs gold", "token_f1_{}"),
        ("reward-model score", "rm_score_{}"),
        ("KL to SFT (nats)", "kl_to_sft_{}"),
        ("seconds", "seconds_{}"),
    ):
        if any(key.format(m) in summary for m in methods):
            table.add_row(label, *(cell(key.format(m)) for m in ("sft", *methods)))
    console.print(table)
    console.print(
        f"reward-model accuracy: {summary.get('rm_eval_accuracy', float('nan')):.3f}"
        f"   {summary.get('wall_seconds', 0):.0f}s in all"
    )
    console.print(
        f"report: {out / 'report.html'}   summary: {out / 'summary.json'}   answers: {out / 'eval_samples.jsonl'}"
    )
    return summary
