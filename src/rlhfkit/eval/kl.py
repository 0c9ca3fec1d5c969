"""KL(policy || reference) measured on answers the policy samples: the distance a trained model moved."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from rlhfkit.data.collate import pad_left
from rlhfkit.models.sampler import sample


@torch.no_grad()
def sampled_kl(
    sampler_model,
    policy_logprobs: Callable[[list[list[int]], list[list[int]]], Tensor],
    reference_logprobs: Callable[[list[list[int]], list[list[int]]], Tensor],
    prompt_ids: list[list[int]],
    *,
    pad_id: int,
    eos_id: int,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
    dtype: torch.dtype | None = None,
) -> float:
    """Mean over prompts of log pi(y|x) - log pi_ref(y|x), y sampled from `sampler_model` (the policy) at
    temperature 1: an unbiased estimate of KL(policy || reference) per answer. *_logprobs(prompts, answers) give the
    answers' summed logprobs (answers[n] continues prompts[n]); give both the same computation."""
    device = next(sampler_model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(prompt_ids), batch_size):
        chunk = prompt_ids[start : start + batch_size]
        query, query_mask = pad_left(chunk, pad_id=pad_id, device=device)
        samples = sample(
            sampler_model,
            query,
            query_mask,
            max_new_tokens=max_new_tokens,
            eos_id=eos_id,
            pad_id=pad_id,
            temperature=1.0,
            generator=torch.Generator(device=device).manual_seed(seed + start),
            dtype=dtype,
        )
        lengths = samples.mask.sum(dim=1).tolist()
        keep = [i for i, n in enumerate(lengths) if n > 0]
        if not keep:
            continue
        prompts = [chunk[i] for i in keep]
        answers = [samples.tokens[i, : lengths[i]].tolist() for i in keep]
        diff = policy_logprobs(prompts, answers).float() - reference_logprobs(prompts, answers).float()
        total += diff.sum().item()
        count += len(keep)
    return total / max(count, 1)
