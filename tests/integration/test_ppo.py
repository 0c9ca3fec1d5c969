"""PPO on a tiny model: the reward rises while the KL stays bounded; sampler == HF generate; resume; diagnostics.

The SFT policy answers each of 8 questions two ways, plainly or with " Thank you for asking!", so it starts with
a reward near 0.5 and PPO must shift probability towards the thanking answers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rlhfkit.cli import app
from tests.conftest import QA, ROOT, metric_rows, torchrun

runner = CliRunner()
THANKS = " Thank you for asking!"


def invoke(*args: str) -> None:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, res.output + repr(res.exception)


@pytest.fixture(scope="module")
def ppo_setup(tmp_path_factory):
    from rlhfkit.models.tiny import build_tiny_causal_lm

    root = tmp_path_factory.mktemp("ppo")
    texts = [t for qa in QA for t in qa] * 8 + [THANKS] * 8
    base = build_tiny_causal_lm(root / "base", texts, vocab_size=300, hidden=64, layers=2)
    # three plain answers for each thanking one: the SFT policy thanks about a quarter of the time
    sft_rows = [{"prompt": q, "completion": a} for q, a in QA * 3] + [
        {"prompt": q, "completion": a + THANKS} for q, a in QA
    ]
    (root / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sft_rows))
    (root / "prompts.jsonl").write_text("".join(json.dumps({"prompt": q}) + "\n" for q, _ in QA * 4))
    invoke(
        "sft",
        f"model={base}",
        f"train_file={root / 'sft.jsonl'}",
        f"output_dir={root / 'sft'}",
        "max_steps=150",
        "learning_rate=3e-3",
        "batch_size=16",
        "gold_metrics=false",
    )
    return root


PPO = [
    "total_episodes=960",
    "batch_size=16",
    "minibatch_size=8",
    "max_new_tokens=48",
    "learning_rate=1e-4",
    "temperature=1.0",
    "kl_coef=0.1",
    "kl_horizon=640",
]


def thanks_run(root: Path, out: Path) -> list[str]:
    """Settings of a PPO run from the SFT policy against the rule-based "thanks" reward."""
    return [
        f"policy={root / 'sft'}",
        "reward_fn=tests.integration.ppo_rewards:thanks",
        f"prompts_file={root / 'prompts.jsonl'}",
        f"output_dir={out}",
    ]


SHORT = ["batch_size=16", "minibatch_size=8", "max_new_tokens=24", "learning_rate=1e-4"]  # a few quick iterations


def assert_same_rows(a: Path, b: Path, keys: tuple[str, ...]) -> None:
    for ra, rb in zip(metric_rows(a), metric_rows(b), strict=True):
        for k in keys:
            if isinstance(ra[k], str):  # "nan" (metrics.jsonl spells NaN/inf as strings): equal means the same
                assert rb[k] == ra[k], (ra["step"], k)
            else:
                assert rb[k] == pytest.approx(ra[k], rel=0, abs=1e-5), (ra["step"], k)


def assert_reward_rose_with_bounded_kl(out: Path) -> dict:
    """The "thanks" reward (the share of answers that thank) rose, to a level the SFT policy (about a quarter)
    never reaches, while the KL stayed bounded."""
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["reward_last_tenth"] > summary["reward_first_tenth"] + 0.15
    assert summary["reward_last_tenth"] > 0.75
    assert summary["kl_last_tenth"] < 3.0  # target / coefficient keep it near 1, not drifting away
    return summary


# questions PPO never rolled out on (the policy learned the eight of QA)
HELD_OUT = [
    "Where is Finance in Boston?",
    "How many sick days do I get?",
    "Where is the mail room?",
    "Who approves expenses?",
    "When does the office open?",
    "Where can I eat lunch?",
    "How do I book a room?",
    "Who is my manager?",
]


def thanks_rate(model_dir: Path, questions: list[str]) -> float:
    """Share of 4 sampled answers per question (temperature 1) that thank the asker."""
    from rlhfkit.models.generate import generate_answers
    from rlhfkit.models.load import load_causal_lm, load_tokenizer

    answers = generate_answers(
        load_causal_lm(str(model_dir), device="cpu"),
        load_tokenizer(str(model_dir), padding_side="left"),
        questions,
        num_samples=4,
        temperature=1.0,
        max_new_tokens=48,
        seed=0,
    )
    return sum("Thank you" in a for group in answers for a in group) / (4 * len(questions))


@pytest.mark.slow
def test_ppo_raises_a_rule_based_reward_with_bounded_kl(ppo_setup, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    root = ppo_setup
    out = root / "ppo_fn"
    invoke("ppo", *thanks_run(root, out), "target_kl=1.0", *PPO)
    summary = assert_reward_rose_with_bounded_kl(out)
    assert summary["reward_last_tenth"] > 0.75
    metrics = metric_rows(out)
    assert len(metrics) == 60
    required = {
        "episodes",
        "reward_mean",
        "kl",
        "kl_coef",
        "entropy",
        "clipfrac",
        "approx_kl",
        "value_explained_variance",
        "response_length",
        "time_generation",
        "time_scoring",
        "time_update",
    }
    assert all(required <= r.keys() for r in metrics)
    assert metrics[-1]["episodes"] == 960 and metrics[-1]["kl_coef"] != 0.1  # adaptive control moved beta
    # the saved policy is a plain model directory, and it now thanks more often, also on questions it never saw
    # (measured: 0.19 for the SFT policy on those, 0.47 after PPO)
    assert thanks_rate(out, [q for q, _ in QA]) > 0.7
    sft_rate = thanks_rate(root / "sft", HELD_OUT)
    assert thanks_rate(out, HELD_OUT) >= max(0.35, 2 * sft_rate), sft_rate


def thanks_reward_model(root: Path) -> Path:
    """A reward model taught that thanking answers are better (trained once per module)."""
    if not (root / "rm" / "reward_stats.json").exists():
        pairs = [{"prompt": q, "chosen": a + THANKS, "rejected": a} for q, a in QA] * 2
        (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
        invoke(
            "reward",
            "train",
            f"model={root / 'sft'}",
            f"train_file={root / 'pairs.jsonl'}",
            f"output_dir={root / 'rm'}",
            "max_steps=30",
            "learning_rate=1e-3",
            "batch_size=8",
            "tie_model=none",
        )
    return root / "rm"


def test_best_of_n_beats_one_sample_on_reward(ppo_setup):
    """No training: 8 samples per question, the reward model keeps the best; its answers score higher than one
    sample's and thank more often (the SFT policy thanks about a quarter of the time)."""
    root = ppo_setup
    rm = thanks_reward_model(root)
    common = ["generate", "--model", str(root / "sft"), "--prompts", str(root / "prompts.jsonl"), "--temperature", "1"]
    invoke(*common, "--out", str(root / "best.jsonl"), "--best-of", "8", "--reward-model", str(rm))
    invoke(*common, "--out", str(root / "one.jsonl"))
    invoke("reward", "score", "--model", str(rm), "--in", str(root / "one.jsonl"), "--out", str(root / "one_s.jsonl"))
    best = [json.loads(x) for x in (root / "best.jsonl").read_text().splitlines()]
    one = [json.loads(x) for x in (root / "one_s.jsonl").read_text().splitlines()]
    assert all(len(r["responses"]) == 1 and len(r["candidate_scores"]) == 8 for r in best)
    assert all(r["scores"][0] in r["candidate_scores"] for r in best)
    # each kept answer is the one its score belongs to: scored again on its own, it gets the same score
    invoke("reward", "score", "--model", str(rm), "--in", str(root / "best.jsonl"), "--out", str(root / "again.jsonl"))
    again = [json.loads(x) for x in (root / "again.jsonl").read_text().splitlines()]
    assert [r["scores"][0] for r in again] == pytest.approx([r["scores"][0] for r in best], abs=1e-5)
    mean = lambda rows: sum(r["scores"][0] for r in rows) / len(rows)  # noqa: E731
    assert mean(best) > mean(one) + 0.5
    thanked = lambda rows: sum("Thank you" in r["responses"][0] for r in rows) / len(rows)  # noqa: E731
    assert thanked(best) > max(0.8, thanked(one) + 0.3)
    res = runner.invoke(app, [*common, "--out", str(root / "x.jsonl"), "--best-of", "4"])
    assert res.exit_code == 2 and "--reward-model" in res.output


