"""The loop with people in it, as a new team runs it: the pipeline stops at the rankings stage, the samples go into
the annotation app, two annotators judge them, one export carries every judgement, and the pipeline goes on."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rlhfkit.cli import app

runner = CliRunner()


@pytest.mark.slow
def test_every_vote_of_two_annotators_reaches_the_reward_model(tmp_path, tiny_lm, qa_file, monkeypatch):
    monkeypatch.setenv("RLHFKIT_SECRET_KEY", "people-test")
    out, exports, db = tmp_path / "run", tmp_path / "exports", str(tmp_path / "team.db")
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(
        f"base_model: {tiny_lm}\ntrain_file: {qa_file}\nheldout_file: {qa_file}\noutput_dir: {out}\n"
        f"rankings_file: {exports}/round{{round}}.jsonl\nnum_samples: 4\nsample_temperatures: '1.0'\n"
        "max_new_tokens: 8\nsft: {max_steps: 4, batch_size: 4}\nreward: {max_steps: 4, batch_size: 4}\n"
        "ppo: {total_episodes: 8, batch_size: 8, minibatch_size: 8}\n"
    )
    res = runner.invoke(app, ["pipeline", "run", str(cfg)])
    assert res.exit_code == 2 and f"rank the answers in {out / 'samples.jsonl'}" in " ".join(res.output.split())
    assert not (out / "rm").exists()

    # as a real model's samples do, some merge: the first prompt's into two answers, the second's into one
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    samples[0]["responses"] = [*samples[0]["responses"][:2]] * 2
    samples[1]["responses"] = [samples[1]["responses"][0]] * 4
    (out / "samples.jsonl").write_text("".join(json.dumps(x) + "\n" for x in samples))
    res = runner.invoke(
        app, ["annotate", "import", str(out / "samples.jsonl"), "--db", db, "--project", "r1", "--overlap", "2"]
    )
    assert res.exit_code == 0 and "left out 1 prompts" in res.output, res.output
    from rlhfkit.annotate import service
    from rlhfkit.annotate.store import Item, Project, User, open_db

    votes = 0
    for name in ("ada", "bo"):
        pw = tmp_path / f"{name}.pw"
        pw.write_text("a long enough password\n")
        res = runner.invoke(app, ["annotate", "create-user", name, "--db", db, "--password-file", str(pw)])
        assert res.exit_code == 0, res.output
    with open_db(db)() as s:
        project = s.query(Project).filter_by(name="r1").one()
        items = s.query(Item).filter_by(project_id=project.id).all()
        assert {i.kind for i in items} == {"compare", "rank"}  # samples never become gold-answer tasks
        assert len(items) == len(samples) - 1
        for name in ("ada", "bo"):
            person = s.query(User).filter_by(name=name).one()
            while (a := service.next_assignment(s, project, person)) is not None:
                n = len(a.item.responses)
                payload = {"label": "a" if name == "ada" else "b"} if a.item.kind == "compare" else None
                service.submit(s, a, payload or {"ranks": list(range(1, n + 1))})
                votes += 1
    assert votes == 2 * len(items) > 0

    export = exports / "round1.jsonl"
    exports.mkdir()
    res = runner.invoke(
        app, ["annotate", "export", "--db", db, "--project", "r1", "--format", "preferences", str(export)]
    )
    assert res.exit_code == 0 and f"wrote {votes} preferences records" in res.output

    res = runner.invoke(app, ["pipeline", "run", str(cfg)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    kept = [json.loads(x) for x in (out / "rankings.jsonl").read_text().splitlines()]
    split = sum(len((out / f"rankings_{s}.jsonl").read_text().splitlines()) for s in ("train", "eval"))
    assert len(kept) == split == votes  # every judgement, A/B and ranking alike, went to the reward model's files
    assert json.loads((out / "rm" / "metrics.json").read_text())["train_items"] > 0
