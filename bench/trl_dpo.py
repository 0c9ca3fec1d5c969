"""The reference side of bench/dpo.py: current TRL's DPOTrainer on the same model, pairs and settings.

usage: python bench/trl_dpo.py MODEL_DIR TRAIN.jsonl [--steps 100] [--batch 16] [--max-length 128] [--lr 5e-5]
           [--beta 0.1] [--lora-r 0] [--lora-alpha 32] [--template raw|chat]
TRAIN.jsonl holds {"prompt", "chosen", "rejected"} strings. The reference logprobs are computed once before training
(precompute_ref_log_probs), as `rlhf dpo` does. Prints the loop's time and the logged step-1 loss.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("train")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--lora-r", type=int, default=0)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--template", choices=("raw", "chat"), default="raw")
    a = p.parse_args()

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    rows = [json.loads(line) for line in open(a.train) if line.strip()]
    if a.template == "chat":  # conversational records: TRL applies the chat template, as `rlhf dpo` does
        rows = [
            {
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "chosen": [{"role": "assistant", "content": r["chosen"]}],
                "rejected": [{"role": "assistant", "content": r["rejected"]}],
            }
            for r in rows
        ]
    tok = AutoTokenizer.from_pretrained(a.model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    peft_config = None
    if a.lora_r:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=a.lora_r, lora_alpha=a.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM"
        )
    args = DPOConfig(
        output_dir="/tmp/bench-trl-dpo",
        per_device_train_batch_size=a.batch,
        max_steps=a.steps,
        learning_rate=a.lr,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        beta=a.beta,
        loss_type=["sigmoid"],
        max_length=a.max_length,
        precompute_ref_log_probs=True,
        report_to=[],
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        bf16=False,
        gradient_checkpointing=False,  # TRL 1.16 turns it on by default; rlhf runs without it
    )
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(a.model),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        peft_config=peft_config,
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    print(f"trl DPOTrainer: {a.steps} steps in {seconds:.1f}s; first loss {losses[0]}; last loss {losses[-1]}")


if __name__ == "__main__":
    main()