def test_ppo_raises_a_reward_model_score(ppo_setup):
    root = ppo_setup
    thanks_reward_model(root)
    out = root / "ppo_rm"
    invoke(
        "ppo",
        f"policy={root / 'sft'}",
        f"reward_model={root / 'rm'}",
        f"prompts_file={root / 'prompts.jsonl'}",
        f"output_dir={out}",
        "target_kl=1.0",
        *PPO,
    )
    summary = json.loads((out / "metrics.json").read_text())
    # scores are in units of the reward model's training spread (reward_stats.json)
    assert summary["reward_last_tenth"] > summary["reward_first_tenth"] + 0.3
    assert summary["kl_last_tenth"] < 3.0
    # what the reward model was taught: thanking answers, on the training questions and on unseen ones
    assert thanks_rate(out, [q for q, _ in QA]) > 0.7
    assert thanks_rate(out, HELD_OUT) >= max(0.35, 2 * thanks_rate(root / "sft", HELD_OUT))


def test_sampler_greedy_equals_hf_generate(ppo_setup):
    from rlhfkit.data.collate import pad_left
    from rlhfkit.data.prompts import encode_prompt
    from rlhfkit.models.load import load_causal_lm, load_tokenizer
    from rlhfkit.models.sampler import sample

    root = ppo_setup
    tok = load_tokenizer(str(root / "sft"), padding_side="left")
    model = load_causal_lm(str(root / "sft"), device="cpu").eval()
    prompts = [encode_prompt(tok, q) for q, _ in QA] + [encode_prompt(tok, "hi")]  # lengths differ: left padding
    query, mask = pad_left(prompts, pad_id=tok.pad_token_id, device="cpu")
    ours = sample(
        model, query, mask, max_new_tokens=40, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, temperature=0.0
    )
    hf = model.generate(
        input_ids=query,
        attention_mask=mask,
        max_new_tokens=40,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )[:, query.size(1) :]
    assert ours.tokens.shape == hf.shape
    assert torch.equal(ours.tokens, hf)

    # the sampler's logprobs (greedy, and sampled with temperature and top-p) are those of a full forward pass over
    # prompt + response, under logits / temperature
    from rlhfkit.ops import logprobs_from_logits

    sampled = sample(
        model,
        query,
        mask,
        max_new_tokens=20,
        eos_id=tok.eos_token_id,
        pad_id=tok.pad_token_id,
        temperature=0.7,
        top_p=0.9,
        generator=torch.Generator().manual_seed(0),
    )
    for run, temperature in ((ours, 1.0), (sampled, 0.7)):
        qr = torch.cat([query, run.tokens], dim=1)
        am = torch.cat([mask, run.mask], dim=1)
        with torch.no_grad():
            logits = model(input_ids=qr, attention_mask=am, position_ids=(am.cumsum(1) - 1).clamp(min=0)).logits
        full = logprobs_from_logits(logits[:, query.size(1) - 1 : -1], run.tokens, temperature=temperature) * run.mask
        torch.testing.assert_close(run.logprobs, full, rtol=0, atol=1e-5)


