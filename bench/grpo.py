"""Critic-free RL speed: `rlhf ppo advantage=grpo|rloo` beside current TRL's GRPOTrainer / RLOOTrainer on identical
models, prompts, reward and settings, both timed as whole processes with their peak memory; and GRPO's and RLOO's
loss of one fixed batch before any update, computed by each side's own code (RLOO: also its gradient).

usage: python bench/grpo.py [--advantage grpo|rloo|both] [--episodes 1024]
The tiny Llama policy of bench/tiny_models.py (hidden 128, 4 layers), full fine-tuning, raw prompts, the
rule-based reward of bench/rewards.py; batch 16 responses = 4 prompts x 4 generations, minibatch 8 (one optimizer
step each, no accumulation), 2 passes over each batch, 32 new tokens, temperature 0.7, lr 1e-5 decayed linearly,
KL coefficient 0.04 (GRPO: k3 in the loss; RLOO: k1 summed in the reward), clip 0.2, gradient clip 1.0, CPU fp32.
TRL runs bench/trl_grpo.py (GRPO with loss_type=bnpo, rlhf ppo's token mean; RLOO in TRL's own sequence-level form).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import run_measured, write_jsonl  # noqa: E402

HERE = Path(__file__).parent
GENERATIONS, BATCH, MINIBATCH, EPOCHS, NEW_TOKENS, LR, BETA, TEMPERATURE = 4, 16, 8, 2, 32, 1e-5, 0.04, 0.7


def step0_batch(policy: Path, prompts: list[str]) -> tuple[dict, float, dict]:
    """One batch sampled by our sampler (4 prompts of equal length x 4 responses) with its rewards and GRPO and RLOO
    advantages, rlhf ppo's GRPO loss of it before any update (old = reference = the policy), and its RLOO loss and
    gradient."""
    import torch
    from rewards import distinct_words

    from rlhfkit.advantages import group_advantages
    from rlhfkit.algorithms.ppo import Rollout, policy_loss, response_logprobs
    from rlhfkit.config import PPOConfig
    from rlhfkit.data.prompts import encode_prompt
    from rlhfkit.models.load import load_causal_lm, load_tokenizer
    from rlhfkit.models.sampler import sample

    tok = load_tokenizer(str(policy), padding_side="left")
    model = load_causal_lm(str(policy), dtype="float32", device="cpu").eval()
    ids = [encode_prompt(tok, q, template="raw") for q in prompts[: BATCH // GENERATIONS]]
    assert len({len(x) for x in ids}) == 1, "the check batch needs prompts of one length (no padding)"
    query = torch.tensor([x for x in ids for _ in range(GENERATIONS)])
    samples = sample(
        model,
        query,
        torch.ones_like(query),
        max_new_tokens=NEW_TOKENS,
        eos_id=tok.eos_token_id,
        pad_id=tok.pad_token_id,
        temperature=TEMPERATURE,
        generator=torch.Generator().manual_seed(0),
    )
    mask = samples.mask
    texts = tok.batch_decode(samples.tokens.masked_fill(mask == 0, tok.pad_token_id), skip_special_tokens=True)
    scores = torch.tensor(distinct_words([], texts))
    advantages = group_advantages(scores, group_size=GENERATIONS, kind="grpo")
    attention = torch.cat([torch.ones_like(query), mask], dim=1)
    rollout = Rollout(
        torch.cat([query, samples.tokens], dim=1),
        attention,
        attention.cumsum(dim=1) - 1,
        mask,
        *([None] * 5),
    )
    cfg = PPOConfig(advantage="grpo", num_generations=GENERATIONS, temperature=TEMPERATURE, cliprange=0.2)
    rows, context = torch.arange(BATCH), query.size(1)
    with torch.no_grad():
        logprobs = response_logprobs(model, rollout, rows, context=context, temperature=TEMPERATURE)[0] * mask
        rollout = rollout._replace(logprobs=logprobs, ref_logprobs=logprobs)
        loss, _ = policy_loss(
            model, rollout, advantages.unsqueeze(1) * mask, rows, context=context, cfg=cfg, kl_coef=BETA
        )
    # RLOO, rlhf ppo's definition (token-level ratio, token mean); its gradient too (at ratio 1: the REINFORCE
    # gradient sum_i A_i grad log pi(y_i) over the batch's tokens; TRL's sequence-level one: over its answers)
    rloo = group_advantages(scores, group_size=GENERATIONS, kind="rloo")
    rloo_cfg = PPOConfig(advantage="rloo", num_generations=GENERATIONS, temperature=TEMPERATURE, cliprange=0.2)
    rloo_loss, _ = policy_loss(
        model, rollout, rloo.unsqueeze(1) * mask, rows, context=context, cfg=rloo_cfg, kl_coef=BETA
    )
    rloo_loss.backward()
    lengths = mask.sum(dim=1).float()
    rloo_check = {
        "loss": rloo_loss.item(),
        "closed_form": (-(rloo * lengths).sum() / lengths.sum()).item(),
        "trl_closed_form": -rloo.mean().item(),
        "mean_length": lengths.mean().item(),
        "grad": {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
        "lengths": sorted(set(lengths.int().tolist())),
    }
    batch = {
        "prompt_ids": query.tolist(),
        "completion_ids": samples.tokens.tolist(),
        "completion_mask": mask.tolist(),
        "scores": scores.tolist(),
        "advantages": advantages.tolist(),
        "rloo_advantages": rloo.tolist(),
    }
    return batch, loss.item(), rloo_check


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--advantage", choices=("grpo", "rloo", "both"), default="both")
    p.add_argument("--episodes", type=int, default=1024)
    a = p.parse_args()

    from tiny_models import build

    work = Path(tempfile.mkdtemp(prefix="bench-grpo-"))
    policy = build(work / "models") / "policy"
    prompts = [f"where is the hr office in boston {i % 7} please" for i in range(256)]
    prompts_file = write_jsonl(work / "prompts.jsonl", [{"prompt": q} for q in prompts])
    batch, ours_step0, ours_rloo = step0_batch(policy, prompts)
    check = work / "check.json"
    check.write_text(json.dumps(batch))

    results = []
    for advantage in ("grpo", "rloo") if a.advantage == "both" else (a.advantage,):
        out = work / f"ours-{advantage}"
        ours_cmd = [
            sys.executable,
            "-m",
            "rlhfkit.cli",
            "ppo",
            f"policy={policy}",
            f"reward_fn={HERE / 'rewards.py'}:distinct_words",
            f"prompts_file={prompts_file}",
            f"output_dir={out}",
            f"advantage={advantage}",
            f"num_generations={GENERATIONS}",
            f"total_episodes={a.episodes}",
            f"batch_size={BATCH}",
            f"minibatch_size={MINIBATCH}",
            f"ppo_epochs={EPOCHS}",
            f"max_new_tokens={NEW_TOKENS}",
            f"learning_rate={LR}",
            f"kl_coef={BETA}",
            f"temperature={TEMPERATURE}",
            "prompt_template=raw",
            "mixed_precision=fp32",
            "device=cpu",
        ]
        ours_s, _, ours_gib = run_measured(ours_cmd, env={**os.environ, "TERM": "dumb"})
        ours = json.loads((out / "metrics.json").read_text())
        trl_cmd = [sys.executable, HERE / "trl_grpo.py", policy, prompts_file, "--trainer", advantage]
        trl_cmd += ["--episodes", a.episodes, "--batch", BATCH, "--minibatch", MINIBATCH]
        trl_cmd += ["--generations", GENERATIONS, "--epochs", EPOCHS, "--response-length", NEW_TOKENS]
        trl_cmd += ["--lr", LR, "--beta", BETA, "--temperature", TEMPERATURE]
        trl_cmd += ["--check", check]
        trl_s, text, trl_gib = run_measured(trl_cmd)
        m = re.search(r"episodes in ([\d.]+)s; reward ([-\d.]+) -> ([-\d.]+)", text)
        trl_loop, trl_first, trl_last = map(float, m.groups())
        step0 = re.search(r"step-0 loss ([-\d.e]+)", text)
        loop = ours["time_generation"] + ours["time_scoring"] + ours["time_update"]
        results.append(
            (
                advantage,
                (ours_s, loop, ours_gib, ours["reward_first_tenth"], ours["reward_last_tenth"]),
                (trl_s, trl_loop, trl_gib, trl_first, trl_last),
                float(step0.group(1)) if step0 else None,
            )
        )

    import torch
    import trl

    print(
        f"\nCritic-free RL, {a.episodes} episodes, tiny Llama (hidden 128, 4 layers), full fine-tuning, raw prompts; "
        f"batch {BATCH} = {BATCH // GENERATIONS} prompts x {GENERATIONS}, minibatch {MINIBATCH}, {EPOCHS} epochs, "
        f"{NEW_TOKENS} new tokens, CPU fp32, {torch.get_num_threads()} threads; whole processes timed"
    )
    print(f"{'system':<30}{'process s':>10}{'loop s':>8}{'peak GiB':>9}{'reward first->last tenth':>26}{'vs TRL':>8}")
    for advantage, ours, theirs, _ in results:
        name = "GRPOTrainer" if advantage == "grpo" else "RLOOTrainer"
        for label, (whole, loop, gib, r0, r1) in (
            (f"rlhfkit (advantage={advantage})", ours),
            (f"trl {trl.__version__} {name}", theirs),
        ):
            print(
                f"{label:<30}{whole:>10.1f}{loop:>8.1f}{gib:>9.2f}{r0:>13.4f} -> {r1:<9.4f}{theirs[0] / whole:>7.2f}x"
            )
    for advantage, _, _, trl_step0 in results:
        if advantage == "grpo":
            print(
                f"GRPO loss of one fixed batch before any update (same advantages): rlhfkit {ours_step0:.8f}, "
                f"trl {trl_step0:.8f}, difference {abs(ours_step0 - trl_step0):.1e}"
            )
            continue
        r = ours_rloo
        theirs = torch.load(check.with_suffix(".rloo-grad.pt"))
        worst = max((r["grad"][n] * r["mean_length"] - g).abs().max().item() for n, g in theirs.items())
        scale = max(g.abs().max().item() for g in theirs.values())
        print(
            f"RLOO loss of the same batch before any update (same RLOO advantages A_i; answer lengths L_i "
            f"{r['lengths']}):\n"
            f"  rlhfkit (token-level ratio, token mean) {r['loss']:.8f} (closed form -sum A_i L_i / sum L_i "
            f"{r['closed_form']:.8f}); trl (sequence-level ratio, sequence mean) {trl_step0:.8f} (closed form "
            f"-mean A_i {r['trl_closed_form']:.8f}); difference {abs(r['loss'] - trl_step0):.1e} (by definition: "
            f"equal only when all answers have one length)\n"
            f"  gradient (at ratio 1 both are sum_i A_i grad log pi(y_i), over the tokens or over the answers): "
            f"max |rlhfkit x mean length - trl| {worst:.1e}, largest trl entry {scale:.1e}"
        )


if __name__ == "__main__":
    main()
