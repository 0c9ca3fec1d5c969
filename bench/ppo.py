"""PPO speed: `rlhf ppo` beside TRL 1.0.0's PPOTrainer (the last TRL with one) on identical tiny models, and our
rollout sampler beside HF `generate`.

usage: python bench/ppo.py [--episodes 1024] [--trl-venv /tmp/venv-trl-ppo]
Models: ../shared/anchors/tiny_models.py (Llama policy and reward model, hidden 128, 4 layers). Settings on both
sides: 16 prompts per batch, 32 new tokens, 4 PPO epochs, one minibatch per batch, lr 1e-5, KL coef 0.05,
temperature 0.7, critic from the reward model, missing-EOS penalty 1. TRL runs ../shared/anchors/trl_ppo.py in its
own venv (made by ../shared/anchors/setup_trl_ppo.sh when missing). Both are timed as whole processes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ANCHORS = Path(__file__).resolve().parents[2] / "shared" / "anchors"
sys.path.insert(0, str(Path(__file__).parent))


def timed(cmd: list[str], **kw) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return seconds, proc.stdout


def sampler_tokens_per_second(policy: Path, *, batch: int, new_tokens: int, repeats: int = 7) -> dict[str, float]:
    import torch

    from rlhfkit.models.load import load_causal_lm, load_tokenizer
    from rlhfkit.models.reward import pad_left
    from rlhfkit.models.sampler import sample

    tok = load_tokenizer(str(policy), padding_side="left")
    model = load_causal_lm(str(policy), device="cpu").eval()
    prompts = [tok(f"where is the hr office in boston {i % 7} please").input_ids for i in range(batch)]
    query, mask = pad_left(prompts, pad_id=tok.pad_token_id, device="cpu")
    # no EOS, so both generate exactly new_tokens for every sequence
    common = dict(max_new_tokens=new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=None)

    def ours():
        return sample(
            model,
            query,
            mask,
            max_new_tokens=new_tokens,
            eos_id=-1,
            pad_id=tok.pad_token_id,
            temperature=0.7,
            generator=torch.Generator().manual_seed(0),
        ).tokens

    def hf():
        return model.generate(
            input_ids=query, attention_mask=mask, do_sample=True, temperature=0.7, top_k=0, top_p=1.0, **common
        )[:, query.size(1) :]

    out = {}
    for name, fn in (("rlhfkit sampler", ours), ("HF generate", hf)):
        assert fn().shape == (batch, new_tokens)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        out[name] = batch * new_tokens / statistics.median(times)
    return out


def decode_matmul_ceiling(policy: Path, *, batch: int, repeats: int = 200) -> float:
    """Tokens/s if a decoding step were nothing but its matmuls (q, k, v, o, gate, up, down per layer and the LM
    head, at this batch size, on random inputs): an upper bound for any eager sampler on this machine."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(policy)
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    qkv = (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * head_dim
    x, h = torch.randn(batch, cfg.hidden_size), torch.randn(batch, cfg.intermediate_size)
    weights = [torch.randn(qkv, cfg.hidden_size), torch.randn(cfg.hidden_size, cfg.num_attention_heads * head_dim)]
    weights += [torch.randn(2 * cfg.intermediate_size, cfg.hidden_size)]
    down, head = torch.randn(cfg.hidden_size, cfg.intermediate_size), torch.randn(cfg.vocab_size, cfg.hidden_size)

    def step():
        for _ in range(cfg.num_hidden_layers):
            for w in weights:
                F.linear(x, w)
            F.linear(h, down)
        F.linear(x, head)

    with torch.inference_mode():
        for _ in range(20):
            step()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
    return batch / statistics.median(times)


def update_flops(models: Path, prompt: str, *, episodes: int, new_tokens: int, ppo_epochs: int) -> float:
    """Matmul FLOPs of the PPO update (policy + critic forward and backward over prompt + response, every epoch),
    counted like the SFT benchmark: the arithmetic both systems must do, whatever their overheads."""
    from common import train_flops_per_token
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    length = len(AutoTokenizer.from_pretrained(models / "policy")(prompt).input_ids) + new_tokens
    policy = AutoModelForCausalLM.from_pretrained(models / "policy")
    critic = AutoModelForSequenceClassification.from_pretrained(models / "reward", num_labels=1)
    per_token = train_flops_per_token(policy, length) + train_flops_per_token(critic, length)
    return per_token * length * episodes * ppo_epochs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=1024)
    p.add_argument("--trl-venv", default="/tmp/venv-trl-ppo")
    p.add_argument("--skip-trl", action="store_true")
    a = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-ppo-"))
    timed([sys.executable, str(ANCHORS / "tiny_models.py"), str(work / "models")])
    prompts = work / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"where is the hr office in boston {i % 7} please"}) + "\n" for i in range(512))
    )

    ours_cmd = [
        sys.executable,
        "-m",
        "rlhfkit.cli",
        "ppo",
        f"policy={work / 'models' / 'policy'}",
        f"reward_model={work / 'models' / 'reward'}",
        f"prompts_file={prompts}",
        f"output_dir={work / 'ours'}",
        f"total_episodes={a.episodes}",
        "batch_size=16",
        "minibatch_size=16",
        "max_new_tokens=32",
        "ppo_epochs=4",
        "learning_rate=1e-5",
        "kl_coef=0.05",
        "temperature=0.7",
        "prompt_template=raw",
        "missing_eos_penalty=1.0",
        "critic_init=reward",
        "device=cpu",
    ]
    ours_seconds, _ = timed(ours_cmd, env={**os.environ, "TERM": "dumb"})
    ours = json.loads((work / "ours" / "metrics.json").read_text())
    results = {
        "rlhfkit (rlhf ppo)": (ours_seconds, ours["time_generation"] + ours["time_scoring"] + ours["time_update"])
    }

    if not a.skip_trl:
        python = Path(a.trl_venv) / "bin" / "python"
        if not python.exists():
            timed(["bash", str(ANCHORS / "setup_trl_ppo.sh"), a.trl_venv])
        trl_seconds, out = timed(
            [
                str(python),
                str(ANCHORS / "trl_ppo.py"),
                str(work / "models"),
                "--episodes",
                str(a.episodes),
                "--batch",
                "16",
                "--response-length",
                "32",
                "--ppo-epochs",
                "4",
                "--prompts",
                str(prompts),
            ]
        )
        m = re.search(r"episodes in ([\d.]+)s", out)
        results["trl 1.0.0 PPOTrainer"] = (trl_seconds, float(m.group(1)) if m else float("nan"))

    sampler = sampler_tokens_per_second(work / "models" / "policy", batch=16, new_tokens=32)
    ceiling = decode_matmul_ceiling(work / "models" / "policy", batch=16)
    from common import matmul_peak_gflops

    peak = matmul_peak_gflops()
    flops = update_flops(
        work / "models", "where is the hr office in boston 0 please", episodes=a.episodes, new_tokens=32, ppo_epochs=4
    )
    print(
        f"\nPPO, {a.episodes} episodes, tiny Llama policy + reward + critic (hidden 128, 4 layers), batch 16, "
        "32 new tokens, 4 PPO epochs, CPU fp32"
    )
    print(f"{'system':<24}{'process s':>11}{'loop s':>9}{'episodes/s':>12}{'speedup':>9}")
    ref = results.get("trl 1.0.0 PPOTrainer", (None, None))[0]
    for name, (whole, loop) in results.items():
        speed = f"{ref / whole:.2f}x" if ref else "-"
        print(f"{name:<24}{whole:>11.1f}{loop:>9.1f}{a.episodes / whole:>12.1f}{speed:>9}")
    share = ours["time_generation"] / (ours["time_generation"] + ours["time_scoring"] + ours["time_update"])
    print(
        f"rlhf ppo time split: generation {ours['time_generation']:.1f}s ({100 * share:.0f}%), scoring "
        f"{ours['time_scoring']:.1f}s, update {ours['time_update']:.1f}s; reward {ours['reward_first_tenth']:.3f} -> "
        f"{ours['reward_last_tenth']:.3f}"
    )
    print(
        f"update arithmetic: {flops / 1e9:.0f} GFLOP of matmuls; rlhf ppo ran them at "
        f"{flops / ours['time_update'] / 1e9:.0f} GFLOP/s = {100 * flops / ours['time_update'] / 1e9 / peak:.0f}% of "
        f"the measured fp32 matmul peak ({peak:.0f} GFLOP/s); at 100% of peak the update alone would take "
        f"{flops / peak / 1e9:.1f}s"
    )
    if ref:
        print(f"3x TRL means the whole process in {ref / 3:.1f}s")
    print("\nsampler alone, batch 16, 32 new tokens (median of 7):")
    for name, tps in sampler.items():
        print(f"{name:<24}{tps:>10.0f} tokens/s{tps / sampler['HF generate']:>8.2f}x")
    print(
        f"{'matmuls only (ceiling)':<24}{ceiling:>10.0f} tokens/s{ceiling / sampler['HF generate']:>8.2f}x   "
        "(a decoding step's matmuls alone, nothing else)"
    )
    print(
        json.dumps(
            {
                "results": results,
                "sampler": sampler,
                "decode_matmul_ceiling": ceiling,
                "update_gflop": flops / 1e9,
                "peak_gflops": peak,
            }
        )
    )


if __name__ == "__main__":
    main()