def test_ppo_resume_equals_uninterrupted(ppo_setup, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    root = ppo_setup
    common = [*SHORT, "total_episodes=96", "save_steps=3", "grad_accum=2", "target_kl=1.0"]
    full, part = root / "full", root / "part"
    invoke("ppo", *thanks_run(root, full), *common)
    invoke("ppo", *thanks_run(root, part), *common)
    # the final model is written at the end, never as a checkpoint: only step-3 is there to resume from
    assert [p.name for p in (part / "checkpoints").iterdir()] == ["step-3"]
    (part / "model.safetensors").unlink()
    invoke("ppo", *thanks_run(root, part), "resume=true", *common)
    assert json.loads((part / "metrics.json").read_text())["resumed_from_step"] == 3
    assert [r["step"] for r in metric_rows(part)] == list(range(1, 7))
    assert_same_rows(full, part, ("reward_mean", "kl", "kl_coef", "clipfrac", "pg_loss", "vf_loss"))


@pytest.mark.slow
def test_ppo_with_lora_uses_the_base_as_reference_and_learns(ppo_setup, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    root = ppo_setup
    out = root / "ppo_lora"
    lora = ["lora.r=16", "lora.alpha=32", "learning_rate=5e-4"]
    invoke("ppo", *thanks_run(root, out), *[x for x in PPO if not x.startswith("learning_rate")], *lora)
    # adapters start at zero: the policy is exactly its reference (the base with adapters off) at first
    assert abs(metric_rows(out)[0]["kl"]) < 1e-4
    # and stays the base: once the adapters learn, the policy moves away from it
    assert max(r["kl"] for r in metric_rows(out)[1:]) > 0.05
    assert_reward_rose_with_bounded_kl(out)
    assert not list(out.glob("adapter_*"))  # merged on save: a plain model directory


@pytest.mark.slow
@pytest.mark.parametrize("advantage", ["grpo", "rloo", "reinforce_pp"])
def test_critic_free_advantages_raise_the_reward_with_bounded_kl_and_no_critic(ppo_setup, monkeypatch, advantage):
    """GRPO and RLOO (4 answers per prompt) and REINFORCE++ learn to thank without a critic: none is built (the
    loader raises if asked) and none is logged."""
    import rlhfkit.algorithms.ppo as ppo_module

    def no_critic(*args, **kwargs):
        raise AssertionError("a critic-free run loaded a critic")

    monkeypatch.setattr(ppo_module, "load_value_model", no_critic)
    monkeypatch.syspath_prepend(str(ROOT))
    root = ppo_setup
    out = root / f"ppo_{advantage}"
    groups = [] if advantage == "reinforce_pp" else ["num_generations=4"]
    # a smaller step than PPO's (its learning_rate 1e-4 reaches 0.8 within 5 iterations here): the rise then spans
    # the run instead of happening inside its first tenth
    slower = [*(x for x in PPO if not x.startswith("learning_rate")), "learning_rate=2e-5"]
    invoke("ppo", *thanks_run(root, out), f"advantage={advantage}", *groups, *slower)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["reward_last_tenth"] >= 1.5 * summary["reward_first_tenth"] > 0
    assert summary["reward_last_tenth"] > 0.6
    assert summary["kl_last_tenth"] < 3.0
    rows = metric_rows(out)
    assert not any("value_explained_variance" in r or "vf_loss" in r for r in rows)
    assert ("kl_loss" in rows[0]) == (advantage == "grpo")  # GRPO's KL is a loss term, the others' in the reward
    assert thanks_rate(out, [q for q, _ in QA]) > 0.6


def test_grpo_samples_num_generations_answers_per_prompt_side_by_side(ppo_setup, monkeypatch):
    """A rollout of batch_size=16 with num_generations=4 holds 4 prompts, each 4 times side by side (the groups
    group_advantages compares), and successive rollouts draw other prompts."""
    import rlhfkit.algorithms.ppo as ppo_module

    seen = []
    real = ppo_module.score_rollout

    def spy(samples, query, query_mask, **kw):
        seen.append(kw["prompts"])
        return real(samples, query, query_mask, **kw)

    monkeypatch.setattr(ppo_module, "score_rollout", spy)
    monkeypatch.syspath_prepend(str(ROOT))
    root = ppo_setup
    out = root / "grpo_groups"
    invoke("ppo", *thanks_run(root, out), "advantage=grpo", "num_generations=4", "total_episodes=32", *SHORT)
    assert len(seen) == 2
    for prompts in seen:
        groups = [prompts[i : i + 4] for i in range(0, 16, 4)]
        assert len(prompts) == 16 and all(len(set(g)) == 1 for g in groups)
    assert seen[0] != seen[1]


def test_critic_free_settings_are_checked():
    for bad, says in [
        (["advantage=grpo"], "num_generations >= 2"),
        (["advantage=rloo", "num_generations=1"], "num_generations >= 2"),
        (["advantage=grpo", "num_generations=3"], "multiple of num_generations"),
    ]:
        res = runner.invoke(app, ["ppo", "policy=x", "reward_fn=m:f", "prompts_file=p.jsonl", "batch_size=16", *bad])
        assert res.exit_code == 2 and says in res.output, (bad, res.output)


@pytest.mark.slow
def test_ppo_with_two_torchrun_processes_learns(ppo_setup, tmp_path):
    """Each process samples half of every batch; gradients of policy and critic are averaged across them."""
    root = ppo_setup
    out = tmp_path / "two"
    torchrun("ppo", *thanks_run(root, out), "target_kl=1.0", "device=cpu", *PPO, port=29541)
    assert assert_reward_rose_with_bounded_kl(out)["world_size"] == 2


@pytest.fixture(scope="module")
def fsdp_ppo_runs(ppo_setup) -> tuple[Path, Path, list[str]]:
    """Two processes with ddp and two with distributed=fsdp on the same settings (fp32, full fine-tuning: policy,
    critic and reference are all sharded), the fsdp run checkpointing every 2 iterations."""
    root = ppo_setup
    common = [*SHORT, "total_episodes=96", "target_kl=1.0", "device=cpu", "save_steps=2"]
    ddp, fsdp = root / "ddp2", root / "fsdp2"
    torchrun("ppo", *thanks_run(root, ddp), *common, port=29551)
    torchrun("ppo", *thanks_run(root, fsdp), "distributed=fsdp", *common, port=29552)
    return ddp, fsdp, common


PPO_METRICS = ("reward_mean", "score_mean", "kl", "kl_coef", "pg_loss", "vf_loss", "clipfrac", "approx_kl")


def assert_rows_within(a: Path, b: Path, keys: tuple[str, ...], *, atol: float) -> None:
    ra, rb = metric_rows(a), metric_rows(b)
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    for x, y in zip(ra, rb):
        for k in keys:
            assert y[k] == pytest.approx(x[k], rel=0, abs=atol), (x["step"], k, x[k], y[k])


@pytest.mark.slow
def test_ppo_fsdp_on_two_processes_equals_ddp_with_half_the_weights_each(fsdp_ppo_runs):
    """Sharding changes where the weights live, not the numbers. Against ddp on the same two processes, not one
    process: PPO's processes sample and whiten their own half of each batch (as TRL's do), so two processes are not
    one process with twice the batch. Each fsdp process holds about half of the policy, critic and reference, the
    rollout gathered the policy in full (else its samples, and so every metric, would differ), and the saved model
    is the trained one."""
    from safetensors.torch import load_file

    ddp, fsdp, _ = fsdp_ppo_runs
    assert_rows_within(ddp, fsdp, PPO_METRICS, atol=1e-4)
    held_ddp = json.loads((ddp / "metrics.json").read_text())
    held = json.loads((fsdp / "metrics.json").read_text())
    assert held_ddp["distributed"] == "ddp" and held["distributed"] == "fsdp" and held["world_size"] == 2
    whole = held_ddp["parameters_per_process"]
    assert len(whole) == 2 and whole[0] == whole[1]
    assert sum(held["parameters_per_process"]) == whole[0]
    assert all(0.4 * whole[0] < n <= 0.6 * whole[0] for n in held["parameters_per_process"]), held
    a, b = load_file(str(ddp / "model.safetensors")), load_file(str(fsdp / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=1e-4) for k in a)
    start = load_file(str(fsdp.parent / "sft" / "model.safetensors"))
    assert any(not torch.equal(b[k], start[k]) for k in start)  # it trained


@pytest.mark.slow
def test_ppo_fsdp_resumes_from_a_sharded_checkpoint_as_if_uninterrupted(fsdp_ppo_runs, tmp_path):
    _, fsdp, common = fsdp_ppo_runs
    part = tmp_path / "part"
    assert sorted(p.name for p in (fsdp / "checkpoints").iterdir()) == ["step-2", "step-4"]
    shutil.copytree(fsdp / "checkpoints" / "step-2", part / "checkpoints" / "step-2")
    assert (part / "checkpoints" / "step-2" / "sharded").is_dir()
    root = fsdp.parent
    torchrun("ppo", *thanks_run(root, part), "distributed=fsdp", "resume=true", *common, port=29553)
    assert json.loads((part / "metrics.json").read_text())["resumed_from_step"] == 2
    assert metric_rows(part) and [r["step"] for r in metric_rows(part)] == [3, 4, 5, 6]
    tail = [r for r in metric_rows(fsdp) if r["step"] > 2]
    for x, y in zip(tail, metric_rows(part), strict=True):
        for k in PPO_METRICS:
            assert y[k] == pytest.approx(x[k], rel=0, abs=1e-6), (x["step"], k)


@pytest.mark.slow
def test_ppo_fsdp_with_lora_in_bf16_starts_at_zero_kl_and_learns(ppo_setup, tmp_path):
    """LoRA over sharded weights in bf16 (the FSDP mixed-precision policy): the reference is the sharded base with
    its adapters off, so the first iteration's KL is exactly 0; the reward rises; the saved model is merged."""
    root, out = ppo_setup, tmp_path / "lora"
    settings = [*SHORT, "total_episodes=64", "learning_rate=1e-3", "lora.r=8", "mixed_precision=bf16", "device=cpu"]
    torchrun("ppo", *thanks_run(root, out), "distributed=fsdp", *settings, port=29554)
    rows, summary = metric_rows(out), json.loads((out / "metrics.json").read_text())
    assert summary["distributed"] == "fsdp" and summary["mixed_precision"] == "bf16"
    assert rows[0]["kl"] == 0.0 and rows[-1]["kl"] > 0.0
    assert summary["reward_last_tenth"] > summary["reward_first_tenth"] + 0.3, summary
    held = summary["parameters_per_process"]
    assert all(0.4 * sum(held) < n <= 0.6 * sum(held) for n in held), held
    assert (out / "model.safetensors").exists() and not list(out.glob("adapter_*"))


def test_critic_beside_the_policy_equals_one_after_the_other(ppo_setup, monkeypatch):
    """overlap_critic updates the critic on a second thread: the numbers must not change."""
    # with one thread SideBySide runs both on the calling thread: the comparison would be of one path with itself
    assert torch.get_num_threads() >= 2, "this test needs two threads (OMP_NUM_THREADS >= 2)"
    monkeypatch.syspath_prepend(str(ROOT))
    root = ppo_setup
    invoke("ppo", *thanks_run(root, root / "beside"), "overlap_critic=true", "total_episodes=48", *SHORT)
    invoke("ppo", *thanks_run(root, root / "inline"), "overlap_critic=false", "total_episodes=48", *SHORT)
    keys = ("reward_mean", "kl", "clipfrac", "pg_loss", "vf_loss", "value_explained_variance")
    assert_same_rows(root / "beside", root / "inline", keys)


def test_gradient_checkpointing_changes_memory_not_numbers(ppo_setup, monkeypatch):
    """Recomputing activations in the backward pass (policy and critic, LoRA on both) gives the same run."""
    monkeypatch.syspath_prepend(str(ROOT))
    root = ppo_setup
    common = ["total_episodes=48", "lora.r=8", "overlap_critic=false", *SHORT]
    invoke("ppo", *thanks_run(root, root / "ckpt_on"), "gradient_checkpointing=true", *common)
    invoke("ppo", *thanks_run(root, root / "ckpt_off"), "gradient_checkpointing=false", *common)
    keys = ("reward_mean", "kl", "clipfrac", "pg_loss", "vf_loss", "value_explained_variance")
    assert_same_rows(root / "ckpt_on", root / "ckpt_off", keys)
    assert max(abs(r["pg_loss"]) for r in metric_rows(root / "ckpt_on")) > 0  # the update did something
    # and the setting reaches the models (under peft too), so the comparison above is of two different paths
    from rlhfkit.config import LoraSettings
    from rlhfkit.models.load import checkpoint_activations, load_causal_lm
    from rlhfkit.models.value import load_value_model

    def checkpointing(m) -> bool:  # the property's name as the installed transformers spells it
        new = hasattr(type(m), "is_activation_checkpointing")
        return m.is_activation_checkpointing if new else m.is_gradient_checkpointing

    policy = checkpoint_activations(load_causal_lm(str(root / "sft"), device="cpu", lora=LoraSettings(r=8)))
    assert checkpointing(policy.get_base_model())
    critic = load_value_model(str(root / "sft"), pad_token_id=0, device="cpu", gradient_checkpointing=True)
    assert checkpointing(critic.backbone)


def test_nan_reward_stops_with_a_clear_error_and_keeps_the_checkpoint(ppo_setup, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT))
    root = ppo_setup
    res = runner.invoke(
        app,
        [
            "ppo",
            f"policy={root / 'sft'}",
            "reward_fn=tests.integration.ppo_rewards:broken",
            f"prompts_file={root / 'prompts.jsonl'}",
            f"output_dir={tmp_path / 'o'}",
            "total_episodes=32",
            "batch_size=16",
            "minibatch_size=16",
            "max_new_tokens=8",
        ],
    )
    assert res.exit_code == 1 and "NaN/inf at iteration 1" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o" / "model.safetensors").exists()


def test_ppo_bad_settings_exit_2(ppo_setup):
    root = ppo_setup
    res = runner.invoke(app, ["ppo", f"policy={root / 'sft'}", f"prompts_file={root / 'prompts.jsonl'}"])
    assert res.exit_code == 2 and "exactly one of reward_model" in res.output
    res = runner.invoke(
        app,
        [
            "ppo",
            f"policy={root / 'sft'}",
            "reward_fn=nope:f",
            f"prompts_file={root / 'prompts.jsonl'}",
            "output_dir=/tmp/x",
        ],
    )
    assert res.exit_code == 2 and "cannot import 'nope'" in res.output
    res = runner.invoke(
        app,
        [
            "ppo",
            f"policy={root / 'sft'}",
            "reward_fn=x:y",
            f"prompts_file={root / 'prompts.jsonl'}",
            "distributed=fsdp",
            "sampler=hf",
        ],
    )
    assert res.exit_code == 2 and "distributed=fsdp samples with sampler=rlhfkit" in res.output


def wiring(ppo_setup, *, mixed_precision: str = "fp32", max_new_tokens: int = 24, **settings):
    """A rollout scored by the PPO building blocks as `train` wires them, on the tiny SFT policy: 16 prompts, the
    "thanks" reward, a separate reference with the policy's weights. Returns (acc, policy, critic, samples,
    rollout, context, cfg)."""
    from contextlib import nullcontext

    from rlhfkit.algorithms.ppo import score_rollout
    from rlhfkit.config import PPOConfig
    from rlhfkit.data.collate import pad_left
    from rlhfkit.data.prompts import encode_prompt
    from rlhfkit.models.load import load_causal_lm, load_tokenizer
    from rlhfkit.models.reward import RewardFunction
    from rlhfkit.models.sampler import sample
    from rlhfkit.models.value import load_value_model
    from rlhfkit.runtime.dist import autocast, compute_dtype, make_accelerator
    from tests.integration.ppo_rewards import thanks

    sft = str(ppo_setup / "sft")
    cfg = PPOConfig(policy=sft, reward_fn="x:y", prompts_file="p", minibatch_size=8, temperature=0.7, **settings)
    acc = make_accelerator(device="cpu", mixed_precision=mixed_precision)
    tok = load_tokenizer(sft, padding_side="left")
    policy = load_causal_lm(sft, dtype="float32", device="cpu")
    reference = load_causal_lm(sft, dtype="float32", device="cpu").eval()
    critic = load_value_model(sft, pad_token_id=tok.pad_token_id, dtype="float32", device="cpu", zero_head=False)
    policy, critic = acc.prepare(policy, critic)
    prompts = [q for q, _ in QA] * 2
    prompt_ids = [encode_prompt(tok, p) for p in prompts]
    query, query_mask = pad_left(prompt_ids, pad_id=tok.pad_token_id)
    samples = sample(
        acc.unwrap_model(policy),
        query,
        query_mask,
        max_new_tokens=max_new_tokens,
        eos_id=tok.eos_token_id,
        pad_id=tok.pad_token_id,
        temperature=0.7,
        generator=torch.Generator().manual_seed(0),
        dtype=compute_dtype(acc.mixed_precision),
    )
    with autocast(acc):
        rollout = score_rollout(
            samples,
            query,
            query_mask,
            policy=policy,
            reference=lambda: nullcontext(reference),
            critic=critic,
            reward=RewardFunction(thanks, tok),
            prompts=prompts,
            prompt_ids=prompt_ids,
            tokenizer=tok,
            cfg=cfg,
            chunk=8,
            reward_stats=None,
        )
    return acc, policy, critic, samples, rollout, query.size(1), cfg


@pytest.mark.parametrize("mixed_precision", ["fp32", "bf16"])
def test_before_any_update_the_ratio_is_one_and_the_kl_zero(ppo_setup, mixed_precision):
    """Old, reference and new logprobs come from one computation (the same forward under the same autocast, cast
    to fp32, then divided by the temperature): on the first minibatch of the first epoch the ratio is exactly 1,
    with the reference holding the same weights the KL is exactly 0, and the critic's rollout values are the
    values its update starts from. In bf16 the sampler's own logprobs differ from a full forward pass."""
    from rlhfkit.algorithms.ppo import policy_loss, response_logprobs, response_values, shuffled_minibatches
    from rlhfkit.runtime.dist import autocast

    acc, policy, critic, samples, rollout, context, cfg = wiring(ppo_setup, mixed_precision=mixed_precision)
    mask = rollout.response_mask.float()
    assert torch.equal(rollout.logprobs, rollout.ref_logprobs)  # KL exactly 0
    if mixed_precision == "fp32":  # and they are the sampled tokens' logprobs (the sampler computes them apart)
        torch.testing.assert_close(rollout.logprobs, samples.logprobs * mask, rtol=0, atol=1e-5)
    first = shuffled_minibatches(16, 8, iteration=0, cfg=cfg)[0]
    with autocast(acc):
        new, _ = response_logprobs(policy, rollout, first, context=context, temperature=0.7)
        assert torch.equal(new * mask[first], rollout.logprobs[first])  # ratio exactly 1
        advantages = torch.randn(mask.shape) * mask
        _, stats = policy_loss(policy, rollout, advantages, first, context=context, cfg=cfg)
        assert stats["clipfrac"].item() == 0.0 and stats["approx_kl"].item() == 0.0
        values = response_values(critic, rollout, first, context=context)
        assert torch.equal(values * mask[first], rollout.values[first])
    if mixed_precision == "bf16":  # what the update would have compared with before: the sampler's logprobs
        assert (samples.logprobs - rollout.logprobs).abs().max() > 1e-3


def test_bf16_ppo_run_starts_at_zero_kl(ppo_setup, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT))
    out = tmp_path / "bf16"
    invoke("ppo", *thanks_run(ppo_setup, out), "mixed_precision=bf16", "total_episodes=32", *SHORT)
    rows = metric_rows(out)
    assert rows[0]["kl"] == 0.0 and len(rows) == 2
    assert json.loads((out / "metrics.json").read_text())["mixed_precision"] == "bf16"


