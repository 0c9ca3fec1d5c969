"""Tiny models and tokenizers built offline in seconds, for tests, benchmarks and the demo's base model.

A byte-level BPE tokenizer is trained on the given text with `tokenizers`; the model is a randomly initialised
Llama. Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rlhfkit.data.prompts import FALLBACK_CHAT_TEMPLATE

PAD, EOS = "<pad>", "<eos>"


def train_tokenizer(texts: Iterable[str], *, vocab_size: int = 512):
    """Byte-level BPE (every byte is representable, so any text round-trips) with <pad> and <eos>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(list(texts), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS)
    fast.chat_template = FALLBACK_CHAT_TEMPLATE
    return fast


def tiny_llama_config(
    tokenizer,
    *,
    hidden: int = 32,
    layers: int = 2,
    heads: int | None = None,
    intermediate: int | None = None,
    max_positions: int = 1024,
):
    from transformers import LlamaConfig

    heads = heads or max(1, hidden // 16)
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate or 4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )


def build_tiny_causal_lm(
    out_dir: str | Path,
    texts: Iterable[str],
    *,
    vocab_size: int = 512,
    hidden: int = 32,
    layers: int = 2,
    heads: int | None = None,
    intermediate: int | None = None,
    max_positions: int = 1024,
    seed: int = 0,
) -> Path:
    """Train a tokenizer on `texts`, initialise a tiny Llama, save both to `out_dir` (a normal HF model directory)."""
    import torch
    from transformers import LlamaForCausalLM

    tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(
        tiny_llama_config(
            tokenizer, hidden=hidden, layers=layers, heads=heads, intermediate=intermediate, max_positions=max_positions
        )
    )
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
