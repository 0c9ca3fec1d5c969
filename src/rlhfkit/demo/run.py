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
    """The demo's gold judge: the hidden rubric, which knows each held-out question's fact. `vocabulary`: the words
    of the demo's texts, for the tiny model (a word outside them is broken text); None for a real model."""

    def __init__(self, facts_by_question: dict, *, vocabulary: frozenset[str] | None = None):
        self.facts, self.vocabulary = facts_by_question, vocabulary

    def assess(self, question: str, answer: str) -> dict[str, bool | None]:
        """fact_accuracy and wrongful_abstention_rate on questions the handbook answers; abstention_rate and
        hallucination_rate (an invented value) on those it does not; degenerate_rate and courteous on all."""
        from rlhfkit.demo.judge import assess

        a = assess(answer, self.facts[question], vocabulary=self.vocabulary)
        known = a.answerable
        return {
            "fact_accuracy": a.correct if known else None,
            "wrongful_abstention_rate": a.abstains if known else None,
            "abstention_rate": None if known else a.correct,
            "hallucination_rate": None if known else bool(a.invented),
            "degenerate_rate": a.broken is not None,
            "courteous": a.courteous,
        }

    def category(self, question: str) -> str:
        return "answerable" if self.facts[question].answerable else "unanswerable"

    KINDS = (
        "right, a full sentence",
        "right, a fragment",
        '"I don\'t know" where the handbook answers',
        "wrong, nothing specific",
        "another fact's value",
        '"I don\'t know" where the handbook does not answer',
        "no answer, nothing specific",
        "an invented value",
        "broken text",
    )

    def kind(self, question: str, answer: str) -> str:
        """Which of KINDS the answer is, by the rubric's level (and, for right answers, whether it is a sentence)."""
        from rlhfkit.demo.judge import assess

        a = assess(answer, self.facts[question], vocabulary=self.vocabulary)
        if a.level == 0:
            return self.KINDS[8]
        if a.answerable:
            by_level = {4: self.KINDS[0] if a.complete else self.KINDS[1], 3: self.KINDS[2], 2: self.KINDS[3]}
            return by_level.get(a.level, self.KINDS[4])
        return {4: self.KINDS[5], 2: self.KINDS[6]}.get(a.level, self.KINDS[7])

    def compare(self, question: str, answer_a: str, answer_b: str) -> str:
        from rlhfkit.demo.judge import judge

        return judge(answer_a, answer_b, self.facts[question], vocabulary=self.vocabulary)


def probe_pairs(split: str = "test") -> dict[str, list[dict]]:
    """Pairs on one split's questions that say what the reward model knows, each kind apart:
    swapped_fact: the right plain answer over the same sentence about another place or policy of the same kind;
    answer_vs_abstain: the right answer over "I don't know" where the handbook answers, and "I don't know" over an
    invented answer where it does not; abstain_vs_invented: those last pairs alone (a reward model that prefers an
    invented answer teaches PPO to hallucinate, and they are too few to show in answer_vs_abstain); style: the
    courteous right answer over the terse right answer."""
    import json
    import random

    from rlhfkit.demo.company import courteous, facts

    rng = random.Random(0)
    by_key = {f.key: f for f in facts()}
    rows = [json.loads(x) for x in Path(data_path(f"helpdesk_{split}.jsonl")).read_text().splitlines()]
    known = [f for f in by_key.values() if f.answerable]
    locations = {f.key for f in known if f.questions[0].startswith("Where is")}
    out: dict[str, list[dict]] = {"swapped_fact": [], "answer_vs_abstain": [], "abstain_vs_invented": [], "style": []}
    for r in rows:
        f = by_key[r["fact"]]
        if not f.answerable:
            invented = rng.choice(known).sentence
            pair = {"prompt": r["prompt"], "chosen": f.sentence, "rejected": invented}
            out["answer_vs_abstain"].append(pair)
            out["abstain_vs_invented"].append(pair)
            continue
        same_kind = [g for g in known if g.key != f.key and (g.key in locations) == (f.key in locations)]
        swapped = rng.choice(same_kind).sentence
        out["swapped_fact"].append({"prompt": r["prompt"], "chosen": f.sentence, "rejected": swapped})
        abstain = rng.choice([g for g in by_key.values() if not g.answerable]).sentence
        out["answer_vs_abstain"].append({"prompt": r["prompt"], "chosen": f.sentence, "rejected": abstain})
        out["style"].append({"prompt": r["prompt"], "chosen": courteous(f.sentence, rng), "rejected": f.terse})
    return out


