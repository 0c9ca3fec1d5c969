"""Shared benchmark helpers: a measured fp32 matmul peak, a tiny model of a given size, synthetic help-desk data."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch


def matmul_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Best achieved fp32 GFLOP/s of an n x n x n matmul with the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


WORDS = (
    "the employee office floor building hr it help desk vacation policy boston london austin please check your "
    "badge manager form portal open closed monday friday room parking lunch cafe wifi password reset laptop "
    "benefits salary payroll day days week weeks thank you sorry happy to help travel expense receipt approve"
).split()


def synthetic_qa(n: int, *, seed: int = 0, prompt_words: int = 30, answer_words: int = 60) -> list[dict]:
    """Prompt/completion pairs of random help-desk words; prompts already carry the chat format (raw template)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(prompt_words // 2, prompt_words)))
        a = " ".join(rng.choice(WORDS) for _ in range(rng.randint(answer_words // 2, answer_words)))
        rows.append({"prompt": f"User: {q}?\nAssistant: ", "completion": a})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def param_counts(model) -> tuple[int, int]:
    """(all parameters, parameters that take part in matmuls: all but the input embedding)."""
    total = sum(p.numel() for p in model.parameters())
    return total, total - model.get_input_embeddings().weight.numel()


def train_flops_per_token(model, mean_seq_len: float) -> float:
    """6 x matmul parameters (forward + backward) + causal attention scores and mixing (Kaplan/PaLM, halved for
    the causal mask, so the count is not inflated)."""
    cfg = model.config
    _, matmul_params = param_counts(model)
    return 6 * matmul_params + 6 * cfg.num_hidden_layers * cfg.hidden_size * mean_seq_len
