"""Scalar reward models: any Hugging Face sequence-classification model with one output.

Built from a causal LM directory (the SFT model, the usual choice: a fresh linear `score` head is added) or an
encoder (BERT-like). The model scores the last non-pad token of each sequence (the first token, [CLS], for
encoders); `score_tokens` right-aligns left-padded input first, so both paddings give the same scores.
After training, `reward_stats.json` in the model directory holds the mean and std of its scores on the training
responses, which PPO uses to normalize rewards.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from rlhfkit.models.load import pick_device, pick_dtype

STATS_FILE = "reward_stats.json"


def load_reward_model(name_or_path: str, *, tokenizer, dtype: str = "auto", device: str = "auto", lora: Any = None):
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    dev = pick_device(device)
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # "newly initialized: score.weight" is expected from a causal LM checkpoint
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            name_or_path, num_labels=1, dtype=pick_dtype(dtype, dev)
        )
    finally:
        logging.set_verbosity(verbosity)
    model.config.pad_token_id = tokenizer.pad_token_id  # how the head finds the last real token
    model.config.use_cache = False  # scoring never decodes step by step
    model = model.to(dev)
    if lora is not None and lora.r > 0:
        from peft import LoraConfig, get_peft_model

        targets = lora.target_modules if lora.target_modules == "all-linear" else lora.target_modules.split(",")
        model = get_peft_model(
            model,
            LoraConfig(
                r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets, task_type="SEQ_CLS"
            ),
        )
    return model


def right_align(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, *, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's real tokens to the left edge (right padding). Rows that are already so are unchanged."""
    if not bool((attention_mask[:, 0] == 0).any()):
        return input_ids, attention_mask
    lengths = attention_mask.sum(dim=1)
    order = torch.argsort(1 - attention_mask, dim=1, stable=True)  # real tokens first, in their order
    ids = input_ids.gather(1, order)
    mask = (torch.arange(ids.size(1), device=ids.device).unsqueeze(0) < lengths.unsqueeze(1)).long()
    return ids.masked_fill(mask == 0, pad_id), mask


def score_tokens(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, pad_id: int) -> torch.Tensor:
    """(B,) scores of token sequences, left- or right-padded."""
    ids, mask = right_align(input_ids, attention_mask, pad_id=pad_id)
    return model(input_ids=ids, attention_mask=mask).logits[:, 0].float()


def write_stats(model_dir: str | Path, *, mean: float, std: float, count: int) -> dict[str, float]:
    stats = {"score_mean": mean, "score_std": std, "count": count}
    (Path(model_dir) / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def read_stats(model_dir: str | Path) -> dict[str, float] | None:
    path = Path(model_dir) / STATS_FILE
    return json.loads(path.read_text()) if path.exists() else None
