"""Summed log-probabilities of whole answers given their prompts, for the offline preference trainers (DPO, KTO).

`AnswerLogprobs` computes log pi(answer | prompt) = sum over the answer's tokens (its EOS included) of the token
logprobs, with logits cast to fp32 before the log-softmax. With shared_prefix, each prompt is run once and all of its
answers continue from its KV cache (gradients flow back through the cache); the answer's first token is predicted
by the prompt's last position. The policy and the frozen reference go through this one function, under the same
autocast, so the log-ratios DPO takes compare like with like.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rlhfkit.data.collate import pad_left, pad_right
from rlhfkit.models.load import cache_kwargs
from rlhfkit.ops import logprobs_from_logits


class AnswerLogprobs(nn.Module):
    """forward(prompts, answers, owner) -> ((N,) summed logprobs, (N,) token counts), where answers[n] continues
    prompts[owner[n]]. One module, so the accelerator, DDP and checkpoints see one model."""

    def __init__(self, model, *, pad_id: int, shared_prefix: bool = True):
        super().__init__()
        self.model, self.pad_id, self.shared_prefix = model, pad_id, shared_prefix

    def forward(self, prompts: list[list[int]], answers: list[list[int]], owner: list[int]) -> tuple[Tensor, Tensor]:
        device = next(self.model.parameters()).device
        a_ids, a_mask = pad_right(answers, pad_id=self.pad_id, device=device)
        if self.shared_prefix:
            logits = self._shared(prompts, a_ids, a_mask, owner, device)
        else:
            logits = self._whole(prompts, answers, owner, a_ids.size(1), device)
        token_logprobs = logprobs_from_logits(logits, a_ids) * a_mask
        return token_logprobs.sum(dim=1), a_mask.sum(dim=1)

    def _shared(self, prompts, a_ids: Tensor, a_mask: Tensor, owner: list[int], device) -> Tensor:
        from transformers import DynamicCache

        p_ids, p_mask = pad_left(prompts, pad_id=self.pad_id, device=device)
        cache = DynamicCache(config=self.model.config)
        cache_kw = cache_kwargs(self.model, cache)
        p_pos = (p_mask.cumsum(dim=1) - 1).clamp(min=0)
        first = self.model(
            input_ids=p_ids,
            attention_mask=p_mask,
            position_ids=p_pos,
            **cache_kw,
            use_cache=True,
            logits_to_keep=1,
        ).logits  # (P, 1, V): the prompt's last position predicts the answer's first token
        index = torch.tensor(owner, device=device)
        cache.batch_select_indices(index)
        positions = p_mask.sum(dim=1)[index].unsqueeze(1) + torch.arange(a_ids.size(1), device=device)
        rest = self.model(
            input_ids=a_ids,
            attention_mask=torch.cat([p_mask[index], a_mask], dim=1),
            position_ids=positions,
            **cache_kw,
            use_cache=True,
        ).logits
        return torch.cat([first[index], rest[:, :-1]], dim=1)

    def _whole(self, prompts, answers, owner: list[int], width: int, device) -> Tensor:
        """Prompt and answer as one right-padded sequence; the logits that predict each answer token, gathered
        into (N, width, V) aligned with the answers."""
        seqs = [prompts[o] + a for o, a in zip(owner, answers)]
        ids, mask = pad_right(seqs, pad_id=self.pad_id, device=device)
        logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        starts = torch.tensor([len(prompts[o]) - 1 for o in owner], device=device)
        idx = (starts.unsqueeze(1) + torch.arange(width, device=device)).clamp(max=ids.size(1) - 1)
        return logits.gather(1, idx.unsqueeze(-1).expand(-1, -1, logits.size(-1)))
