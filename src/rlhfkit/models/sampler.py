"""A KV-cached batched sampler for rollouts: temperature, top-p, stop at EOS per sequence, stop early when every
sequence has ended. It returns the sampled tokens' log-probabilities under logits / temperature (the distribution
PPO optimizes; the top-p cut only decides which tokens may be drawn).

Prompts come left-padded; positions count real tokens only, so a prompt's answer does not depend on how much
padding its batch needed. HF `generate` is the test oracle: greedy decoding gives the same tokens.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class Samples(NamedTuple):
    tokens: Tensor  # (B, T) sampled ids; pad_id after a sequence's EOS
    logprobs: Tensor  # (B, T) log p(token) under logits / temperature; 0 after EOS
    mask: Tensor  # (B, T) 1 on tokens up to and including EOS


def top_p_filter(logits: Tensor, top_p: float) -> Tensor:
    """Keep the smallest set of tokens whose probability reaches top_p (nucleus sampling, Holtzman et al. 2020)."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    remove_sorted = probs.cumsum(dim=-1) - probs >= top_p  # mass before this token already reaches top_p
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


@torch.no_grad()
def sample(
    model,
    input_ids: Tensor,
    attention_mask: Tensor,
    *,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> Samples:
    """Sample up to max_new_tokens for each left-padded prompt. temperature 0 is greedy."""
    from transformers import DynamicCache

    batch = input_ids.size(0)
    device = input_ids.device
    cache = DynamicCache(config=model.config)
    positions = (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    ).logits[:, -1]
    next_position = positions[:, -1:] + 1
    tokens = torch.full((batch, max_new_tokens), pad_id, dtype=torch.long, device=device)
    logprobs = torch.zeros((batch, max_new_tokens), dtype=torch.float32, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    mask = attention_mask
    steps = 0
    for t in range(max_new_tokens):
        scaled = logits.float() / temperature if temperature > 0 else logits.float()
        logp = F.log_softmax(scaled, dim=-1)
        if temperature > 0:
            probs = top_p_filter(scaled, top_p).softmax(dim=-1)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            token = scaled.argmax(dim=-1)
        token = token.masked_fill(finished, pad_id)
        tokens[:, t] = token
        logprobs[:, t] = logp.gather(1, token.unsqueeze(1)).squeeze(1).masked_fill(finished, 0.0)
        finished |= token == eos_id
        steps = t + 1
        if bool(finished.all()) or t == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones((batch, 1), dtype=mask.dtype, device=device)], dim=1)
        logits = model(
            input_ids=token.unsqueeze(1),
            attention_mask=mask,
            position_ids=next_position,
            past_key_values=cache,
            use_cache=True,
        ).logits[:, -1]
        next_position = next_position + 1
    tokens, logprobs = tokens[:, :steps], logprobs[:, :steps]
    # 1 up to and including the first EOS (everything, if a sequence hit the length limit)
    is_eos = tokens == eos_id
    after_eos = (is_eos.cumsum(dim=1) - is_eos.long()) > 0
    return Samples(tokens, logprobs, (~after_eos).long())
