"""The critic: a causal backbone with a scalar head giving one value per token."""

from __future__ import annotations

import torch
from torch import nn

from rlhfkit.models.load import pick_device, pick_dtype


def scalar_head(seq_cls_model) -> nn.Linear:
    """The one-output linear head of a sequence-classification model (`score` in Llama-like models)."""
    for name in ("score", "classifier", "v_head"):
        head = getattr(seq_cls_model, name, None)
        if isinstance(head, nn.Linear) and head.out_features == 1:
            return head
    raise ValueError(f"{type(seq_cls_model).__name__} has no single-output linear head (score/classifier)")


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
    name_or_path: str, *, pad_token_id: int, dtype: str = "auto", device: str = "auto", zero_head: bool = False
) -> ValueModel:
    """From a reward-model directory (its backbone and head: the usual start) or a causal LM (a fresh head)."""
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
    head = scalar_head(seq_cls)
    if zero_head:
        nn.init.zeros_(head.weight)
        if head.bias is not None:
            nn.init.zeros_(head.bias)
    return ValueModel(seq_cls.base_model, head).to(dev)
