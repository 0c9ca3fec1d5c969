"""The reference side of bench/reward.py: current TRL's RewardTrainer on the same model, pairs and settings.

usage: python bench/trl_reward.py MODEL_DIR TRAIN.jsonl TEST.jsonl [--steps 200] [--batch 16] [--max-length 128]
           [--lr 5e-5]
Files hold {"prompt", "chosen", "rejected"} strings. Prints pairs/s of the training loop and held-out accuracy.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("train")
    p.add_argument("test")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-5)
    a = p.parse_args()

    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    def load(path: str) -> Dataset:
        return Dataset.from_list([json.loads(line) for line in open(path) if line.strip()])

    tok = AutoTokenizer.from_pretrained(a.model)
    if tok.eos_token is None:  # an encoder ends its text with [SEP]
        tok.eos_token = tok.sep_token
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    args = RewardConfig(
        output_dir="/tmp/bench-trl-reward",
        per_device_train_batch_size=a.batch,
        per_device_eval_batch_size=a.batch,
        max_steps=a.steps,
        learning_rate=a.lr,
        warmup_steps=0,
        max_length=a.max_length,
        report_to=[],
        use_cpu=True,
        logging_steps=a.steps,
        save_strategy="no",
        eval_strategy="no",
        bf16=False,
        gradient_checkpointing=False,  # TRL 1.16 turns it on by default; rlhf runs without it
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=load(a.train), processing_class=tok)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    accuracy = trainer.evaluate(load(a.test)).get("eval_accuracy")
    pairs = a.steps * a.batch
    rate = pairs / seconds
    print(f"trl RewardTrainer: {pairs} pairs in {seconds:.1f}s = {rate:.2f} pairs/s; held-out accuracy {accuracy}")


if __name__ == "__main__":
    main()
