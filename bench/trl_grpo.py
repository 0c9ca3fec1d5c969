"""The reference side of bench/grpo.py: current TRL's GRPOTrainer or RLOOTrainer on the same model, prompts, reward
and settings.

usage: python bench/trl_grpo.py MODEL_DIR PROMPTS.jsonl --trainer grpo|rloo [--episodes 1024] [--batch 16]
           [--minibatch 8] [--generations 4] [--epochs 2] [--response-length 32] [--lr 1e-5] [--beta 0.04]
           [--temperature 0.7] [--check BATCH.json]
Raw prompts (no chat template), the reward of bench/rewards.py, one optimizer step per minibatch (no gradient
accumulation), `epochs` passes over each generation batch (TRL's num_iterations), linear decay, CPU fp32.
GRPO: loss_type=bnpo (token mean over each minibatch: rlhf ppo's definition), rewards scaled within each group, the
k3 KL in the loss. RLOO: TRL's own definition (a sequence-level ratio, a mean over sequences), the k1 KL summed in
the reward. With --check, the step-0 loss of a given batch is printed before training (see bench/grpo.py); RLOO's
gradient of it is saved beside the batch file (BATCH.rloo-grad.pt).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from rewards import distinct_words  # noqa: E402


def reward(prompts, completions, **_) -> list[float]:
    return distinct_words(prompts, completions)


def step0_loss(trainer, batch: dict) -> float:
    """TRL's GRPO loss of a fixed batch (prompts of equal length, so no padding) before any update: the policy is its
    own reference and its own old policy; the advantages are given (both sides' group-scaled rewards differ only in
    the epsilon under the std: TRL's 1e-4, rlhf ppo's 1e-6)."""
    import torch

    model = trainer.model
    model.eval()
    prompt_ids = torch.tensor(batch["prompt_ids"])
    completion_ids = torch.tensor(batch["completion_ids"])
    completion_mask = torch.tensor(batch["completion_mask"])
    with torch.no_grad():
        ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention = torch.cat([torch.ones_like(prompt_ids), completion_mask], dim=1)
        ref, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.ref_model, ids, attention, completion_ids.size(1), batch_size=len(ids)
        )
        inputs = {
            "prompt_ids": prompt_ids,
            "prompt_mask": torch.ones_like(prompt_ids),
            "completion_ids": completion_ids,
            "completion_mask": completion_mask,
            "advantages": torch.tensor(batch["advantages"]),
            "old_per_token_logps": None,
            "ref_per_token_logps": ref,
        }
        return trainer._compute_loss(model, inputs).item()


def rloo_step0_loss(trainer, batch: dict, grad_file: Path) -> float:
    """TRL's RLOO loss of a fixed batch before any update (the policy is its own old policy, so the sequence-level
    ratio is 1) with given advantages; its gradient is saved to `grad_file` ({parameter name: gradient})."""
    import torch

    model = trainer.model
    model.eval()
    prompt_ids = torch.tensor(batch["prompt_ids"])
    completion_ids = torch.tensor(batch["completion_ids"])
    completion_mask = torch.tensor(batch["completion_mask"])
    ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention = torch.cat([torch.ones_like(prompt_ids), completion_mask], dim=1)
    with torch.no_grad():
        old, _, _ = trainer._get_per_token_logps_and_entropies(
            model, ids, attention, completion_ids.size(1), batch_size=len(ids)
        )
    inputs = {
        "prompt_ids": prompt_ids,
        "prompt_mask": torch.ones_like(prompt_ids),
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "advantages": torch.tensor(batch["rloo_advantages"]),
        "old_logps": (old * completion_mask).sum(1),
    }
    model.zero_grad()
    loss = trainer._compute_loss(model, inputs)
    loss.backward()
    torch.save({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, grad_file)
    model.zero_grad()
    return loss.item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("prompts")
    p.add_argument("--trainer", choices=("grpo", "rloo"), required=True)
    p.add_argument("--episodes", type=int, default=1024)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--minibatch", type=int, default=8)
    p.add_argument("--generations", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--response-length", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--beta", type=float, default=0.04)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--check", type=Path)
    a = p.parse_args()

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if a.trainer == "grpo":
        from trl import GRPOConfig as Config
        from trl import GRPOTrainer as Trainer

        extra = dict(loss_type="bnpo", scale_rewards="group")
    else:
        from trl import RLOOConfig as Config
        from trl import RLOOTrainer as Trainer

        extra = dict(normalize_advantages=False)
    tok = AutoTokenizer.from_pretrained(a.model, padding_side="left")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    prompts = [json.loads(line)["prompt"] for line in open(a.prompts) if line.strip()]
    per_generation = a.batch // a.minibatch  # optimizer steps per generation batch and epoch
    args = Config(
        output_dir=f"/tmp/bench-trl-{a.trainer}",
        per_device_train_batch_size=a.minibatch,
        gradient_accumulation_steps=1,
        steps_per_generation=per_generation,
        num_generations=a.generations,
        num_iterations=a.epochs,
        max_steps=a.episodes // a.batch * per_generation * a.epochs,
        max_completion_length=a.response_length,
        temperature=a.temperature,
        top_p=1.0,
        top_k=0,
        repetition_penalty=1.0,
        beta=a.beta,
        epsilon=0.2,
        learning_rate=a.lr,
        lr_scheduler_type="linear",
        warmup_steps=0,
        max_grad_norm=1.0,
        report_to=[],
        use_cpu=True,
        bf16=False,
        logging_steps=1,
        save_strategy="no",
        shuffle_dataset=True,
        gradient_checkpointing=False,  # TRL 1.16 turns it on by default; rlhf runs without it
        **extra,
    )
    trainer = Trainer(
        model=AutoModelForCausalLM.from_pretrained(a.model),
        reward_funcs=reward,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        processing_class=tok,
    )
    if a.check and a.trainer == "grpo":
        print(f"step-0 loss {step0_loss(trainer, json.loads(a.check.read_text())):.8f}")
    elif a.check:
        batch = json.loads(a.check.read_text())
        print(f"step-0 loss {rloo_step0_loss(trainer, batch, a.check.with_suffix('.rloo-grad.pt')):.8f}")
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    tenth = max(1, len(rewards) // 10)
    first, last = sum(rewards[:tenth]) / tenth, sum(rewards[-tenth:]) / tenth
    print(f"trl {a.trainer}: {a.episodes} episodes in {seconds:.1f}s; reward {first:.4f} -> {last:.4f}")


if __name__ == "__main__":
    main()
