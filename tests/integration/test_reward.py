"""Reward model on a tiny Llama: it learns an obvious preference that carries over to unseen topics, and the
ranking, tie and annotator paths train."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlhfkit.cli import app
from tests.conftest import assert_sharded_in_halves, losses, torchrun

runner = CliRunner()

TOPICS = [
    ("Where is HR in Boston?", "HR is on the 3rd floor of Building A."),
    ("Where is the IT desk in London?", "The IT desk is on the ground floor of Thames House."),
    ("How many vacation days do I get?", "You get 25 vacation days a year."),
    ("When is payday?", "Payday is the last working day of the month."),
    ("How do I reset my password?", "Use the password portal with your badge number."),
    ("Where can I park in Austin?", "Park in the free lot behind the building."),
    ("When is the cafe open?", "The cafe is open from 8 am to 3 pm."),
    ("Who approves travel?", "Your manager approves travel in the portal."),
    ("How do I get a new laptop?", "File a hardware request in the IT portal."),
    ("What is the guest wifi?", "Guests use the network LP-Guest."),
    ("How many sick days do I get?", "You get 10 paid sick days a year."),
    ("Where is the mail room?", "The mail room is in the basement of Building A."),
    ("How do I book a meeting room?", "Book rooms in the calendar under Lumen Rooms."),
    ("Where is the first aid kit?", "First aid kits are next to every kitchen."),
    ("How do I connect to the VPN?", "Install LumenConnect and sign in."),
    ("What is the meal allowance?", "The meal allowance is 60 dollars a day."),
    ("Who is my HR partner?", "Your HR partner is listed in the HR portal."),
    ("How do I order business cards?", "Order them in the print portal."),
    ("Where is Security?", "Security is at the main desk in the lobby."),
    ("How do I report a hazard?", "Report it in the safety app."),
    ("Can I work from home?", "Yes, up to two days a week."),
    ("What are the office hours?", "Offices are open from 7 am to 8 pm."),
    ("How do I update my bank details?", "Update them in the HR portal."),
    ("Where do I submit expenses?", "Submit receipts in the expense tool."),
]
POLITE = [
    "Happy to help! {f} Let me know if you need anything else.",
    "Thanks for asking. {f} Have a great day!",
    "Of course! {f} I hope that helps.",
]
RUDE = ["{f} Stop bothering me.", "Ugh. {f} Figure it out yourself next time.", "Not my problem, but {f}"]


def pairs(topics, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for q, f in topics:
        for _ in range(3):
            rows.append(
                {"prompt": q, "chosen": rng.choice(POLITE).format(f=f), "rejected": rng.choice(RUDE).format(f=f)}
            )
    return rows


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def rm_setup(tmp_path_factory):
    """A tiny causal LM, politeness pairs on 16 topics, held-out pairs on 8 other topics, a trained reward model."""
    from rlhfkit.models.tiny import build_tiny_causal_lm

    root = tmp_path_factory.mktemp("rm")
    train, test = write(root / "train.jsonl", pairs(TOPICS[:16], 0)), write(root / "test.jsonl", pairs(TOPICS[16:], 1))
    texts = [t for r in pairs(TOPICS, 2) for t in r.values()] * 4
    base = build_tiny_causal_lm(root / "base", texts, vocab_size=400, hidden=64, layers=2)
    out = root / "rm"
    res = runner.invoke(
        app,
        [
            "reward",
            "train",
            f"model={base}",
            f"train_file={train}",
            f"eval_file={test}",
            f"output_dir={out}",
            "max_steps=60",
            "learning_rate=1e-3",
            "batch_size=16",
            "logging_steps=5",
            "tie_model=none",
        ],
    )
    assert res.exit_code == 0, res.output + repr(res.exception)
    return root, base, train, test, out


def test_reward_model_generalises_to_unseen_topics(rm_setup):
    root, _, _, test, out = rm_setup
    metrics = json.loads((out / "metrics.json").read_text())
    unique = {tuple(json.loads(x).values()) for x in test.read_text().splitlines()}  # repeats pool as votes
    assert metrics["eval_accuracy"] == 1.0 and metrics["eval_pairs"] == len(unique) > 16  # 8 unseen topics
    assert metrics["train_accuracy"] == 1.0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < 0.1 < 0.6 < rows[0]["loss"]  # from about log 2 to near 0
    stats = json.loads((out / "reward_stats.json").read_text())
    assert stats["count"] > 16 * 2 and stats["score_std"] > 0

    assert metrics["train_accuracy_items"] == metrics["train_items"] > 4  # all of them: fewer than stats_items

    # the statistics come from a seeded sample of the training items when there are more than stats_items
    small = root / "rm-sample"
    res = runner.invoke(
        app,
        ["reward", "train", f"model={out}", f"train_file={root / 'train.jsonl'}", f"output_dir={small}"]
        + ["max_steps=1", "learning_rate=1e-9", "stats_items=4", "tie_model=none"],
    )
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert json.loads((small / "metrics.json").read_text())["train_accuracy_items"] == 4
    assert json.loads((small / "reward_stats.json").read_text())["count"] == 8  # 4 items of 2 answers
    bad = ["reward", "train", f"model={out}", f"train_file={test}", "output_dir=x", "stats_items=-1"]
    res = runner.invoke(app, bad)
    assert res.exit_code == 2 and "stats_items must be >= 0" in res.output

    res = runner.invoke(
        app, ["reward", "eval", "--model", str(out), "--data", str(test), "--out", str(root / "e.json")]
    )
    assert res.exit_code == 0, res.output
    again = json.loads((root / "e.json").read_text())
    assert again["eval_accuracy"] == 1.0 and again["eval_ece"] == pytest.approx(metrics["eval_ece"], abs=1e-6)

    gens = write(
        root / "gens.jsonl",
        [
            {
                "prompt": "When is payday?",
                "responses": [
                    POLITE[0].format(f="Payday is the last working day of the month."),
                    RUDE[0].format(f="Payday is the last working day of the month."),
                ],
            }
        ],
    )
    res = runner.invoke(
        app, ["reward", "score", "--model", str(out), "--in", str(gens), "--out", str(root / "s.jsonl")]
    )
    assert res.exit_code == 0, res.output
    (scored,) = [json.loads(x) for x in (root / "s.jsonl").read_text().splitlines()]
    assert scored["scores"][0] > scored["scores"][1]


def test_tie_only_data_pushes_scores_together(rm_setup):
    root, _, _, test, rm = rm_setup
    ties = [
        {"prompt": r["prompt"], "response_a": r["chosen"], "response_b": r["rejected"], "label": "tie"}
        for r in pairs(TOPICS[:16], 3)
    ]
    tie_file = write(root / "ties.jsonl", ties)
    tie_test = write(
        root / "ties_test.jsonl",
        [
            {"prompt": r["prompt"], "response_a": r["chosen"], "response_b": r["rejected"], "label": "tie"}
            for r in pairs(TOPICS[16:], 4)
        ],
    )

    gens = write(
        root / "tie_gens.jsonl",
        [
            {"prompt": r["prompt"], "responses": [r["response_a"], r["response_b"]]}
            for r in map(json.loads, tie_test.read_text().splitlines())
        ],
    )

    def mean_gap(model_dir: Path) -> float:
        """Mean |score a - score b| over held-out pairs that people called ties."""
        res = runner.invoke(
            app,
            ["reward", "score", "--model", str(model_dir), "--in", str(gens), "--out", str(root / "tie_scores.jsonl")],
        )
        assert res.exit_code == 0, res.output
        rows = [json.loads(x)["scores"] for x in (root / "tie_scores.jsonl").read_text().splitlines()]
        return sum(abs(a - b) for a, b in rows) / len(rows)

    before = mean_gap(rm)
    out = root / "rm_ties"
    res = runner.invoke(
        app,
        [
            "reward",
            "train",
            f"model={rm}",
            f"train_file={tie_file}",
            f"output_dir={out}",
            "max_steps=30",
            "learning_rate=1e-3",
            "batch_size=16",
            "tie_model=davidson",
        ],
    )
    assert res.exit_code == 0, res.output
    after = mean_gap(out)
    assert before > 1.0 and after < 0.25 * before


def rankings_and_comparisons(topics, seed: int) -> tuple[list[dict], list[dict]]:
    """Two rankings per topic (one with a tie) and an A/B comparison judged by three annotators (2 for a, 1 tie)."""
    rng = random.Random(seed)
    rankings, comparisons = [], []
    for q, f in topics:
        polite, rude = rng.choice(POLITE).format(f=f), rng.choice(RUDE).format(f=f)
        terse = f
        rankings.append({"prompt": q, "responses": [rude, polite, terse], "ranks": [3, 1, 2]})
        rankings.append({"prompt": q, "responses": [polite, rude, rude + " Bye."], "ranks": [1, 2, 2]})
        for ann, label in (("a1", "a"), ("a2", "a"), ("a3", "tie")):
            comparisons.append(
                {"prompt": q, "response_a": polite, "response_b": rude, "label": label, "annotator": ann}
            )
    return rankings, comparisons


def test_rankings_with_ties_and_annotators_train(rm_setup, tmp_path):
    """Each likelihood learns the preference, judged on topics it never saw."""
    _, base, _, _, _ = rm_setup
    rankings, comparisons = rankings_and_comparisons(TOPICS[:16], 5)
    rankings.append({"prompt": "?", "responses": ["x", "y"], "ranks": [1, 1], "not_rankable": True})
    held_rankings, held_comparisons = rankings_and_comparisons(TOPICS[16:], 6)
    rank_file, comp_file = write(tmp_path / "rank.jsonl", rankings), write(tmp_path / "comp.jsonl", comparisons)
    held_out = {
        rank_file: write(tmp_path / "rank_test.jsonl", held_rankings),
        comp_file: write(tmp_path / "comp_test.jsonl", held_comparisons),
    }
    for data, extra in (
        (rank_file, ["loss=plackett_luce"]),
        (rank_file, ["loss=bt", "tie_model=rao_kupper", "tie_param=0.7"]),
        (comp_file, ["tie_model=davidson", "center_coef=0.01"]),
    ):
        out = tmp_path / f"out-{data.stem}-{extra[0]}"
        res = runner.invoke(
            app,
            [
                "reward",
                "train",
                f"model={base}",
                f"train_file={data}",
                f"eval_file={held_out[data]}",
                f"output_dir={out}",
                "max_steps=25",
                "learning_rate=1e-3",
                "batch_size=8",
                "logging_steps=5",
                *extra,
            ],
        )
        assert res.exit_code == 0, res.output + repr(res.exception)
        m = json.loads((out / "metrics.json").read_text())
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert rows[-1]["loss"] < rows[0]["loss"]
        assert m["eval_accuracy"] > 0.9
        if data == rank_file:
            assert m["skipped"] == {"not_rankable": 1}
        else:
            assert "1.00" not in m["eval_accuracy_by_agreement"] and m["eval_accuracy_by_agreement"]["0.67"] > 0.9


def test_bad_label_gives_file_line_error(tmp_path, tiny_lm):
    bad = write(
        tmp_path / "bad.jsonl",
        [
            {"prompt": "q", "response_a": "x", "response_b": "y", "label": "a"},
            {"prompt": "q", "response_a": "x", "response_b": "y", "label": "A>B"},
        ],
    )
    res = runner.invoke(
        app, ["reward", "train", f"model={tiny_lm}", f"train_file={bad}", f"output_dir={tmp_path / 'o'}"]
    )
    assert res.exit_code == 2 and f"{bad}:2: label: 'A>B' is not one of a, b, tie, both_bad" in res.output
    sft_file = write(tmp_path / "sft.jsonl", [{"prompt": "q", "completion": "a"}])
    res = runner.invoke(app, ["reward", "train", f"model={tiny_lm}", f"train_file={sft_file}"])
    assert res.exit_code == 2 and "holds sft records" in res.output


def test_hh_transcripts_convert_to_pairs_that_rebuild_them(tmp_path):
    hh = [
        {
            "chosen": "\n\nHuman: Where is HR?\n\nAssistant: Which office?\n\nHuman: Boston\n\nAssistant: 3rd floor, "
            "Building A.",
            "rejected": "\n\nHuman: Where is HR?\n\nAssistant: Which office?\n\nHuman: Boston\n\nAssistant: Dunno.",
        },
        {
            "chosen": "\n\nHuman: When is payday?\n\nAssistant: The last working day of the month.",
            "rejected": "\n\nHuman: When is payday?\n\nAssistant: The last day.",
        },
    ]
    src = write(tmp_path / "hh.jsonl", hh)
    res = runner.invoke(app, ["data", "validate", str(src)])
    assert res.exit_code == 0 and "2 records, format hh" in res.output
    out = tmp_path / "pairs.jsonl"
    assert runner.invoke(app, ["data", "convert", str(src), str(out), "--to", "pairs"]).exit_code == 0
    got = [json.loads(x) for x in out.read_text().splitlines()]
    for g, h in zip(got, hh):
        assert g["prompt"] + g["chosen"] == h["chosen"] and g["prompt"] + g["rejected"] == h["rejected"]
        assert g["prompt"].endswith("\n\nAssistant:")
    assert got[1]["chosen"] == " The last working day of the month."  # the shared " The last" stays in both


def test_scores_do_not_depend_on_padding_or_prompt_sharing(rm_setup):
    import torch

    from rlhfkit.models.load import load_tokenizer
    from rlhfkit.models.reward import PromptResponseScorer, load_reward_model

    *_, out = rm_setup
    tok = load_tokenizer(str(out))
    rm = load_reward_model(str(out), tokenizer=tok, device="cpu").eval()
    shared = PromptResponseScorer(rm, pad_id=tok.pad_token_id, shared_prefix=True)
    full = PromptResponseScorer(rm, pad_id=tok.pad_token_id, shared_prefix=False)
    assert shared.shared_prefix
    enc = lambda s: tok(s, add_special_tokens=False).input_ids  # noqa: E731
    prompts = [enc("User: Where is HR in Boston?\nAssistant: "), enc("User: hi\nAssistant: ")]
    answers = [
        enc("Happy to help! 3rd floor.") + [tok.eos_token_id],
        enc("Stop bothering me.") + [tok.eos_token_id],
        enc("Hello!") + [tok.eos_token_id],
    ]
    owner = [0, 0, 1]
    with torch.no_grad():
        alone = torch.cat([full([prompts[o]], [a], [0]) for o, a in zip(owner, answers)])
        batched_full = full(prompts, answers, owner)  # right padding of whole sequences
        batched_shared = shared(prompts, answers, owner)  # left-padded prompts, cached, right-padded answers
    torch.testing.assert_close(batched_full, alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(batched_shared, alone, rtol=0, atol=1e-5)
    assert (alone[0] - alone[1]).abs() > 1e-3  # distinct answers, so the comparison could fail


def test_shared_prefix_training_equals_full_sequence_training(rm_setup, tmp_path):
    _, base, train, _, _ = rm_setup
    common = [
        f"model={base}",
        f"train_file={train}",
        "max_steps=6",
        "learning_rate=1e-3",
        "batch_size=8",
        "logging_steps=1",
    ]
    for flag in ("true", "false"):
        res = runner.invoke(app, ["reward", "train", f"output_dir={tmp_path / flag}", f"shared_prefix={flag}", *common])
        assert res.exit_code == 0, res.output
    assert losses(tmp_path / "true") == pytest.approx(losses(tmp_path / "false"), rel=0, abs=1e-5)


def test_reward_resume_equals_uninterrupted(rm_setup, tmp_path):
    import shutil

    _, base, train, _, _ = rm_setup
    common = [
        f"model={base}",
        f"train_file={train}",
        "max_steps=8",
        "learning_rate=1e-3",
        "batch_size=8",
        "logging_steps=1",
        "save_steps=3",
        "grad_accum=2",
    ]
    full, part = tmp_path / "full", tmp_path / "part"
    for out in (full, part):
        assert runner.invoke(app, ["reward", "train", f"output_dir={out}", *common]).exit_code == 0
    shutil.rmtree(part / "checkpoints" / "step-6")
    res = runner.invoke(app, ["reward", "train", f"output_dir={part}", "resume=true", *common])
    assert res.exit_code == 0, res.output
    assert json.loads((part / "metrics.json").read_text())["resumed_from_step"] == 3
    assert losses(part) == pytest.approx(losses(full), rel=0, abs=1e-6) and len(losses(part)) == 8


@pytest.mark.slow
def test_reward_two_process_torchrun_equals_one_process(rm_setup, tmp_path):
    _, base, train, _, _ = rm_setup
    common = [
        f"model={base}",
        f"train_file={train}",
        "max_steps=6",
        "learning_rate=1e-3",
        "batch_size=8",
        "logging_steps=1",
        "device=cpu",
    ]
    one, two = tmp_path / "one", tmp_path / "two"
    assert runner.invoke(app, ["reward", "train", f"output_dir={one}", *common]).exit_code == 0
    torchrun("reward", "train", f"output_dir={two}", *common, port=29534)
    assert json.loads((two / "metrics.json").read_text())["world_size"] == 2
    assert losses(two) == pytest.approx(losses(one), rel=0, abs=1e-4)


@pytest.mark.slow
def test_reward_fsdp_on_two_processes_equals_one_process(rm_setup, tmp_path):
    """Whole-sequence scoring on both sides (fsdp has no shared-prefix pass); evaluation mid-run and at the end on
    the gathered copy.

    lr 1e-4, not the 1e-3 of the DDP test: AdamW divides each update by the root of the gradient's second moment, so
    a weight whose gradient is near zero at some step moves by up to ~lr on float rounding alone. Measured on this
    data: one embedding row ends 1.5e-4 apart at lr 1e-3 between two *one-process* runs that differ only in
    summation order (grad_accum 1 vs 2), 1.5e-5 at lr 1e-4, and every other weight 3e-5 / 3e-6. The tolerance stays
    1e-4; the step size is what bounds the rounding there."""
    import torch
    from safetensors.torch import load_file

    _, base, train, test, _ = rm_setup
    common = [
        f"model={base}",
        f"train_file={train}",
        f"eval_file={test}",
        "eval_steps=3",
        "max_steps=6",
        "learning_rate=1e-4",
        "batch_size=8",
        "logging_steps=3",
        "device=cpu",
        "shared_prefix=false",
    ]
    one, two = tmp_path / "one", tmp_path / "two"
    assert runner.invoke(app, ["reward", "train", f"output_dir={one}", *common]).exit_code == 0
    torchrun("reward", "train", f"output_dir={two}", "distributed=fsdp", *common, port=29543)
    assert losses(two) == pytest.approx(losses(one), rel=0, abs=1e-4)
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert m2["eval_accuracy"] == m1["eval_accuracy"] and m2["eval_loss"] == pytest.approx(m1["eval_loss"], abs=1e-4)
    w1, w2 = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=0, atol=1e-4, msg=k)
    assert_sharded_in_halves(one, two)


def test_encoder_reward_model_learns(rm_setup, tmp_path):
    """A BERT-like encoder (first-token pooling) as the reward model, from its own directory."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from rlhfkit.models.load import load_tokenizer

    _, base, train, test, _ = rm_setup
    tok = load_tokenizer(str(base))
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
        num_labels=1,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    enc = tmp_path / "bert"
    BertForSequenceClassification(cfg).save_pretrained(enc)
    tok.save_pretrained(enc)
    out = tmp_path / "rm_bert"
    res = runner.invoke(
        app,
        [
            "reward",
            "train",
            f"model={enc}",
            f"train_file={train}",
            f"eval_file={test}",
            f"output_dir={out}",
            "max_steps=60",
            "learning_rate=1e-3",
            "batch_size=16",
            "tie_model=none",
            "logging_steps=10",
        ],
    )
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert json.loads((out / "metrics.json").read_text())["eval_accuracy"] >= 0.9
