"""Reward-model training speed and accuracy: rlhfkit beside TRL's RewardTrainer (current TRL), CPU, fp32.

usage: python bench/reward.py [--steps 200] [--batch 16]
Both start from the same tiny Llama reward model (../shared/anchors/tiny_models.py: hidden 128, 4 layers), train on
the same politeness preference pairs (written here) for the same steps, batch, learning rate and max length, and are
scored on the same held-out pairs. TRL runs through ../shared/anchors/trl_reward.py.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import write_jsonl  # noqa: E402

ANCHORS = Path(__file__).resolve().parents[2] / "shared" / "anchors"
POLITE = [
    "Happy to help! {f} Let me know if you need anything else.",
    "Thanks for asking. {f} Have a great day!",
    "Of course! {f} I hope that helps.",
    "Good question. {f} Anything else I can do?",
]
RUDE = ["{f} Stop bothering me.", "Ugh. {f} Figure it out yourself.", "Not my problem, but {f}", "{f} Whatever."]
PLACES = ["HR", "IT", "payroll", "security", "the cafe", "the mail room", "reception", "facilities", "legal"]
CITIES = ["Boston", "London", "Austin", "Denver", "Dublin", "Toronto"]


def preference_pairs(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        place, city, floor = rng.choice(PLACES), rng.choice(CITIES), rng.randint(1, 30)
        fact = f"{place} in {city} is on floor {floor}, room {rng.randint(100, 999)}."
        rows.append(
            {
                "prompt": f"user: Where is {place} in {city}?\nassistant:",
                "chosen": " " + rng.choice(POLITE).format(f=fact),
                "rejected": " " + rng.choice(RUDE).format(f=fact),
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--max-length", type=int, default=128)
    a = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-reward-"))
    train = write_jsonl(work / "train.jsonl", preference_pairs(1600, 0))
    test = write_jsonl(work / "test.jsonl", preference_pairs(200, 1))
    subprocess.run(
        [sys.executable, str(ANCHORS / "tiny_models.py"), str(work / "models")], check=True, capture_output=True
    )
    model = work / "models" / "reward"

    from rlhfkit.algorithms.reward import train as train_reward
    from rlhfkit.config import RewardConfig

    cfg = RewardConfig(
        model=str(model),
        train_file=str(train),
        eval_file=str(test),
        output_dir=str(work / "ours"),
        max_steps=a.steps,
        batch_size=a.batch,
        learning_rate=a.lr,
        max_length=a.max_length,
        warmup_ratio=0.0,
        tie_model="none",
        prompt_template="raw",
        logging_steps=a.steps,
        device="cpu",
    )
    ours = train_reward(cfg)
    ours_pps = a.steps * a.batch / ours["train_seconds"]

    proc = subprocess.run(
        [
            sys.executable,
            str(ANCHORS / "trl_reward.py"),
            str(model),
            str(train),
            str(test),
            "--steps",
            str(a.steps),
            "--batch",
            str(a.batch),
            "--max-length",
            str(a.max_length),
            "--lr",
            str(a.lr),
        ],
        capture_output=True,
        text=True,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("trl RewardTrainer")), None)
    if proc.returncode or line is None:
        sys.exit(f"TRL reference failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    m = re.search(r"= ([\d.]+) pairs/s; held-out accuracy ([\d.]+)", line)
    trl_pps, trl_acc = float(m.group(1)), float(m.group(2))

    import trl

    print(
        f"\nreward model, tiny Llama (hidden 128, 4 layers), {a.steps} steps x {a.batch} pairs, lr {a.lr}, "
        f"max length {a.max_length}, CPU fp32"
    )
    print(f"{'system':<26}{'pairs/s':>10}{'held-out acc':>14}{'speed vs TRL':>14}")
    print(f"{'rlhfkit':<26}{ours_pps:>10.1f}{ours['eval_accuracy']:>14.3f}{ours_pps / trl_pps:>13.2f}x")
    print(f"{'trl ' + trl.__version__ + ' RewardTrainer':<26}{trl_pps:>10.1f}{trl_acc:>14.3f}{1.0:>13.2f}x")
    print(
        json.dumps(
            {
                "ours_pairs_per_s": ours_pps,
                "ours_acc": ours["eval_accuracy"],
                "trl_pairs_per_s": trl_pps,
                "trl_acc": trl_acc,
            }
        )
    )


if __name__ == "__main__":
    main()
