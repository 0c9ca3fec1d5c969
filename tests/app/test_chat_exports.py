"""The next round's data: `rlhf annotate export` turns the chat page's thumbs into ratings, a correction into an SFT
example and a comparison (and pair) that prefers it to the model's answer, and arena votes into comparisons; the files
validate with `rlhf data validate` and `rlhf sft`, `rlhf reward train`, `rlhf dpo` and `rlhf kto` train on them
unchanged."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from rlhfkit.annotate import service
from rlhfkit.annotate.app import create_app
from rlhfkit.annotate.limits import RateLimiter
from rlhfkit.annotate.store import User
from rlhfkit.cli import app as cli
from rlhfkit.data.io import read_records
from tests.app.conftest import PASSWORD, login
from tests.app.fake_openai import Reply
from tests.app.test_chat import ask, events, project, text_of

runner = CliRunner()
HR = [{"role": "user", "content": "Where is HR?"}]
PAYDAY = [{"role": "user", "content": "When is payday?"}]
PARK = [{"role": "user", "content": "Where do I park?"}]
PAYDAY_FIX = "The last working day of the month."


def collect(app, admin, make_user, fake) -> tuple[int, dict]:
    """Two people's feedback through the HTTP API, and a compare task done the old way; returns the project id and
    what was said."""
    app.state.chat_rate = RateLimiter(limit=100)
    pid = project(admin, fake, "policy", "baseline")
    admin.post(f"/api/v1/projects/{pid}/items", json={"records": [{"prompt": "q", "responses": ["x", "y"]}]})
    make_user("bob")
    make_user("cy")
    bob, cy = login(app, "bob"), login(app, "cy")
    fake.replies["policy"] = Reply("HR is in the basement.")
    fake.replies["baseline"] = Reply("Ask the front desk.")

    def turn(client, question, label, correction=None, parent_id=None):
        evs = events(ask(client, pid, question, parent_id))
        res = client.post(
            f"/api/v1/chat/{evs[-1]['turn_id']}/feedback", json={"label": label, "correction": correction}
        )
        assert res.status_code == 200, res.text
        return evs[-1]["turn_id"]

    first = turn(bob, "Where is HR?", "bad", "HR is on the 3rd floor of Building A.")
    turn(bob, "And IT?", "good", parent_id=first)  # a conversation: its prompt holds the earlier turns
    turn(cy, "When is payday?", "bad", PAYDAY_FIX)
    turn(cy, "Where do I park?", "bad")  # thumbs down without a correction
    events(ask(cy, pid, "Never rated"))  # an answer nobody rated is not data
    votes = []
    for i, label in enumerate(["a", "b", "tie", "both_bad"]):
        evs = events(bob.post(f"/api/v1/projects/{pid}/arena", json={"message": f"Question {i}?"}))
        assert bob.post(f"/api/v1/arena/{evs[-1]['battle_id']}/vote", json={"label": label}).status_code == 200
        votes.append((f"Question {i}?", text_of(evs, "a"), text_of(evs, "b"), label))
    events(bob.post(f"/api/v1/projects/{pid}/arena", json={"message": "Not voted"}))
    a = bob.post(f"/api/v1/projects/{pid}/next").json()
    assert bob.post(f"/api/v1/assignments/{a['assignment_id']}/submit", json={"label": "a"}).status_code == 201
    return pid, {"votes": votes, "shown": a["responses"]}


def test_chat_feedback_and_arena_votes_export_in_the_training_formats(app, admin, make_user, fake, tmp_path):
    pid, said = collect(app, admin, make_user, fake)
    answer, correction = "HR is in the basement.", "HR is on the 3rd floor of Building A."
    it = HR + [{"role": "assistant", "content": answer}, {"role": "user", "content": "And IT?"}]

    def export(fmt):
        res = admin.get(f"/api/v1/projects/{pid}/export?format={fmt}")
        assert res.status_code == 200, res.text
        rows = res.json()
        path = tmp_path / f"{fmt}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        assert read_records(path).format == fmt  # as `rlhf data validate` reads it
        return [{k: v for k, v in r.items() if k not in ("annotator", "flags")} for r in rows]

    ratings = export("ratings")
    chat_ratings = [r for r in ratings if r.get("source") == "chat"]
    assert chat_ratings == [
        {"prompt": HR, "response": answer, "label": "bad", "source": "chat", "model": "policy"},
        {"prompt": it, "response": answer, "label": "good", "source": "chat", "model": "policy"},
        {"prompt": PAYDAY, "response": answer, "label": "bad", "source": "chat", "model": "policy"},
        {"prompt": PARK, "response": answer, "label": "bad", "source": "chat", "model": "policy"},
    ]
    # arena votes as ratings, like any comparison: the winner good, the loser bad, both bad two bad, a tie none
    arena_ratings = [(r["response"], r["label"]) for r in ratings if r.get("source") == "arena"]
    (_, a0, b0, _), (_, a1, b1, _), _, (_, a3, b3, _) = said["votes"]
    assert arena_ratings == [(a0, "good"), (b0, "bad"), (b1, "good"), (a1, "bad"), (a3, "bad"), (b3, "bad")]

    comparisons = export("comparisons")
    assert comparisons[0]["prompt"] == "q" and [comparisons[0]["response_a"], comparisons[0]["response_b"]] == [
        "x",
        "y",
    ]
    assert comparisons[1] == {
        "prompt": HR,
        "response_a": correction,  # the correction, preferred to the model's answer
        "response_b": answer,
        "label": "a",
        "source": "chat",
        "model": "policy",
    }
    assert comparisons[2]["response_a"] == PAYDAY_FIX and comparisons[2]["response_b"] == answer
    arena = [r for r in comparisons if r.get("source") == "arena"]
    assert [(r["prompt"], r["response_a"], r["response_b"], r["label"]) for r in arena] == [
        ([{"role": "user", "content": q}], a, b, label) for q, a, b, label in said["votes"]
    ]
    assert all({r["model_a"], r["model_b"]} == {"policy", "baseline"} for r in arena)
    for r in arena:  # the model named for a side wrote that side
        assert r["response_a"] == {"policy": answer, "baseline": "Ask the front desk."}[r["model_a"]]

    assert export("sft") == [
        {"prompt": HR, "completion": correction, "source": "chat", "model": "policy"},
        {"prompt": PAYDAY, "completion": PAYDAY_FIX, "source": "chat", "model": "policy"},
    ]
    pairs = export("pairs")
    assert pairs[0]["chosen"] == said["shown"][0]  # the compare task
    assert pairs[1:] == [
        {"prompt": HR, "chosen": correction, "rejected": answer, "source": "chat", "model": "policy"},
        {"prompt": PAYDAY, "chosen": PAYDAY_FIX, "rejected": answer, "source": "chat", "model": "policy"},
        {
            "prompt": [{"role": "user", "content": "Question 0?"}],
            "chosen": a0,
            "rejected": b0,
            "source": "arena",
            "model_a": arena[0]["model_a"],
            "model_b": arena[0]["model_b"],
        },
        {
            "prompt": [{"role": "user", "content": "Question 1?"}],
            "chosen": b1,
            "rejected": a1,
            "source": "arena",
            "model_a": arena[1]["model_a"],
            "model_b": arena[1]["model_b"],
        },
    ]
    # pseudonyms, never names
    assert {r["annotator"] for r in admin.get(f"/api/v1/projects/{pid}/export?format=ratings").json()} <= {
        u["pseudonym"] for u in _people(app)
    }


def _people(app) -> list[dict]:
    with app.state.sessions() as s:
        return [{"name": u.name, "pseudonym": u.pseudonym} for u in s.scalars(select(User))]


@pytest.mark.slow
def test_the_exports_validate_and_train_unchanged(tmp_path, tiny_lm, fake):
    """`rlhf annotate export` to files, `rlhf data validate`, then a few steps of each trainer on them as written."""
    db = str(tmp_path / "team.db")
    app = create_app(db)
    with app.state.sessions() as s:
        service.create_user(s, "ada", PASSWORD, "admin")
    admin = login(app, "ada")

    def make(name, role="annotator"):
        with app.state.sessions() as s:
            return service.create_user(s, name, PASSWORD, role)

    collect(app, admin, make, fake)
    files = {}
    for fmt, count in (("ratings", 12), ("comparisons", 7), ("sft", 2), ("pairs", 5)):
        out = tmp_path / f"{fmt}.jsonl"
        res = runner.invoke(
            cli, ["annotate", "export", "--db", db, "--project", "help desk", "--format", fmt, str(out)]
        )
        assert res.exit_code == 0, res.output
        res = runner.invoke(cli, ["data", "validate", str(out)])
        assert res.exit_code == 0 and f"{count} records, format {fmt}" in res.output, res.output
        files[fmt] = out

    common = ["max_steps=2", "batch_size=2", "logging_steps=1"]
    for command, data in (
        (["sft"], "sft"),
        (["reward", "train"], "comparisons"),
        (["dpo"], "comparisons"),
        (["dpo"], "pairs"),
        (["kto"], "ratings"),
    ):
        out = tmp_path / f"{'-'.join(command)}-{data}"
        args = [*command, f"model={tiny_lm}", f"train_file={files[data]}", f"output_dir={out}", *common]
        if command == ["sft"]:
            args.append("gold_metrics=false")
        res = runner.invoke(cli, args)
        assert res.exit_code == 0, (command, data, res.output, repr(res.exception))
        assert json.loads((out / "metrics.json").read_text())["steps"] == 2, (command, data)
