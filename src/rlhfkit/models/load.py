"""Load any Hugging Face causal LM directory or hub id, its tokenizer, and optional LoRA adapters; save a run's model.

A tokenizer without a chat template gets FALLBACK_CHAT_TEMPLATE (data/prompts.py), which is saved with every model
we write, so later stages format prompts the same way.
"""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import torch

from rlhfkit.config import ConfigError
from rlhfkit.data.prompts import FALLBACK_CHAT_TEMPLATE

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def pick_device(device: str = "auto") -> torch.device:
    """cuda > mps > cpu for "auto"; otherwise the named device."""
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """ "auto": bf16 on a GPU that supports it, fp32 elsewhere (CPU bf16 matmuls are slower than fp32 on most CPUs)."""
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in _DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not one of auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def unwrapped(model):
    """The transformers model inside a peft wrapper (its LoRA layers sit inside it), or the model itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def cache_kwargs(model, kv_cache) -> dict[str, Any]:
    """The keyword argument that hands `kv_cache` to `model`'s forward: `cache` where transformers renamed it (5.x
    warns that `past_key_values` goes in 5.40), `past_key_values` in the versions before. `model` may be wrapped by
    peft; the transformers module inside decides."""
    return {_cache_keyword(type(unwrapped(model))): kv_cache}


@cache
def _cache_keyword(cls: type) -> str:
    params = inspect.signature(cls.forward).parameters
    return "cache" if "cache" in params and "past_key_values" not in params else "past_key_values"


def load_tokenizer(name_or_path: str, *, padding_side: str = "right"):
    """AutoTokenizer with a pad token (the EOS token where the model has none) and a chat template."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name_or_path)
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ValueError(f"{name_or_path}: tokenizer has neither a pad nor an EOS token")
        tok.pad_token = tok.eos_token  # padding is masked by attention_mask and labels, never by token id
    if not getattr(tok, "chat_template", None):
        tok.chat_template = FALLBACK_CHAT_TEMPLATE
    tok.padding_side = padding_side
    return tok


def load_causal_lm(
    name_or_path: str, *, dtype: str = "auto", device: str = "auto", lora: Any = None, trust_remote_code: bool = False
):
    """AutoModelForCausalLM on the chosen device and dtype; with `lora.r > 0`, wrapped in peft LoRA adapters."""
    from transformers import AutoModelForCausalLM

    dev = pick_device(device)
    model = AutoModelForCausalLM.from_pretrained(
        name_or_path, dtype=pick_dtype(dtype, dev), trust_remote_code=trust_remote_code
    ).to(dev)
    return apply_lora(model, lora, task_type="CAUSAL_LM")


def disable_dropout(model) -> None:
    """Every dropout rate to 0: nn.Dropout modules, the rates transformers copies from the config into modules when
    it builds them (Llama/Qwen/Mistral attention's `attention_dropout`, OPT's `dropout`, ...), and the config's own
    fields. PPO needs its rollout and its update to compute the same function."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name, value in list(vars(module).items()):
            if ("dropout" in name or name.endswith("pdrop")) and isinstance(value, float):
                setattr(module, name, 0.0)
        config = getattr(module, "config", None)
        for name, value in list(vars(config).items()) if config is not None else []:
            if ("dropout" in name or name.endswith("pdrop")) and isinstance(value, float):
                setattr(config, name, 0.0)


def checkpoint_activations(model, enabled: bool = True):
    """Gradient (activation) checkpointing on a transformers model, peft-wrapped or not; returns the model. Active in
    training mode only, so scoring passes in eval mode are unaffected."""
    if enabled:
        inner = unwrapped(model)
        if hasattr(inner, "activation_checkpointing_enable"):  # transformers 5.x; the old name goes in 6
            inner.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def apply_lora(model, lora: Any, *, task_type: str):
    """Wrap `model` in peft LoRA adapters when `lora.r > 0` (task_type "CAUSAL_LM" or "SEQ_CLS"); else return it."""
    if lora is None or lora.r <= 0:
        return model
    from peft import LoraConfig, get_peft_model

    targets = lora.target_modules if lora.target_modules == "all-linear" else lora.target_modules.split(",")
    config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets, task_type=task_type
    )
    return get_peft_model(model, config)


def save_model(model, tokenizer, out_dir: str | os.PathLike, *, merge_lora: bool = True) -> None:
    """Write a model directory loadable by from_pretrained. Files are written beside it first, then moved in,
    so an interrupted save never leaves a half-written model in out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if merge_lora and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=out))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for f in tmp.iterdir():
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class adapters_off:
    """A context in which a LoRA model computes as its base: the adapters switched off (the reference of PPO and DPO,
    the same base weights, no second copy). `prepared` is the module to call, e.g. the accelerator's wrapper whose
    forward applies autocast."""

    def __init__(self, peft_model, prepared: torch.nn.Module):
        self.peft_model, self.prepared, self.ctx = peft_model, prepared, None

    def __enter__(self) -> torch.nn.Module:
        self.ctx = self.peft_model.disable_adapter()
        self.ctx.__enter__()
        return self.prepared

    def __exit__(self, *exc) -> None:
        self.ctx.__exit__(*exc)
