"""SFT on a tiny model: it learns, and the result does not depend on how the work is split or interrupted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rlhfkit.cli import app
from rlhfkit.data.prompts import format_prompt
from rlhfkit.models.load import load_tokenizer
from tests.conftest import QA, assert_sharded_in_halves, losses, torchrun

runner = CliRunner()
FAST = ["max_steps=12", "learning_rate=3e-3", "batch_size=8", "logging_steps=1", "gold_metrics=false", "seed=3"]


def sft(*overrides: str) -> None:
    result = runner.invoke(app, ["sft", *overrides])
    assert result.exit_code == 0, result.output + repr(result.exception)


def final_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def assert_same_weights(a: Path, b: Path, *, atol: float) -> None:
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=atol, msg=k)


@pytest.mark.slow
def test_sft_memorises_eight_answers_and_generate_reproduces_them(tiny_lm, qa_file, tmp_path):
    out = tmp_path / "sft"
    sft(
        f"model={tiny_lm}",
        f"train_file={qa_file}",
        f"eval_file={qa_file}",
        f"output_dir={out}",
        "max_steps=150",
        "learning_rate=3e-3",
        "batch_size=8",
        "logging_steps=10",
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_exact_match"] == 1.0
    assert metrics["eval_token_f1"] == 1.0 and metrics["eval_rouge_l"] == 1.0
    rows = losses(out)
    assert rows[-1] < 0.05 < rows[0]  # learned, from a clearly higher start

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": q}) + "\n" for q, _ in QA))
    samples = tmp_path / "samples.jsonl"
    result = runner.invoke(
        app,
        [
            "generate",
            "--model",
            str(out),
            "--prompts",
            str(prompts),
            "--out",
            str(samples),
            "--temperature",
            "0",
            "--num-samples",
            "2",
            "--max-new-tokens",
            "32",
        ],
    )
    assert result.exit_code == 0, result.output
    got = [json.loads(line) for line in samples.read_text().splitlines()]
    assert [g["prompt"] for g in got] == [q for q, _ in QA]
    assert [g["responses"] for g in got] == [[a, a] for _, a in QA]  # exactly, character for character
    # the written config reproduces the run's settings
    assert "max_steps: 150" in (out / "config.yaml").read_text()


def test_sft_loss_falls_with_lora_and_saves_merged_model(tiny_lm, qa_file, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    # A random base gives the attention/MLP adapters near-zero gradients; adapting lm_head too makes it learnable.
    targets = "lora.target_modules=q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head"
    sft(
        f"model={tiny_lm}",
        f"train_file={qa_file}",
        f"output_dir={out}",
        "lora.r=8",
        "lora.alpha=16",
        targets,
        "max_steps=40",
        "learning_rate=1e-2",
        "batch_size=8",
        "logging_steps=5",
        "gold_metrics=false",
        "system_prompt=Answer for the help desk.",
    )
    rows = losses(out)
    assert rows[-1] < 0.5 * rows[0]
    # the system message it trained with is the saved model's default
    assert format_prompt(load_tokenizer(str(out)), "HR?") == "Answer for the help desk.\n\nUser: HR?\nAssistant: "
    model = AutoModelForCausalLM.from_pretrained(out)  # a plain model: adapters merged
    assert not any("lora" in name for name, _ in model.named_parameters())
    base = AutoModelForCausalLM.from_pretrained(tiny_lm)
    changed = [n for (n, p), (_, q) in zip(model.named_parameters(), base.named_parameters()) if not torch.equal(p, q)]
    assert changed and all("proj" in n or "lm_head" in n for n in changed)


def test_grad_accum_1x8_equals_8x1(tiny_lm, qa_file, tmp_path):
    a, b = tmp_path / "accum1", tmp_path / "accum8"
    sft(f"model={tiny_lm}", f"train_file={qa_file}", f"output_dir={a}", "grad_accum=1", *FAST)
    sft(f"model={tiny_lm}", f"train_file={qa_file}", f"output_dir={b}", "grad_accum=8", *FAST)
    assert losses(a) == pytest.approx(losses(b), rel=0, abs=1e-5)
    assert_same_weights(a, b, atol=1e-5)


def test_packed_equals_padded(tiny_lm, qa_file, tmp_path):
    a, b = tmp_path / "packed", tmp_path / "padded"
    sft(f"model={tiny_lm}", f"train_file={qa_file}", f"output_dir={a}", "packing=true", *FAST)
    sft(f"model={tiny_lm}", f"train_file={qa_file}", f"output_dir={b}", "packing=false", *FAST)
    assert losses(a) == pytest.approx(losses(b), rel=0, abs=1e-5)
    assert_same_weights(a, b, atol=1e-5)


def test_resume_equals_uninterrupted(tiny_lm, qa_file, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    common = [f"model={tiny_lm}", f"train_file={qa_file}", "save_steps=4", "grad_accum=2", *FAST]
    sft(f"output_dir={full}", *common)
    # "interrupt": run the same job, then throw away everything after the step-4 checkpoint
    sft(f"output_dir={part}", *common)
    ckpts = part / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-4", "step-8"]  # save_total_limit=2
    shutil.rmtree(ckpts / "step-8")
    (part / "model.safetensors").unlink()
    sft(f"output_dir={part}", "resume=true", *common)
    assert json.loads((part / "metrics.json").read_text())["resumed_from_step"] == 4
    assert losses(part) == pytest.approx(losses(full), rel=0, abs=1e-6)
    assert [json.loads(x)["step"] for x in (part / "metrics.jsonl").read_text().splitlines()] == list(range(1, 13))
    assert_same_weights(full, part, atol=1e-6)


@pytest.mark.slow
def test_two_process_torchrun_equals_one_process(tiny_lm, qa_file, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    common = [f"model={tiny_lm}", f"train_file={qa_file}", "grad_accum=2", "device=cpu", *FAST]
    sft(f"output_dir={one}", *common)
    torchrun("sft", f"output_dir={two}", *common, port=29533)
    assert json.loads((two / "metrics.json").read_text())["world_size"] == 2
    # Same data, same global batch, gradients summed over ranks: equal up to float summation order.
    assert losses(two) == pytest.approx(losses(one), rel=0, abs=1e-4)
    assert_same_weights(one, two, atol=1e-4)


@pytest.fixture(scope="module")
def fsdp_runs(tiny_lm, qa_file, tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """One process (plain), and two processes with distributed=fsdp saving sharded checkpoints every 4 steps."""
    root = tmp_path_factory.mktemp("fsdp")
    common = [f"model={tiny_lm}", f"train_file={qa_file}", "grad_accum=2", "device=cpu", "save_steps=4", *FAST]
    sft(f"output_dir={root / 'one'}", *common)
    torchrun("sft", f"output_dir={root / 'two'}", "distributed=fsdp", *common, port=29541)
    return root / "one", root / "two", common


@pytest.mark.slow
def test_fsdp_on_two_processes_equals_one_process_with_half_the_weights_each(fsdp_runs):
    one, two, _ = fsdp_runs
    assert losses(two) == pytest.approx(losses(one), rel=0, abs=1e-4)
    assert_same_weights(one, two, atol=1e-4)
    assert_sharded_in_halves(one, two)
    assert (two / "checkpoints" / "step-8" / "sharded").is_dir()


@pytest.mark.slow
def test_fsdp_resumes_from_a_sharded_checkpoint_as_if_uninterrupted(fsdp_runs, tmp_path):
    _, two, common = fsdp_runs
    part = tmp_path / "part"
    shutil.copytree(two / "checkpoints", part / "checkpoints")
    shutil.rmtree(part / "checkpoints" / "step-8")
    torchrun("sft", f"output_dir={part}", "distributed=fsdp", "resume=true", *common, port=29542)
    assert json.loads((part / "metrics.json").read_text())["resumed_from_step"] == 4
    assert losses(part) == pytest.approx(losses(two)[4:], rel=0, abs=1e-6)
    assert_same_weights(two, part, atol=1e-6)


@pytest.mark.slow
def test_fsdp_in_bf16_tracks_bf16_autocast_and_keeps_fp32_master_shards(tiny_lm, qa_file, tmp_path):
    """Under fsdp, bf16 is the FSDP mixed-precision policy (bf16 gathers, fp32 gradient reduction), not autocast:
    not the same roundings, so not equal, but the losses track one process under bf16 autocast (measured: within
    0.0013 over 12 steps), the model learns, and the saved weights are the fp32 master weights."""
    from safetensors.torch import load_file

    one, two = tmp_path / "one", tmp_path / "two"
    common = [f"model={tiny_lm}", f"train_file={qa_file}", "device=cpu", "mixed_precision=bf16", *FAST]
    sft(f"output_dir={one}", *common)
    torchrun("sft", f"output_dir={two}", "distributed=fsdp", *common, port=29545)
    assert json.loads((two / "metrics.json").read_text())["mixed_precision"] == "bf16"
    assert losses(two) == pytest.approx(losses(one), rel=1e-2, abs=0)
    assert losses(two)[-1] < 0.8 * losses(two)[0]
    weights, start = load_file(str(two / "model.safetensors")), load_file(str(tiny_lm / "model.safetensors"))
    assert all(w.dtype == torch.float32 for w in weights.values())
    assert any(not torch.equal(weights[k], start[k]) for k in start)


def test_bf16_mixed_precision_keeps_fp32_master_weights_so_small_updates_land(tiny_lm, qa_file, tmp_path):
    """At lr 1e-5 an AdamW step moves a weight by ~1e-5, below bf16's resolution for weights ~0.02-0.2: stepped in
    bf16, most weights would never change. Master weights are fp32; bf16 is only the compute type."""
    out = tmp_path / "bf16"
    sft(
        f"model={tiny_lm}",
        f"train_file={qa_file}",
        f"output_dir={out}",
        "mixed_precision=bf16",
        "max_steps=10",
        "learning_rate=1e-5",
        "warmup_ratio=0",
        "batch_size=8",
        "gold_metrics=false",
    )
    trained, base = final_weights(out), final_weights(tiny_lm)
    assert all(w.dtype == torch.float32 for w in trained.values())
    # embedding rows of tokens the data never uses get no gradient: count the layers' weights
    layers = [k for k in base if "embed" not in k and "lm_head" not in k]
    changed = sum(int((trained[k] != base[k]).sum()) for k in layers)
    total = sum(base[k].numel() for k in layers)
    assert changed / total > 0.99, changed / total
    assert json.loads((out / "metrics.json").read_text())["mixed_precision"] == "bf16"
