"""Identical starting models for both sides of a tiny benchmark: a Llama policy and a Llama reward model sharing one
byte-level BPE tokenizer, built offline in seconds.

usage: python bench/tiny_models.py OUT_DIR [--hidden 128] [--layers 4] [--vocab 1024]
Writes OUT_DIR/policy (LlamaForCausalLM) and OUT_DIR/reward (LlamaForSequenceClassification, one label).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import WORDS  # noqa: E402


def build(out: Path, *, hidden: int = 128, layers: int = 4, vocab: int = 1024, seed: int = 0) -> Path:
    import torch
    from transformers import LlamaForCausalLM, LlamaForSequenceClassification

    from rlhfkit.models.tiny import tiny_llama_config, train_tokenizer

    rng = random.Random(seed)
    text = [" ".join(rng.choice(WORDS) for _ in range(20)) for _ in range(2000)]
    tokenizer = train_tokenizer(text, vocab_size=vocab)
    config = tiny_llama_config(tokenizer, hidden=hidden, layers=layers, heads=max(1, hidden // 32))
    torch.manual_seed(seed)
    for name, cls, extra in (("policy", LlamaForCausalLM, {}), ("reward", LlamaForSequenceClassification, {})):
        model = cls(type(config)(**{**config.to_dict(), **extra, "num_labels": 1}))
        model.save_pretrained(out / name)
        tokenizer.save_pretrained(out / name)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=1024)
    a = p.parse_args()
    build(a.out, hidden=a.hidden, layers=a.layers, vocab=a.vocab)
    print(f"wrote {a.out}/policy and {a.out}/reward")


if __name__ == "__main__":
    main()
