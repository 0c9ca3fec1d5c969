"""The critic: a causal backbone with a scalar head giving one value per token."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rlhfkit.models.load import apply_lora, checkpoint_activations, pick_device, pick_dtype
from rlhfkit.models.reward import backbone_and_head


class ValueModel(nn.Module):
    """values(input_ids, attention_mask, position_ids) -> (B, T): V(state after token t)."""

    def __init__(self, backbone: nn.Module, head: nn.Linear):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, input_ids, attention_mask, position_ids) -> torch.Tensor:
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state
        return self.head(hidden).squeeze(-1).float()


def load_value_model(
    name_or_path: str,
    *,
    pad_token_id: int,
    dtype: str = "auto",
    device: str = "auto",
    zero_head: bool = False,
    score_stats: dict[str, float] | None = None,
    lora: Any = None,
    gradient_checkpointing: bool = False,
) -> ValueModel:
    """From a reward-model directory (its backbone and head: the usual start) or a causal LM (a fresh head).

    `zero_head` starts every value at 0 (a fresh head on a causal LM). `score_stats` ({"score_mean", "score_std"})
    folds the reward normalization PPO applies into the head, w / std and (b - mean) / std, so that a critic
    started from the reward model predicts in the units of the rewards it is trained on. With `lora` (r > 0) the
    backbone is frozen under LoRA adapters and only they and the head train."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    dev = pick_device(device)
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # a causal LM checkpoint has no head yet: expected
    try:
        seq_cls = AutoModelForSequenceClassification.from_pretrained(
            name_or_path, num_labels=1, dtype=pick_dtype(dtype, dev)
        )
    finally:
        logging.set_verbosity(verbosity)
    seq_cls.config.pad_token_id = pad_token_id
    backbone, source = backbone_and_head(seq_cls)
    checkpoint_activations(backbone, gradient_checkpointing)
    head = nn.Linear(source.in_features, 1, bias=True, dtype=source.weight.dtype)  # a bias to fold the mean into
    with torch.no_grad():
        if zero_head:
            head.weight.zero_()
            head.bias.zero_()
        else:
            mean, std = (score_stats["score_mean"], max(score_stats["score_std"], 1e-8)) if score_stats else (0.0, 1.0)
            head.weight.copy_(source.weight / std)
            head.bias.fill_(((source.bias.item() if source.bias is not None else 0.0) - mean) / std)
    return ValueModel(apply_lora(backbone, lora, task_type="FEATURE_EXTRACTION"), head).to(dev)
