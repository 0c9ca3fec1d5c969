"""Batched answer generation with Hugging Face `generate` (temperature 0 = greedy)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from rlhfkit.data.collate import pad_left
from rlhfkit.data.schema import Text
from rlhfkit.models.load import encode_prompt


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
    on_batch: Callable[[int], None] | None = None,
) -> list[list[str]]:
    """`num_samples` answers per prompt, decoded without special tokens. Prompts are left-padded in batches."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if seed is not None:
        torch.manual_seed(seed)
    model.eval()
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    sampling = temperature > 0
    num_samples_run = num_samples if sampling else 1  # greedy answers are identical: compute once, repeat
    out: list[list[str]] = []
    for start in range(0, len(prompts), batch_size):
        chunk = [encode_prompt(tokenizer, p, template=template) for p in prompts[start : start + batch_size]]
        input_ids, attention_mask = pad_left(chunk, pad_id=pad_id)
        width = input_ids.size(1)
        kwargs = (
            dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
            if sampling
            else dict(do_sample=False, temperature=None, top_p=None, top_k=None)
        )
        generated = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            max_new_tokens=max_new_tokens,
            num_return_sequences=num_samples_run,
            pad_token_id=pad_id,
            eos_token_id=tokenizer.eos_token_id,
            **kwargs,
        )
        texts = tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
        for i in range(len(chunk)):
            answers = texts[i * num_samples_run : (i + 1) * num_samples_run]
            out.append(answers * num_samples if not sampling else answers)
        if on_batch is not None:
            on_batch(len(chunk))
    return out
