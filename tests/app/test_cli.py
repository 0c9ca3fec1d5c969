"""`rlhf annotate` commands: people, import, export that round-trips into `rlhf data validate`, stats."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from rlhfkit.cli import app

runner = CliRunner()


def test_annotate_commands(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHFKIT_SECRET_KEY", "cli-test")
    db = str(tmp_path / "team.db")
    pw = tmp_path / "pw"
    pw.write_text("a long enough password\n")
    res = runner.invoke(
        app, ["annotate", "create-user", "ada", "--role", "admin", "--db", db, "--password-file", str(pw)]
    )
    assert res.exit_code == 0 and "created admin ada" in res.output
    res = runner.invoke(app, ["annotate", "create-user", "ada", "--db", db, "--password-file", str(pw)])
    assert res.exit_code == 2 and "exists" in res.output
    short = tmp_path / "short"
    short.write_text("abc")
    res = runner.invoke(app, ["annotate", "create-user", "bob", "--db", db, "--password-file", str(short)])
    assert res.exit_code == 2 and "at least 8" in res.output

    samples = tmp_path / "samples.jsonl"
    samples.write_text(
        json.dumps({"prompt": "q1", "responses": ["a", "b"]})
        + "\n"
        + json.dumps({"prompt": "q2", "responses": ["a", "b", "c"]})
        + "\n"
        + json.dumps({"prompt": "q3", "responses": ["a draft"]})
        + "\n"
        + json.dumps({"prompt": "q4", "responses": ["same", "same", "same"]})  # 3 samples, one answer
        + "\n"
    )
    again = tmp_path / "again.jsonl"
    res = runner.invoke(
        app,
        ["annotate", "import", str(samples), "--db", db, "--project", "prefs", "--overlap", "2"]
        + ["--resample", str(again)],
    )
    assert res.exit_code == 0 and "1 compare" in res.output and "1 rank" in res.output and "1 gold" in res.output
    assert "left out 1 prompts whose samples were all the same answer" in res.output
    assert [json.loads(x) for x in again.read_text().splitlines()] == [{"prompt": "q4"}]  # not a gold task
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "responses": "not a list"}) + "\n")
    res = runner.invoke(app, ["annotate", "import", str(bad), "--db", db])
    assert res.exit_code == 2 and f"{bad}:1: responses" in res.output

    # judgements through the service, then export and validate with the data layer
    from rlhfkit.annotate import service
    from rlhfkit.annotate.store import Project, User, open_db

    with open_db(db)() as s:
        ada = s.query(User).filter_by(name="ada").one()
        project = s.query(Project).filter_by(name="prefs").one()
        while (a := service.next_assignment(s, project, ada)) is not None:
            kind = a.item.kind
            service.submit(
                s, a, {"gold": {"answer": "an answer"}, "compare": {"label": "tie"}, "rank": {"ranks": [1, 2, 3]}}[kind]
            )
    for fmt, expected in (("comparisons", "comparisons"), ("rankings", "rankings"), ("sft", "sft")):
        out = tmp_path / f"{fmt}.jsonl"
        res = runner.invoke(app, ["annotate", "export", "--db", db, "--project", "prefs", "--format", fmt, str(out)])
        assert res.exit_code == 0, res.output
        res = runner.invoke(app, ["data", "validate", str(out)])
        assert res.exit_code == 0 and f"1 records, format {expected}" in res.output
    # one export carries every judgement as it was given: the A/B vote and the ranking, read back as preferences
    out = tmp_path / "preferences.jsonl"
    export = ["annotate", "export", "--db", db, "--project", "prefs", "--format", "preferences", str(out)]
    res = runner.invoke(app, export)
    assert res.exit_code == 0 and "wrote 2 preferences records" in res.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    compare, rank = sorted(rows, key=lambda r: r["prompt"])
    assert (compare["prompt"], compare["label"], sorted([compare["response_a"], compare["response_b"]])) == (
        "q1",
        "tie",
        ["a", "b"],
    )
    assert (rank["prompt"], sorted(rank["responses"]), sorted(rank["ranks"])) == ("q2", ["a", "b", "c"], [1, 2, 3])
    res = runner.invoke(app, ["data", "validate", str(out)])
    assert res.exit_code == 0 and "2 records, format preferences" in res.output
    res = runner.invoke(app, ["annotate", "export", "--db", db, "--format", "nope", str(tmp_path / "x.jsonl")])
    assert res.exit_code == 2
    res = runner.invoke(app, ["annotate", "stats", "--db", db])
    stats = json.loads(res.output)
    assert stats["prefs"]["annotations"] == 3 and stats["prefs"]["complete_items"] == 0  # overlap 2, one person
