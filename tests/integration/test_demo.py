"""A reduced demo end to end (tiny sizes): every stage runs and writes what the report and users rely on."""

from __future__ import annotations

import html
import json

import pytest
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.data.io import read_records

runner = CliRunner()
SMALL = [
    "pretrain_steps=40",
    "tiny_hidden=32",
    "tiny_layers=1",
    "tiny_vocab=400",
    "num_samples=3",
    "max_new_tokens=16",
    "eval_every=2",
    "sft.max_steps=30",
    "reward.max_steps=10",
    "ppo.total_episodes=96",
    "grpo.total_episodes=96",
    "rloo.total_episodes=96",
    "ppo.batch_size=16",
    "ppo.minibatch_size=16",
    "ppo.ppo_epochs=1",
    "dpo.max_steps=10",
    "best_of_n=3",
]
METHODS = ["ppo", "grpo", "rloo", "dpo", "best_of_n"]  # the demo's pipeline.yaml runs them all


@pytest.mark.slow
def test_reduced_demo_writes_every_output(tmp_path):
    """Two rounds (the demo's pipeline.yaml), every method, the test split reported, each number recomputed."""
    out = tmp_path / "demo"
    res = runner.invoke(app, ["demo", "--out", str(out), *SMALL])
    assert res.exit_code == 0, res.output + repr(res.exception)
    summary = json.loads((out / "summary.json").read_text())
    keys = ("win_rate_ppo_vs_sft", "fact_accuracy_sft", "fact_accuracy_ppo", "rm_eval_accuracy", "wall_seconds")
    keys += ("abstention_rate_sft", "abstention_rate_ppo", "hallucination_rate_sft", "hallucination_rate_ppo")
    for key in (
        *keys,
        "rm_swapped_fact_accuracy",
        "rm_answer_vs_abstain_accuracy",
        "rm_abstain_vs_invented_accuracy",
        "rm_style_accuracy",
    ):
        assert isinstance(summary[key], float), key
    assert 0.0 <= summary["win_rate_ppo_vs_sft"] <= 1.0 and summary["wall_seconds"] > 0
    samples = [json.loads(x) for x in (out / "eval_samples.jsonl").read_text().splitlines()]
    assert len(samples) == summary["test_questions"] == 68 and summary["validation_questions"] == 68
    assert set(samples[0]) >= {"question", "gold_answer", "sft_answer", "ppo_answer", "judge", "category"}
    assert {r["category"] for r in samples} == {"answerable", "unanswerable"}
    # the summary's numbers are those of the answers it wrote: recomputed here with the demo's own judge
    from rlhfkit.demo.judge import assess, demo_vocabulary
    from rlhfkit.demo.run import facts_by_question

    facts = facts_by_question()
    verdicts = [r["judge"] for r in samples]
    assert summary["win_rate_ppo_vs_sft"] == pytest.approx((verdicts.count("a") + 0.5 * verdicts.count("tie")) / 68)
    answerable = [r for r in samples if r["category"] == "answerable"]
    unanswerable = [r for r in samples if r["category"] == "unanswerable"]
    for model in ("sft", "ppo"):
        judged = {
            id(r): assess(r[f"{model}_answer"], facts[r["question"]], vocabulary=demo_vocabulary()) for r in samples
        }
        correct = [judged[id(r)].correct for r in answerable]
        assert summary[f"fact_accuracy_{model}"] == pytest.approx(sum(correct) / len(answerable))
        abstained = [judged[id(r)].correct for r in unanswerable]
        assert summary[f"abstention_rate_{model}"] == pytest.approx(sum(abstained) / len(unanswerable))
        invented = [bool(judged[id(r)].invented) for r in unanswerable]
        assert summary[f"hallucination_rate_{model}"] == pytest.approx(sum(invented) / len(unanswerable))
    # what the reward model pays for each kind of answer: the answers' own scores, grouped by the rubric's kinds
    from rlhfkit.demo.run import RubricJudge

    rubric = RubricJudge(facts, vocabulary=demo_vocabulary())
    by_kind = summary["rm_score_by_kind"]
    assert list(by_kind) == [k for k in RubricJudge.KINDS if k in by_kind]
    for model in ("sft", *METHODS):
        groups: dict[str, list[float]] = {}
        for r in samples:
            groups.setdefault(rubric.kind(r["question"], r[f"{model}_answer"]), []).append(r[f"{model}_rm_score"])
        mine = {k: by[model] for k, by in by_kind.items() if model in by}
        assert set(mine) == set(groups) and sum(v["count"] for v in mine.values()) == 68, model
        for k, xs in groups.items():
            assert mine[k]["count"] == len(xs) and mine[k]["mean"] == pytest.approx(sum(xs) / len(xs), abs=1e-5)
    # two rounds: the top-level numbers are the last round's, and each round's answers are in the samples
    rounds = summary["rounds"]
    assert [r["round"] for r in rounds] == [1, 2] and (out / "round2" / "ppo" / "model.safetensors").exists()
    for key in ("win_rate_ppo_vs_sft", "fact_accuracy_ppo", "abstention_rate_ppo", "hallucination_rate_ppo"):
        assert rounds[-1][key] == summary[key], key
    assert rounds[-1]["win_rate_ci"] == summary["win_rate_ci"] and all(
        r["round2_ppo_answer"] == r["ppo_answer"] for r in samples
    )
    import yaml

    ppo2 = yaml.safe_load((out / "round2" / "ppo" / "config.yaml").read_text())
    assert ppo2["policy"] == str(out / "ppo") and ppo2["reference"] == str(out / "sft")
    assert ppo2["reward_model"] == str(out / "round2" / "rm")
    first_round = len((out / "rankings_train.jsonl").read_text().splitlines())
    assert len((out / "round2" / "rankings_train.jsonl").read_text().splitlines()) > first_round
    # the last round's reward model (trained on both rounds' rankings)
    assert (
        summary["rm_eval_accuracy"] == json.loads((out / "round2" / "rm" / "metrics.json").read_text())["eval_accuracy"]
    )
    # and the stages ran for real: SFT's loss fell (the sizes are tiny; learning is tested in test_sft), the
    # reward model is above chance on held-out rankings
    sft_rows = [json.loads(x) for x in (out / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert sft_rows[-1]["loss"] < sft_rows[0]["loss"]
    assert summary["rm_eval_accuracy"] > 0.5
    rankings = read_records(out / "rankings.jsonl")
    assert rankings.format == "rankings" and all(r.annotator.startswith("sim-annotator") for r in rankings.records)
    ppo_rows = [json.loads(x) for x in (out / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in ppo_rows if "heldout_win_rate_vs_sft" in r] == [1, 2, 4, 6]
    # every method ran from the same SFT model and reward model and is in the side-by-side table
    assert summary["methods"] == METHODS
    for m in METHODS:
        assert 0.0 <= summary[f"win_rate_{m}_vs_sft"] <= 1.0, m
        low, high = summary[f"win_rate_{m}_vs_sft_ci95"]
        assert low <= summary[f"win_rate_{m}_vs_sft"] <= high, m
        assert isinstance(summary[f"kl_to_sft_{m}"], float) and summary[f"seconds_{m}"] > 0, m
        verdicts = [r[f"judge_{m}"] for r in samples]
        assert summary[f"win_rate_{m}_vs_sft"] == pytest.approx(
            (verdicts.count("a") + 0.5 * verdicts.count("tie")) / 68
        )
    assert summary["kl_to_sft_best_of_n"] == pytest.approx(1.0986 - 2 / 3, abs=1e-3)  # log 3 - 2/3
    assert not (out / "grpo" / "metrics.jsonl").read_text().count("value_explained_variance")  # no critic
    assert json.loads((out / "dpo" / "metrics.json").read_text())["steps"] == 10
    report = (out / "report.html").read_text()
    assert report.count("data:image/png;base64,") == 4 and "Held-out answers" in report
    assert "Five test questions where the handbook does not" in report and "PPO round 2" in report
    assert "Methods on held-out questions" in report and all(f"<td>{m}</td>" in report for m in METHODS)
    assert "What the reward model knows" in report and "<td>abstain vs invented</td>" in report
    assert "What the reward model pays for each kind of answer" in report
    assert all(f"<tr><td>{html.escape(k)}</td>" in report for k in summary["rm_score_by_kind"])
    said = " ".join(res.output.split())  # Rich wraps lines at the terminal width
    assert "simulated annotators" in said
    # a rerun skips every finished stage
    res = runner.invoke(app, ["demo", "--out", str(out), *SMALL])
    assert res.exit_code == 0 and " ".join(res.output.split()).count("done earlier, skipped") == 7 + 4 + 4


def test_report_escapes_model_text(tmp_path):
    from rlhfkit.eval.report import write_report

    (tmp_path / "summary.json").write_text(json.dumps({"win_rate_ppo_vs_sft": 0.5}))
    evil = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    (tmp_path / "eval_samples.jsonl").write_text(
        json.dumps({"question": "q", "gold_answer": "g", "sft_answer": evil, "ppo_answer": evil, "judge": "tie"}) + "\n"
    )
    (tmp_path / "summary.json").write_text(
        json.dumps(
            {
                "win_rate_ppo_vs_sft": 0.5,
                "methods": ["ppo"],
                "fact_accuracy_sft": 0.5,
                "fact_accuracy_ppo": evil,
                "rm_abstain_vs_invented_accuracy": 0.25,
                "rm_abstain_vs_invented_pairs": 16,
                "rm_score_by_kind": {
                    evil: {"ppo": {"mean": 1.5, "count": 3}},
                    "right": {"sft": {"mean": -2, "count": 1}},
                },
            }
        )
    )
    html = write_report(tmp_path).read_text()
    assert "<td>abstain vs invented</td>" in html and "<td>0.250</td><td>16</td>" in html
    assert "<th>SFT</th><th>PPO</th></tr>" in html and "<td>right</td><td>-2.00 (1)</td><td></td></tr>" in html
    assert (
        "alert(1)&lt;/script&gt;&lt;img src=x onerror=&quot;alert(2)&quot;&gt;</td><td></td><td>1.50 (3)</td>" in html
    )
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "onerror=&quot;alert(2)&quot;" in html


def test_pipeline_checks_its_settings_before_running(tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"prompt": "q", "completion": "a"}) + "\n")
    cfg = tmp_path / "p.yaml"
    cfg.write_text(
        f"train_file: {qa}\nheldout_file: {qa}\nbase_model: {tmp_path / 'no-model'}\noutput_dir: {tmp_path / 'out'}\n"
    )
    res = runner.invoke(app, ["pipeline", "run", str(cfg)])
    assert res.exit_code == 2 and "rankings_file" in res.output
    res = runner.invoke(app, ["pipeline", "run", str(cfg), "ppo.bogus=1", "rankings_file=r.jsonl"])
    assert res.exit_code == 2 and "unknown setting 'bogus'" in res.output
    res = runner.invoke(app, ["pipeline", "run", str(cfg), "ppo.policy=x", "rankings_file=r.jsonl"])
    assert res.exit_code == 2 and "set by the pipeline" in res.output
    res = runner.invoke(app, ["pipeline", "run", str(cfg), "rounds=2", "rankings_file=r.jsonl"])
    assert res.exit_code == 2 and "put {round} in the name" in " ".join(res.output.split())
    res = runner.invoke(app, ["pipeline", "run", str(cfg), "rounds=2", "methods=[dpo]", "rankings_file=r{round}.jsonl"])
    assert res.exit_code == 2 and "put ppo in methods" in res.output
    assert not (tmp_path / "out").exists()  # nothing ran


@pytest.mark.slow
def test_a_settings_sweep_stops_before_the_test_questions(tmp_path):
    """test_report=false: the validation curves are written and no test question is answered; the default rerun
    then evaluates on the test questions, skipping the finished stages."""
    out = tmp_path / "sweep"
    one_round = [*SMALL, "rounds=1", "methods=[ppo]"]
    res = runner.invoke(app, ["demo", "--out", str(out), *one_round, "test_report=false"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    said = " ".join(res.output.split())
    assert "stopped before the test questions" in said and "Test questions" not in said
    curves = [json.loads(x) for x in (out / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in curves if "heldout_win_rate_vs_sft" in r] == [1, 2, 4, 6]
    assert not any((out / f).exists() for f in ("summary.json", "report.html", "eval_samples.jsonl", ".report.done"))
    res = runner.invoke(app, ["demo", "--out", str(out), *one_round])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert " ".join(res.output.split()).count("done earlier, skipped") == 6
    assert json.loads((out / "summary.json").read_text())["test_questions"] == 68 and (out / "report.html").exists()