def test_critic_starts_from_the_reward_model_only_when_it_reads_the_policys_tokens(ppo_setup, tmp_path):
    """From the reward model, the critic starts in the units PPO's rewards are in (its head folds the reward
    normalization in); a reward model that cannot read the policy's ids left to right is not a start."""
    from transformers import BertConfig, BertForSequenceClassification

    from rlhfkit.algorithms.ppo import critic_start
    from rlhfkit.config import PPOConfig
    from rlhfkit.data.prompts import encode_prompt
    from rlhfkit.models.load import load_tokenizer, save_model
    from rlhfkit.models.reward import PromptResponseScorer, RewardModelScore, load_reward_model, write_stats
    from rlhfkit.models.value import load_value_model

    sft = str(ppo_setup / "sft")
    tok = load_tokenizer(sft)
    rm_dir = tmp_path / "rm"
    torch.manual_seed(0)
    save_model(load_reward_model(sft, tokenizer=tok, device="cpu"), tok, rm_dir)
    write_stats(rm_dir, mean=0.7, std=2.0, count=10)
    scorer = PromptResponseScorer(load_reward_model(str(rm_dir), tokenizer=tok, device="cpu"), pad_id=tok.pad_token_id)
    prompt = encode_prompt(tok, QA[0][0])
    answer = tok(QA[0][1], add_special_tokens=False).input_ids + [tok.eos_token_id]
    with torch.no_grad():
        score = scorer([prompt], [answer], [0]).item()
        critic = load_value_model(
            str(rm_dir), pad_token_id=tok.pad_token_id, device="cpu", score_stats={"score_mean": 0.7, "score_std": 2.0}
        )
        ids = torch.tensor([prompt + answer])
        values = critic(ids, torch.ones_like(ids), torch.arange(ids.size(1)).unsqueeze(0))
    assert values[0, -1].item() == pytest.approx((score - 0.7) / 2.0, abs=1e-5)

    cfg = PPOConfig(policy=sft, reward_model=str(rm_dir), prompts_file="p")
    assert critic_start(cfg, RewardModelScore(scorer, tok, True)) == (
        str(rm_dir),
        "the reward model reads the policy's tokens",
    )
    src, why = critic_start(cfg, RewardModelScore(scorer, tok, False))
    assert src == sft and "tokenizer differs" in why
    bert = BertForSequenceClassification(
        BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    )
    src, why = critic_start(cfg, RewardModelScore(PromptResponseScorer(bert, pad_id=0), tok, True))
    assert src == sft and "encoder" in why


