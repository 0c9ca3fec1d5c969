"""Pretrain the demo's tiny base model on the handbook (next-token prediction on random windows of the text)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from rlhfkit.models.load import save_model
from rlhfkit.models.tiny import build_tiny_causal_lm
from rlhfkit.runtime.progress import progress_bar
from rlhfkit.runtime.training import adamw


def pretrain_tiny_base(
    out: Path,
    text: str,
    *,
    hidden: int,
    layers: int,
    vocab_size: int,
    steps: int,
    window: int = 64,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    seed: int = 0,
) -> Path:
    """A tokenizer trained on `text`, a tiny Llama trained `steps` steps on it; saved to `out` (a model directory)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lines = [line for line in text.splitlines() if line.strip()]
    init = out.with_name(out.name + "-init")
    build_tiny_causal_lm(init, lines * 4, vocab_size=vocab_size, hidden=hidden, layers=layers, seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(init)
    model = AutoModelForCausalLM.from_pretrained(init)
    ids = []
    for line in lines:  # one line a document, each ended by EOS
        ids += tokenizer(line, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    data = torch.tensor(ids)
    window = min(window, len(ids) - 1)
    g = torch.Generator().manual_seed(seed)
    optimizer = adamw(model, learning_rate=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    model.train()
    with progress_bar("pretrain base", total=steps) as advance:
        for _ in range(steps):
            starts = torch.randint(0, len(ids) - window, (batch_size,), generator=g)
            batch = torch.stack([data[s : s + window + 1] for s in starts.tolist()])
            logits = model(input_ids=batch[:, :-1], use_cache=False).logits
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            advance(status=f"loss {loss.item():.3f}")
    save_model(model, tokenizer, out)
    return out
