"""DPO and KTO on a tiny Llama: the implicit reward learns a preference that carries over to unseen topics, the
NLL term keeps the chosen answers' likelihood up, KTO moves good answers up and bad ones down, and the numerics
(step-0 log-ratios, shared-prompt logprobs) hold."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rlhfkit.cli import app
from tests.conftest import assert_sharded_in_halves, losses, metric_rows, torchrun
from tests.integration.test_reward import TOPICS, pairs, write

runner = CliRunner()


def invoke(*args: str):
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res


@pytest.fixture(scope="module")
def dpo_setup(tmp_path_factory):
    """A tiny causal LM fine-tuned on polite and rude answers alike (so both are likely), politeness pairs on 16
    topics for training and on 8 other topics held out."""
    from rlhfkit.models.tiny import build_tiny_causal_lm

    root = tmp_path_factory.mktemp("dpo")
    train, test = write(root / "train.jsonl", pairs(TOPICS[:16], 0)), write(root / "test.jsonl", pairs(TOPICS[16:], 1))
    texts = [t for r in pairs(TOPICS, 2) for t in r.values()] * 4
    base = build_tiny_causal_lm(root / "base", texts, vocab_size=400, hidden=64, layers=2)
    sft = [{"prompt": r["prompt"], "completion": r[k]} for r in pairs(TOPICS[:16], 3) for k in ("chosen", "rejected")]
    write(root / "sft.jsonl", sft)
    invoke(
        "sft",
        f"model={base}",
        f"train_file={root / 'sft.jsonl'}",
        f"output_dir={root / 'sft'}",
        "max_steps=80",
        "learning_rate=3e-3",
        "batch_size=16",
        "gold_metrics=false",
    )
    return root, root / "sft", train, test


DPO = ["max_steps=40", "learning_rate=1e-3", "batch_size=16", "logging_steps=1", "beta=0.1", "kl_prompts=8"]


def run_dpo(setup, out: Path, *settings: str) -> dict:
    root, sft, train, test = setup
    invoke("dpo", f"model={sft}", f"train_file={train}", f"eval_file={test}", f"output_dir={out}", *DPO, *settings)
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_dpo_learns_a_preference_that_carries_over_to_unseen_topics(dpo_setup):
    root = dpo_setup[0]
    summary = run_dpo(dpo_setup, root / "dpo")
    rows = metric_rows(root / "dpo")
    # step 0: the policy is its reference, every log-ratio 0, the loss log 2 (padding differs between the
    # reference's batches and the step's: measured 0 difference)
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert rows[0]["reward_margin"] == pytest.approx(0, abs=1e-5)
    assert rows[-1]["loss"] < 0.3
    assert summary["eval_reward_accuracy"] >= 0.9  # 8 topics never trained on
    assert summary["eval_reward_margin"] > 0.5
    assert summary["eval_kl"] > 0.01  # the policy moved away from the reference, measured on held-out prompts
    # the model is a plain directory that prefers the polite answer on an unseen topic
    from rlhfkit.data.collate import encode_prompt_answer
    from rlhfkit.models.load import load_causal_lm, load_tokenizer
    from rlhfkit.models.logprobs import AnswerLogprobs

    tok = load_tokenizer(str(root / "dpo"))
    scorer = AnswerLogprobs(load_causal_lm(str(root / "dpo"), device="cpu"), pad_id=tok.pad_token_id)
    q, f = TOPICS[20]
    enc = [
        encode_prompt_answer(tok, q, a, max_length=128)
        for a in (f"Of course! {f} I hope that helps.", f"{f} Stop bothering me.")
    ]
    with torch.no_grad():
        polite, rude = scorer([enc[0][0]], [enc[0][1], enc[1][1]], [0, 0])[0].tolist()
    assert polite > rude


@pytest.mark.slow
def test_the_nll_term_keeps_the_chosen_answers_likelihood_from_falling(dpo_setup):
    root = dpo_setup[0]
    plain = run_dpo(dpo_setup, root / "dpo_plain", "max_steps=30")
    rpo = run_dpo(dpo_setup, root / "dpo_rpo", "max_steps=30", "rpo_alpha=1.0")
    # plain DPO widens the margin by lowering both answers, the chosen one too (measured: -30.5 nats on the
    # training pairs); with the NLL term the chosen answers gain likelihood (+8.6) and move less on unseen topics
    assert plain["train_chosen_logp_change"] < 0 <= rpo["train_chosen_logp_change"]
    assert rpo["eval_chosen_logp_change"] > plain["eval_chosen_logp_change"]
    assert rpo["eval_reward_accuracy"] >= 0.9


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["ipo", "robust", "tie"])
def test_the_other_losses_learn_too(dpo_setup, loss):
    root = dpo_setup[0]
    extra = ["label_smoothing=0.1"] if loss == "robust" else []
    summary = run_dpo(dpo_setup, root / f"dpo_{loss}", f"loss={loss}", *extra)
    assert summary["eval_reward_accuracy"] >= 0.9, summary


@pytest.mark.slow
def test_dpo_with_lora_learns_and_starts_at_its_base(dpo_setup):
    root = dpo_setup[0]
    summary = run_dpo(dpo_setup, root / "dpo_lora", "lora.r=8", "lora.alpha=16", "learning_rate=5e-3")
    assert metric_rows(root / "dpo_lora")[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert summary["eval_reward_accuracy"] >= 0.9
    assert not list((root / "dpo_lora").glob("adapter_*"))


@pytest.mark.slow
def test_dpo_with_lora_under_fsdp_on_two_processes_equals_one_process(dpo_setup, tmp_path):
    """LoRA adapters trained over sharded frozen base weights; the reference is the base with adapters off on both
    sides; whole-sequence logprobs on both (fsdp has no shared-prefix pass); evaluation and the held-out KL on the
    gathered copy."""
    from safetensors.torch import load_file

    _, sft, train, test = dpo_setup
    common = [
        f"model={sft}",
        f"train_file={train}",
        f"eval_file={test}",
        "max_steps=6",
        "eval_steps=3",
        "learning_rate=5e-3",
        "batch_size=8",
        "logging_steps=1",
        "lora.r=8",
        "lora.alpha=16",
        "kl_prompts=4",
        "device=cpu",
        "shared_prefix=false",
    ]
    one, two = tmp_path / "one", tmp_path / "two"
    invoke("dpo", f"output_dir={one}", *common)
    torchrun("dpo", f"output_dir={two}", "distributed=fsdp", *common, port=29544)
    assert losses(one)[0] == pytest.approx(math.log(2), abs=1e-6)
    assert losses(two) == pytest.approx(losses(one), rel=0, abs=1e-4)
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    for key in ("eval_loss", "eval_reward_margin", "eval_kl"):
        assert m2[key] == pytest.approx(m1[key], rel=0, abs=1e-4), key
    w1, w2 = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))  # merged
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=0, atol=1e-4, msg=k)
    assert_sharded_in_halves(one, two)


@pytest.mark.slow
def test_kto_moves_good_answers_up_and_bad_answers_down(dpo_setup):
    root, sft, _, _ = dpo_setup
    rows = []
    for split, topics, seed in (("train", TOPICS[:16], 0), ("test", TOPICS[16:], 1)):
        ratings = [
            {"prompt": r["prompt"], "response": r[key], "label": label}
            for r in pairs(topics, seed)
            for key, label in (("chosen", "good"), ("rejected", "bad"))
        ]
        rows.append(write(root / f"ratings_{split}.jsonl", ratings))
    out = root / "kto"
    invoke("kto", f"model={sft}", f"train_file={rows[0]}", f"eval_file={rows[1]}", f"output_dir={out}", *DPO)
    summary = json.loads((out / "metrics.json").read_text())
    # implicit rewards beta (log pi - log pi_ref): up for good answers, down for bad, also on unseen topics
    assert summary["train_reward_good"] > 0 > summary["train_reward_bad"]
    assert summary["eval_reward_good"] > 0 > summary["eval_reward_bad"]
    assert metric_rows(out)[0]["kl_reference_point"] == pytest.approx(0, abs=1e-5)


def test_shared_prompt_logprobs_equal_whole_sequence_logprobs(tiny_lm):
    from rlhfkit.data.collate import encode_prompt_answer
    from rlhfkit.models.load import load_causal_lm, load_tokenizer
    from rlhfkit.models.logprobs import AnswerLogprobs
    from rlhfkit.ops import logprobs_from_logits

    tok = load_tokenizer(str(tiny_lm))
    model = load_causal_lm(str(tiny_lm), device="cpu", dtype="float32").eval()
    questions = [
        ("Where is the HR department in Boston?", ["3rd floor, Building A", "No idea", "Ask IT"]),
        ("When is payday?", ["The last working day"]),
    ]
    prompts, answers, owner = [], [], []
    for n, (q, ans) in enumerate(questions):
        for a in ans:
            p, ids, _ = encode_prompt_answer(tok, q, a, max_length=128)
            answers.append(ids)
            owner.append(n)
        prompts.append(p)
    with torch.no_grad():
        shared, n_shared = AnswerLogprobs(model, pad_id=tok.pad_token_id, shared_prefix=True)(prompts, answers, owner)
        whole, n_whole = AnswerLogprobs(model, pad_id=tok.pad_token_id, shared_prefix=False)(prompts, answers, owner)
        # the plain loop: each sequence alone, no padding
        alone = []
        for a, o in zip(answers, owner):
            ids = torch.tensor([prompts[o] + a])
            logits = model(input_ids=ids).logits[0, len(prompts[o]) - 1 : -1]
            alone.append(logprobs_from_logits(logits, torch.tensor(a)).sum())
    torch.testing.assert_close(shared, torch.stack(alone), rtol=0, atol=1e-5)
    torch.testing.assert_close(whole, torch.stack(alone), rtol=0, atol=1e-5)
    assert n_shared.tolist() == n_whole.tolist() == [len(a) for a in answers]


def test_ratings_are_validated_and_converted(tmp_path):
    from rlhfkit.data.convert import to_ratings
    from rlhfkit.data.io import read_records
    from rlhfkit.data.schema import Comparison, PreferencePair, Ranking

    bad = tmp_path / "r.jsonl"
    bad.write_text(
        json.dumps({"prompt": "q", "response": "a", "label": "good"})
        + "\n"
        + json.dumps({"prompt": "q", "response": "b", "label": "meh"})
        + "\n"
    )
    res = runner.invoke(app, ["data", "validate", str(bad)])
    assert res.exit_code != 0 and f"{bad}:2" in res.output and "label" in res.output and "meh" in res.output
    good = tmp_path / "good.jsonl"
    good.write_text(bad.read_text().splitlines()[0] + "\n")
    assert read_records(good).format == "ratings"

    ratings, skipped = to_ratings(
        [
            PreferencePair("q", "c", "r"),
            PreferencePair("q", "c", "r", votes={"chosen": 1, "rejected": 1}),
            Comparison("q", "x", "y", "b"),
            Comparison("q", "x", "y", "both_bad"),
            Comparison("q", "x", "y", "tie"),
            Ranking("q", ["1", "2", "3"], [2, 1, 3]),
        ]
    )
    assert [(r.response, r.label) for r in ratings] == [
        ("c", "good"),
        ("r", "bad"),
        ("y", "good"),
        ("x", "bad"),
        ("x", "bad"),
        ("y", "bad"),
        ("2", "good"),
        ("3", "bad"),
    ]
    assert skipped == {"tied_votes": 1, "tie": 1}


def test_kto_reference_point_pairs_each_prompt_with_another_prompts_answer():
    from rlhfkit.algorithms.dpo import mismatched
    from rlhfkit.data.schema import Rating

    # a preference file read as ratings: each prompt's winner and loser side by side
    ratings = [Rating(f"q{i}", f"{kind}{i}", label) for i in range(5) for kind, label in (("w", "good"), ("l", "bad"))]
    partner = mismatched(ratings, seed=0)
    assert all(ratings[j].prompt != r.prompt for r, j in zip(ratings, partner))
    assert len(set(partner)) > 5 and partner != mismatched(ratings, seed=1)
    with pytest.raises(ValueError, match="2 different prompts"):
        mismatched(ratings[:2], seed=0)


def test_dpo_bad_settings_exit_2(tmp_path):
    for bad, says in [
        (["beta=0"], "beta must be > 0"),
        (["loss=robust", "label_smoothing=0.5"], "label_smoothing < 0.5"),
        (["loss=hinge"], "loss"),
    ]:
        res = runner.invoke(app, ["dpo", "model=x", "train_file=t.jsonl", *bad])
        assert res.exit_code == 2 and says in res.output, (bad, res.output)