def test_a_reward_model_with_another_tokenizer_sees_eos_only_after_finished_answers(tiny_lm):
    from rlhfkit.models.load import load_tokenizer
    from rlhfkit.models.reward import Responses, RewardModelScore

    tok = load_tokenizer(str(tiny_lm))
    seen = {}

    def scorer(prompts, answers, owner):
        seen["answers"] = answers
        return torch.zeros(len(answers))

    reward = RewardModelScore(scorer, tok, same_tokenizer=False)
    batch = Responses(
        prompts=["q1", "q2"], prompt_ids=[[], []], ids=[[], []], texts=["25 days", "25 days"], finished=[True, False]
    )
    reward(batch)
    text_ids = tok("25 days", add_special_tokens=False).input_ids
    assert seen["answers"] == [text_ids + [tok.eos_token_id], text_ids]


def test_the_critic_has_its_own_adamw_at_critic_learning_rate(tiny_lm, monkeypatch):
    """setup_models gives the policy and the critic each an AdamW: the critic's steps its own parameters at
    critic_learning_rate (the policy's at learning_rate); unset, the critic's follows learning_rate."""
    from rlhfkit.algorithms.ppo import setup_models
    from rlhfkit.config import PPOConfig
    from rlhfkit.models.load import load_tokenizer
    from rlhfkit.runtime.dist import make_accelerator

    monkeypatch.syspath_prepend(str(ROOT))
    tok = load_tokenizer(str(tiny_lm), padding_side="left")
    settings = dict(policy=str(tiny_lm), reward_fn="tests.integration.ppo_rewards:thanks", prompts_file="p")
    for critic_lr, expected in ((3e-6, 3e-6), (None, 1e-4)):
        cfg = PPOConfig(**settings, learning_rate=1e-4, critic_learning_rate=critic_lr)
        m = setup_models(cfg, make_accelerator(device="cpu"), tok)
        policy_opt, critic_opt = m.optimizers
        assert {g["lr"] for g in policy_opt.param_groups} == {1e-4}
        assert {g["lr"] for g in critic_opt.param_groups} == {expected}
        stepped = {id(p) for g in critic_opt.param_groups for p in g["params"]}
        assert stepped == {id(p) for p in m.critic.parameters() if p.requires_grad}


