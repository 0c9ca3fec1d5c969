"""Batched answers to prompts with the project's sampler (the one PPO rolls out with; temperature 0 = greedy).
`sampler="hf"` takes transformers' `generate` instead, with the same settings."""

from __future__ import annotations

from collections.abc import Callable

import torch

from rlhfkit.data.collate import pad_left
from rlhfkit.data.prompts import encode_prompt
from rlhfkit.data.schema import Text
from rlhfkit.models.sampler import hf_sample, sample


@torch.no_grad()
def generate_answers(
    model,
    tokenizer,
    prompts: list[Text],
    *,
    num_samples: int = 1,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 16,
    template: str = "chat",
    seed: int | None = None,
    dtype: torch.dtype | None = None,
    sampler: str = "rlhfkit",
    on_batch: Callable[[int], None] | None = None,
    finished: list[list[bool]] | None = None,
) -> list[list[str]]:
    """`num_samples` answers per prompt, decoded without special tokens. Prompts run in batches of `batch_size`
    sequences (a prompt's samples side by side), left-padded; `dtype` is the compute dtype (None: the weights').
    `finished`, if given, receives per prompt whether each answer ended with EOS (False: cut at max_new_tokens)."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if sampler not in ("rlhfkit", "hf"):
        raise ValueError(f"sampler must be rlhfkit or hf, got {sampler!r}")
    draw = sample if sampler == "rlhfkit" else hf_sample
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    runs = num_samples if temperature > 0 else 1  # greedy answers are identical: compute once, repeat
    per_batch = max(1, batch_size // runs)
    out: list[list[str]] = []
    for start in range(0, len(prompts), per_batch):
        chunk = [encode_prompt(tokenizer, p, template=template) for p in prompts[start : start + per_batch]]
        input_ids, attention_mask = pad_left([ids for ids in chunk for _ in range(runs)], pad_id=tokenizer.pad_token_id)
        samples = draw(
            model,
            input_ids.to(device),
            attention_mask.to(device),
            max_new_tokens=max_new_tokens,
            eos_id=tokenizer.eos_token_id,
            pad_id=tokenizer.pad_token_id,
            temperature=temperature,
            top_p=top_p,
            generator=generator,
            dtype=dtype,
        )
        texts = tokenizer.batch_decode(samples.tokens, skip_special_tokens=True)
        ended = (samples.tokens == tokenizer.eos_token_id).any(dim=1).tolist()
        for i in range(len(chunk)):
            answers, done = texts[i * runs : (i + 1) * runs], ended[i * runs : (i + 1) * runs]
            out.append(answers * num_samples if runs == 1 else answers)
            if finished is not None:
                finished.append(done * num_samples if runs == 1 else done)
        if on_batch is not None:
            on_batch(len(chunk))
    return out


def greedy_answers(model, tokenizer, prompts: list[Text], **kw) -> list[str]:
    """One greedy answer per prompt (the model's own best answer, as evaluations compare them)."""
    return [a[0] for a in generate_answers(model, tokenizer, prompts, temperature=0.0, **kw)]
