"""Scalar reward models: any Hugging Face sequence-classification model with one output.

Built from a causal LM directory (the SFT model, the usual choice: a fresh linear `score` head is added) or an
encoder (BERT-like). The model scores the last non-pad token of each sequence (the first token, [CLS], for
encoders). `PromptResponseScorer` scores responses to prompts: prompts left-padded, responses right-padded, with
positions counted over real tokens only, so a score does not depend on its batch's padding.
After training, `reward_stats.json` in the model directory holds the mean and std of its scores on the training
responses, which PPO uses to normalize rewards.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from rlhfkit.data.collate import pad_left, pad_right
from rlhfkit.models.load import apply_lora, pick_device, pick_dtype

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
    return apply_lora(model.to(dev), lora, task_type="SEQ_CLS")


def is_decoder_only(model) -> bool:
    """Causal decoder (Llama, GPT, ...) rather than an encoder such as BERT, judged by the model type."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", "")
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


class PromptResponseScorer(torch.nn.Module):
    """Scores responses given their prompts: forward(prompts, answers, owner) -> (N,) scores, where answers[n]
    continues prompts[owner[n]]. One module, so DDP and checkpoints see one model.

    With shared_prefix (decoder models), each prompt is run once and its KV cache is reused by all of its K
    responses; gradients flow back through the cache. The scores equal those of the full sequences (tested), with
    fewer tokens computed: a pair's prompt is processed once instead of twice.
    """

    def __init__(self, model, *, pad_id: int, shared_prefix: bool = True):
        super().__init__()
        self.model, self.pad_id = model, pad_id
        self.shared_prefix = shared_prefix and is_decoder_only(model)

    def forward(self, prompts: list[list[int]], answers: list[list[int]], owner: list[int]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        if not self.shared_prefix:
            ids, mask = pad_right([prompts[o] + a for o, a in zip(owner, answers)], pad_id=self.pad_id, device=device)
            return self.model(input_ids=ids, attention_mask=mask).logits[:, 0].float()
        from transformers import DynamicCache

        p_ids, p_mask = pad_left(prompts, pad_id=self.pad_id, device=device)
        cache = DynamicCache(config=self.model.config)
        p_pos = (p_mask.cumsum(dim=1) - 1).clamp(min=0)
        self.model(input_ids=p_ids, attention_mask=p_mask, position_ids=p_pos, past_key_values=cache, use_cache=True)
        index = torch.tensor(owner, device=device)
        cache.batch_select_indices(index)
        a_ids, a_mask = pad_right(answers, pad_id=self.pad_id, device=device)
        positions = p_mask.sum(dim=1)[index].unsqueeze(1) + torch.arange(a_ids.size(1), device=device)
        mask = torch.cat([p_mask[index], a_mask], dim=1)
        out = self.model(
            input_ids=a_ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True
        )
        return out.logits[:, 0].float()


def write_stats(model_dir: str | Path, *, mean: float, std: float, count: int) -> dict[str, float]:
    stats = {"score_mean": mean, "score_std": std, "count": count}
    (Path(model_dir) / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def read_stats(model_dir: str | Path) -> dict[str, float] | None:
    path = Path(model_dir) / STATS_FILE
    return json.loads(path.read_text()) if path.exists() else None