def test_missing_eos_penalty_defaults_to_the_rewards_units():
    from rlhfkit.config import PPOConfig

    assert PPOConfig(reward_model="rm").eos_penalty == 1.0  # one std of the reward model's normalized scores
    assert PPOConfig(reward_fn="m:f").eos_penalty == 0.0  # unknown scale: off
    assert PPOConfig(reward_fn="m:f", missing_eos_penalty=0.05).eos_penalty == 0.05


def test_missing_eos_penalty_lowers_only_the_answers_cut_at_the_length_limit(ppo_setup):
    from rlhfkit.models.load import load_tokenizer

    *_, samples, rollout, _, cfg = wiring(ppo_setup, max_new_tokens=10, missing_eos_penalty=0.5)
    ended = (samples.tokens == load_tokenizer(str(ppo_setup / "sft")).eos_token_id).any(dim=1)
    assert ended.any() and (~ended).any(), "the test needs both finished and cut answers"
    torch.testing.assert_close(rollout.scores, rollout.raw_scores - 0.5 * (~ended).float(), rtol=0, atol=0)


def test_whitened_rewards_by_hand():
    """whiten_rewards scales the token rewards to unit variance over the response tokens (the mean is kept) before
    GAE; with zero values, gamma 1 and lambda 1 the returns are the sums of the rewards still to come."""
    from rlhfkit.algorithms.ppo import Rollout, advantages_and_returns
    from rlhfkit.config import PPOConfig

    zeros = torch.zeros(2, 2)
    rollout = Rollout(None, None, None, torch.ones(2, 2), zeros, zeros, zeros, torch.tensor([2.0, 4.0]), None)
    cfg = PPOConfig(whiten_rewards=True, gamma=1.0, lam=1.0)
    kl, _, returns = advantages_and_returns(rollout, kl_coef=0.1, cfg=cfg)
    assert torch.equal(kl, zeros)
    # token rewards [[0, 2], [0, 4]]: mean 1.5, unbiased variance 11/3
    std = (11 / 3) ** 0.5
    w = [[(0 - 1.5) / std + 1.5, (2 - 1.5) / std + 1.5], [(0 - 1.5) / std + 1.5, (4 - 1.5) / std + 1.5]]
    expected = torch.tensor([[w[0][0] + w[0][1], w[0][1]], [w[1][0] + w[1][1], w[1][1]]])
    torch.testing.assert_close(returns, expected, rtol=0, atol=1e-6)
    _, _, plain = advantages_and_returns(rollout, kl_coef=0.1, cfg=PPOConfig(gamma=1.0, lam=1.0))
    torch.testing.assert_close(plain, torch.tensor([[2.0, 2.0], [4.0, 4.0]]), rtol=0, atol=0)


