"""Scalar reward models and the rewards PPO optimizes.

A reward model is any Hugging Face sequence-classification model with one output: built from a causal LM directory
(the SFT model, the usual choice: a fresh linear `score` head is added) or an encoder (BERT-like).

Pooling: a decoder model is scored at the last position of the attention mask, by running its backbone and head
ourselves. transformers' own head pools at the last token that is not the pad id, and many tokenizers (Llama,
Mistral, GPT-2, SmolLM2) pad with EOS: it would never see the EOS that ends a finished answer, so a finished answer
and the same answer cut at the length limit would score the same. Encoders are scored at their first token ([CLS]).

`PromptResponseScorer` scores responses to prompts: prompts left-padded, responses right-padded, with positions
counted over real tokens only, so a score does not depend on its batch's padding. After training,
`reward_stats.json` in the model directory holds the mean and std of its scores on the training responses, which
PPO uses to normalize rewards.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rlhfkit.config import ConfigError
from rlhfkit.data.collate import pad_left, pad_right
from rlhfkit.data.prompts import encode_prompt, format_prompt
from rlhfkit.models.load import (
    apply_lora,
    cache_kwargs,
    disable_dropout,
    load_tokenizer,
    pick_device,
    pick_dtype,
    unwrapped,
)

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
    model.config.pad_token_id = tokenizer.pad_token_id  # for users of the saved model through transformers' head
    model.config.use_cache = False  # scoring never decodes step by step
    return apply_lora(model.to(dev), lora, task_type="SEQ_CLS")


def load_scorer(model_dir: str, *, dtype: str = "auto", device: str = "auto") -> tuple[PromptResponseScorer, Any]:
    """A reward-model directory as a frozen scorer, and its tokenizer."""
    tokenizer = load_tokenizer(model_dir)
    model = load_reward_model(model_dir, tokenizer=tokenizer, dtype=dtype, device=device).eval().requires_grad_(False)
    disable_dropout(model)
    return PromptResponseScorer(model, pad_id=tokenizer.pad_token_id), tokenizer


def is_decoder_only(model) -> bool:
    """Causal decoder (Llama, GPT, ...) rather than an encoder such as BERT, judged by the model type."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", "")
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def backbone_and_head(seq_cls_model) -> tuple[nn.Module, nn.Module]:
    """The transformer and the one-output head of a sequence-classification model (under peft too: its LoRA
    layers sit inside the backbone and its head is the trainable copy peft keeps)."""
    inner = unwrapped(seq_cls_model)
    for name in ("score", "classifier", "v_head"):
        head = getattr(inner, name, None)
        linear = getattr(head, "original_module", head)  # peft's ModulesToSaveWrapper keeps the original beside
        if isinstance(linear, nn.Linear) and linear.out_features == 1:
            return inner.base_model, head
    raise ValueError(f"{type(inner).__name__} has no single-output linear head (score/classifier)")


