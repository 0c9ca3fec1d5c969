"""Writes the small help-desk files the README's "Start from a real model" commands use, from the first version of
the demo company's questions (Lumen & Pike, written for rlhfkit), kept in lumen_pike_v1/ so that these files and the
numbers measured on them stay as they are while the demo's own data grows: python examples/helpdesk/build.py

- sft_train.jsonl / sft_eval.jsonl: questions with the experts' plainly worded answers; eval holds the wordings the
  demo never trains on.
- pairs_train.jsonl / pairs_eval.jsonl: the right answer preferred to the same sentence about another department or
  city (a swapped fact), so a reward model must read the question.
- prompts.jsonl: the training questions, for PPO.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent


def rows(name: str) -> list[dict]:
    return [json.loads(x) for x in (HERE / "lumen_pike_v1" / name).read_text().splitlines()]


def write(name: str, records: list[dict]) -> None:
    (HERE / name).write_text("".join(json.dumps(r) + "\n" for r in records))


def main() -> None:
    rng = random.Random(0)
    train = [r for r in rows("train.jsonl") if r["style"] == "plain"]
    heldout = rows("heldout.jsonl")
    answer = {r["fact"]: r["completion"] for r in train + heldout}
    facts = sorted(answer)

    def pairs(records: list[dict]) -> list[dict]:
        out = []
        for r in records:
            other = rng.choice([f for f in facts if f != r["fact"]])
            out.append({"prompt": r["prompt"], "chosen": r["completion"], "rejected": answer[other]})
        return out

    write("sft_train.jsonl", [{"prompt": r["prompt"], "completion": r["completion"]} for r in train])
    write("sft_eval.jsonl", [{"prompt": r["prompt"], "completion": r["completion"]} for r in heldout])
    write("pairs_train.jsonl", pairs(train))
    write("pairs_eval.jsonl", pairs(heldout))
    write("prompts.jsonl", [{"prompt": p} for p in dict.fromkeys(r["prompt"] for r in train)])


if __name__ == "__main__":
    main()
