"""The reference side of bench/kto.py: current TRL's KTOTrainer on the same model, ratings and settings.

usage: python bench/trl_kto.py MODEL_DIR TRAIN.jsonl [--steps 100] [--batch 16] [--max-length 128] [--lr 5e-5]
           [--beta 0.1] [--desirable-weight 1.0] [--undesirable-weight 1.0]
       python bench/trl_kto.py MODEL_DIR TRAIN.jsonl --check BATCH.json --policy POLICY_DIR [same settings]
TRAIN.jsonl holds TRL's unpaired format, {"prompt", "completion", "label": true | false} strings, in the order the
batches are to be seen (TRL's KTO reads its data sequentially: each example's KL completion is the previous
example's in the same batch). Reference logprobs are computed once before training (precompute_ref_log_probs), as
`rlhf kto` does; no gradient checkpointing (TRL's default is on, rlhf's off). Prints the loop's time and the logged
step-1 and last losses.

With --check, nothing is trained: TRL's KTO loss and KL reference point of one given batch of token ids
({"prompt_ids", "completion_ids", "KL_completion_ids", "label"}, lists over the batch) are printed, with POLICY_DIR
as the policy and MODEL_DIR as the reference (see bench/kto.py).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def check_loss(trainer, batch: dict) -> tuple[float, float]:
    """TRL's loss and KL reference point of a fixed batch, through its own collator and compute_loss (the reference
    model's logprobs computed on the fly)."""
    import torch

    keys = ("prompt_ids", "completion_ids", "KL_completion_ids", "label")
    examples = [dict(zip(keys, values)) for values in zip(*(batch[k] for k in keys))]
    inputs = trainer.data_collator(examples)
    trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, inputs).item()
    return loss, trainer._metrics["eval"]["kl"][-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("train")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--desirable-weight", type=float, default=1.0)
    p.add_argument("--undesirable-weight", type=float, default=1.0)
    p.add_argument("--check", type=Path)
    p.add_argument("--policy", help="with --check: the policy (MODEL_DIR is the reference)")
    a = p.parse_args()

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import KTOConfig, KTOTrainer

    rows = [json.loads(line) for line in open(a.train) if line.strip()]
    tok = AutoTokenizer.from_pretrained(a.model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    args = KTOConfig(
        output_dir="/tmp/bench-trl-kto",
        per_device_train_batch_size=a.batch,
        max_steps=a.steps,
        learning_rate=a.lr,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        max_grad_norm=1.0,
        beta=a.beta,
        loss_type="kto",
        desirable_weight=a.desirable_weight,
        undesirable_weight=a.undesirable_weight,
        max_length=a.max_length,
        precompute_ref_log_probs=a.check is None,
        gradient_checkpointing=False,
        report_to=[],
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        bf16=False,
    )
    if a.check:
        trainer = KTOTrainer(
            model=AutoModelForCausalLM.from_pretrained(a.policy),
            ref_model=AutoModelForCausalLM.from_pretrained(a.model),
            args=args,
            train_dataset=Dataset.from_list(rows[: a.batch]),
            processing_class=tok,
        )
        loss, kl = check_loss(trainer, json.loads(a.check.read_text()))
        print(f"check loss {loss:.8f} kl {kl:.8f}")
        return
    trainer = KTOTrainer(
        model=AutoModelForCausalLM.from_pretrained(a.model),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    print(f"trl KTOTrainer: {a.steps} steps in {seconds:.1f}s; first loss {losses[0]}; last loss {losses[-1]}")


if __name__ == "__main__":
    main()