def last_real(mask: Tensor) -> Tensor:
    """Index of the last 1 in each row of an attention mask (right- or left-padded)."""
    positions = torch.arange(mask.size(1), device=mask.device)
    return (positions * mask.bool()).argmax(dim=1)


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
        self.decoder = is_decoder_only(model)
        self.shared_prefix = shared_prefix and self.decoder

    def forward(self, prompts: list[list[int]], answers: list[list[int]], owner: list[int]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        if not self.decoder:  # encoders: transformers' head reads the first token
            ids, mask = pad_right([prompts[o] + a for o, a in zip(owner, answers)], pad_id=self.pad_id, device=device)
            return self.model(input_ids=ids, attention_mask=mask).logits[:, 0].float()
        backbone, head = backbone_and_head(self.model)
        if not self.shared_prefix:
            ids, mask = pad_right([prompts[o] + a for o, a in zip(owner, answers)], pad_id=self.pad_id, device=device)
            hidden = backbone(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            return head(hidden[torch.arange(len(answers), device=device), last_real(mask)]).squeeze(-1).float()
        from transformers import DynamicCache

        p_ids, p_mask = pad_left(prompts, pad_id=self.pad_id, device=device)
        cache = DynamicCache(config=self.model.config)
        cache_kw = cache_kwargs(backbone, cache)
        p_pos = (p_mask.cumsum(dim=1) - 1).clamp(min=0)
        backbone(input_ids=p_ids, attention_mask=p_mask, position_ids=p_pos, use_cache=True, **cache_kw)
        index = torch.tensor(owner, device=device)
        cache.batch_select_indices(index)
        a_ids, a_mask = pad_right(answers, pad_id=self.pad_id, device=device)
        positions = p_mask.sum(dim=1)[index].unsqueeze(1) + torch.arange(a_ids.size(1), device=device)
        mask = torch.cat([p_mask[index], a_mask], dim=1)
        hidden = backbone(
            input_ids=a_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **cache_kw,
        ).last_hidden_state
        return head(hidden[torch.arange(len(answers), device=device), last_real(a_mask)]).squeeze(-1).float()


def write_stats(model_dir: str | Path, *, mean: float, std: float, count: int) -> dict[str, float]:
    stats = {"score_mean": mean, "score_std": std, "count": count}
    (Path(model_dir) / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def read_stats(model_dir: str | Path) -> dict[str, float] | None:
    path = Path(model_dir) / STATS_FILE
    return json.loads(path.read_text()) if path.exists() else None


def same_vocabulary(a, b) -> bool:
    """Whether two tokenizers turn text into the same ids (and end answers with the same EOS)."""
    return a.get_vocab() == b.get_vocab() and a.eos_token_id == b.eos_token_id


# --- the task reward in PPO: a reward model or a Python function -------------------------------------------------


def load_reward_fn(spec: str) -> Callable[[list[str], list[str]], list[float]]:
    """ "package.module:function" or "path/to/file.py:function"."""
    module_name, sep, fn_name = spec.rpartition(":")
    if not sep or not module_name or not fn_name:
        raise ConfigError(f"reward_fn must look like module:function or file.py:function, got {spec!r}")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.exists():
            raise ConfigError(f"reward_fn: {path}: no such file")
        spec_obj = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec_obj)  # type: ignore[arg-type]
        spec_obj.loader.exec_module(module)  # type: ignore[union-attr]
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise ConfigError(f"reward_fn: cannot import {module_name!r}: {e}") from e
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ConfigError(f"reward_fn: {module_name} has no function {fn_name!r}")
    return fn


@dataclass
class Responses:
    """A batch of sampled responses as every kind of reward needs them."""

    prompts: list  # as given (strings or message lists)
    prompt_ids: list[list[int]]  # the policy's tokens of each formatted prompt
    ids: list[list[int]]  # the policy's response tokens, up to and including EOS where the response ended
    texts: list[str]  # decoded responses, special tokens removed
    finished: list[bool]  # ended with EOS (False: cut at max_new_tokens)


@dataclass
class RewardFunction:
    """A Python reward `fn(prompts: list[str], responses: list[str]) -> list[float]`, scored on text."""

    fn: Callable[[list[str], list[str]], list[float]]
    tokenizer: Any  # the policy's: formats message-list prompts as the policy saw them
    template: str = "chat"

    def __call__(self, batch: Responses) -> Tensor:
        prompts = [
            p if isinstance(p, str) else format_prompt(self.tokenizer, p, template=self.template) for p in batch.prompts
        ]
        scores = self.fn(prompts, batch.texts)
        if len(scores) != len(batch.texts):
            raise ValueError(f"reward_fn returned {len(scores)} scores for {len(batch.texts)} responses")
        return torch.tensor([float(s) for s in scores])


@dataclass
class RewardModelScore:
    """A frozen reward model. With the policy's vocabulary it scores the sampled ids as they are; otherwise the
    text is encoded again with its own tokenizer, ending in EOS only where the policy's response ended."""

    scorer: PromptResponseScorer
    tokenizer: Any  # the reward model's
    same_tokenizer: bool
    template: str = "chat"

    @torch.no_grad()
    def __call__(self, batch: Responses) -> Tensor:
        prompt_ids, ids = batch.prompt_ids, batch.ids
        if not self.same_tokenizer:
            eos = [self.tokenizer.eos_token_id]
            prompt_ids = [encode_prompt(self.tokenizer, p, template=self.template) for p in batch.prompts]
            ids = [
                self.tokenizer(t, add_special_tokens=False).input_ids + (eos if done else [])
                for t, done in zip(batch.texts, batch.finished)
            ]
        ids = [x or [self.tokenizer.pad_token_id] for x in ids]  # an empty response still needs one position
        return self.scorer(prompt_ids, ids, list(range(len(ids)))).float().cpu()