@pytest.mark.parametrize("settings", [["sampler=hf"], ["critic_init=policy"]])
def test_ppo_runs_start_at_zero_kl_with_the_hf_sampler_and_a_critic_from_the_policy(
    ppo_setup, monkeypatch, tmp_path, settings
):
    """sampler=hf rolls out with transformers' generate (the scored logprobs still come from the update's own
    forward: KL 0 at the start); critic_init=policy starts the critic from the policy with a zero head even when a
    reward model is given, and says so."""
    import rlhfkit.algorithms.ppo as ppo

    monkeypatch.syspath_prepend(str(ROOT))
    hf_calls, real_hf_sample = [], ppo.hf_sample

    def counted_hf_sample(*args, **kwargs):
        hf_calls.append(1)
        return real_hf_sample(*args, **kwargs)

    monkeypatch.setattr(ppo, "hf_sample", counted_hf_sample)
    pairs = [{"prompt": q, "chosen": a + THANKS, "rejected": a} for q, a in QA]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
    invoke(
        "reward",
        "train",
        f"model={ppo_setup / 'sft'}",
        f"train_file={tmp_path / 'pairs.jsonl'}",
        f"output_dir={tmp_path / 'rm'}",
        "max_steps=2",
        "batch_size=8",
        "tie_model=none",
    )
    out = tmp_path / "ppo"
    output = runner.invoke(
        app,
        [
            "ppo",
            f"policy={ppo_setup / 'sft'}",
            f"reward_model={tmp_path / 'rm'}",
            f"prompts_file={ppo_setup / 'prompts.jsonl'}",
            f"output_dir={out}",
            "total_episodes=32",
            *SHORT,
            *settings,
        ],
    )
    assert output.exit_code == 0, output.output + repr(output.exception)
    rows = metric_rows(out)
    assert rows[0]["kl"] == 0.0 and rows[1]["kl"] != 0.0
    said = " ".join(output.output.split())
    # every rollout of the run (32 episodes, 16 a batch) came from transformers' generate, and only with sampler=hf
    assert len(hf_calls) == (2 if settings == ["sampler=hf"] else 0)
    if settings == ["critic_init=policy"]:
        assert "the critic starts from the policy with a zero head: critic_init=policy" in said
        # a zero head: every value 0, so before any critic update nothing of the return variance is explained
        assert rows[0]["value_explained_variance"] == pytest.approx(0.0, abs=1e-6)
    else:
        assert "critic starts from the policy" not in said


def test_held_out_evaluation_runs_when_asked_and_is_logged(ppo_setup, monkeypatch, tmp_path):
    """eval_every=0 evaluates after the last iteration only; eval_every=2 after the first, every second and the
    last; each result lands in that iteration's metrics row."""
    from rlhfkit.algorithms.ppo import train
    from rlhfkit.config import PPOConfig, load_config

    monkeypatch.syspath_prepend(str(ROOT))
    for every, expected in ((0, [5]), (2, [1, 2, 4, 5])):
        calls: list[int] = []

        def evaluate(iteration: int, policy, calls=calls) -> dict[str, float]:
            assert not policy.training
            calls.append(iteration)
            return {"heldout_probe": float(iteration)}

        out = tmp_path / f"every{every}"
        cfg = load_config(PPOConfig, None, [*thanks_run(ppo_setup, out), *SHORT, "total_episodes=80"])
        train(cfg, evaluate=evaluate, eval_every=every)
        assert calls == expected
        assert [r["step"] for r in metric_rows(out) if "heldout_probe" in r] == expected
