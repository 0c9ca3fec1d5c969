"""Tokenization and batching for supervised fine-tuning.

An example is the prompt's ids followed by the completion's ids and EOS; labels are IGNORE_INDEX on the prompt,
so the loss counts completion tokens only. Prompt and completion are tokenized separately, exactly as generation
sees them (the prompt is encoded alone and the answer continues it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhfkit.data.prompts import encode_prompt, end_token_id
from rlhfkit.data.schema import SFTRecord, Text
from rlhfkit.losses import IGNORE_INDEX


@dataclass(frozen=True)
class SFTExample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX on prompt tokens

    @property
    def num_targets(self) -> int:
        """Tokens that the loss counts: each label except the first position, which nothing predicts."""
        return sum(1 for t in self.labels[1:] if t != IGNORE_INDEX)


def encode_prompt_answer(
    tokenizer, prompt: Text, answer: str, *, max_length: int, template: str = "chat"
) -> tuple[list[int], list[int], bool]:
    """(prompt ids, answer ids ending with EOS, truncated?) as the model sees them at generation time: the prompt is
    encoded alone and the answer continues it. Too long: the prompt is cut from the left first, then the answer's end.
    """
    prompt_ids = encode_prompt(tokenizer, prompt, template=template)
    answer_ids = tokenizer(answer, add_special_tokens=False).input_ids + [end_token_id(tokenizer)]
    if len(prompt_ids) + len(answer_ids) <= max_length:
        return prompt_ids, answer_ids, False
    prompt_ids = prompt_ids[-max(1, max_length - len(answer_ids)) :]
    return prompt_ids, answer_ids[: max_length - len(prompt_ids)], True


def tokenize_sft(
    records: list[SFTRecord], tokenizer, *, max_length: int, template: str = "chat"
) -> tuple[list[SFTExample], int]:
    """Examples and how many were truncated."""
    examples, truncated = [], 0
    for r in records:
        prompt, completion, cut = encode_prompt_answer(
            tokenizer, r.prompt, r.completion, max_length=max_length, template=template
        )
        truncated += cut
        examples.append(SFTExample(prompt + completion, [IGNORE_INDEX] * len(prompt) + completion))
    return examples, truncated


def collate_padded(examples: list[SFTExample], *, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded (B, T) batch with attention_mask; padded labels are IGNORE_INDEX."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        attention_mask[i, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def collate_packed(examples: list[SFTExample]) -> dict[str, torch.Tensor]:
    """One (1, sum T_i) row: sequences end to end, positions restarting at 0 for each.

    Without an attention_mask, transformers reads the restarts in position_ids as sequence boundaries and builds a
    block-diagonal causal mask, so no sequence attends to another. The forward pass must get use_cache=False:
    with a KV cache transformers does not look for packed sequences. Each sequence's first label is IGNORE_INDEX so
    the previous sequence's last token is never trained to predict it.
    """
    ids, labels, positions = [], [], []
    for e in examples:
        ids += e.input_ids
        labels += [IGNORE_INDEX] + e.labels[1:]
        positions += list(range(len(e.input_ids)))
    return {
        "input_ids": torch.tensor([ids]),
        "labels": torch.tensor([labels]),
        "position_ids": torch.tensor([positions]),
    }


def pad_left(seqs: list[list[int]], *, pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and attention mask with each sequence at the right edge (prompts for generation)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(s)
        mask[i, width - len(s) :] = 1
    return ids.to(device), mask.to(device)


def pad_right(seqs: list[list[int]], *, pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and attention mask with each sequence at the left edge."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)