def facts_by_question() -> dict:
    """{question: Fact} for every wording of every demo fact."""
    from rlhfkit.demo.company import facts

    return {q: f for f in facts() for q in f.wordings}


def demo_hooks(cfg: DemoConfig) -> Hooks:
    from rlhfkit.demo.annotators import simulate_rankings
    from rlhfkit.demo.judge import demo_vocabulary
    from rlhfkit.demo.pretrain import pretrain_tiny_base

    known = facts_by_question()
    # the tiny model's tokenizer only knows the demo's texts: a word outside them is broken text; a real model
    # writes English the demo's texts do not hold, so for it that check is off
    vocabulary = None if cfg.base_model else demo_vocabulary()

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
        rank=lambda generations: simulate_rankings(generations, known, seed=cfg.seed, vocabulary=vocabulary),
        judge=RubricJudge(known, vocabulary=vocabulary),
        probes=probe_pairs,
    )


def demo_config(out: Path, *, model: str | None, overrides: list[str]) -> DemoConfig:
    """demo/pipeline.yaml (with a model given, demo/real_model.yaml's settings over it), then the bundled data paths
    and output directory (and the model), then the user's `key=value` overrides: later wins."""
    import yaml

    from rlhfkit.config import ConfigError, build_config, merge_settings, parse_overrides

    here = Path(__file__).parent
    files = [here / "pipeline.yaml", *([here / "real_model.yaml"] if model else [])]
    fixed = {
        "output_dir": str(out),
        "train_file": data_path("helpdesk_train.jsonl"),
        "validation_file": data_path("helpdesk_validation.jsonl"),
        "heldout_file": data_path("helpdesk_test.jsonl"),
    }
    if model:
        fixed["base_model"] = model
    values: dict = {}
    for f in files:
        values = merge_settings(values, yaml.safe_load(f.read_text(encoding="utf-8")))
    try:
        return build_config(DemoConfig, merge_settings({**values, **fixed}, parse_overrides(overrides)))
    except ConfigError as e:
        raise ConfigError(f"{' + '.join(str(f) for f in files)}: {e}") from None


def run_demo(out: Path, *, model: str | None = None, overrides: list[str] | None = None) -> dict:
    from rlhfkit.pipeline import run_pipeline

    console = Console()
    cfg = demo_config(out, model=model, overrides=overrides or [])
    console.print(
        "[bold]rlhfkit demo[/]: the Lumen & Pike help desk. Rankings come from [bold]simulated "
        "annotators[/] (not people) that follow a hidden rubric with noise and disagreement."
    )
    summary = run_pipeline(cfg, hooks=demo_hooks(cfg), log=console.print)
    if not summary:  # test_report=false: nothing was evaluated on the test questions
        return summary
    methods = summary.get("methods", ["ppo"])
    table = Table(title=f"Test questions ({summary.get('test_questions')}: never trained or tuned on)")
    table.add_column("measure")
    for name in ("sft", *methods):
        table.add_column(name.upper() if name in ("sft", "ppo", "grpo", "rloo", "dpo") else name, justify="right")

    def cell(key: str) -> str:
        v = summary.get(key)
        return "" if v is None else f"{v:.3f}"

    for label, key in (
        ("win rate vs SFT (gold judge)", "win_rate_{}_vs_sft"),
        ("fact accuracy (answerable)", "fact_accuracy_{}"),
        ("abstention (unanswerable)", "abstention_rate_{}"),
        ("hallucination (unanswerable)", "hallucination_rate_{}"),
        ("wrongful abstention (answerable)", "wrongful_abstention_rate_{}"),
        ("broken text", "degenerate_rate_{}"),
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
