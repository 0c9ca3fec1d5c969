"""A KV-cached batched sampler for rollouts: temperature, top-p, stop at EOS per sequence, stop early when every
sequence has ended. It returns the sampled tokens' log-probabilities under logits / temperature (the distribution
PPO optimizes; the top-p cut only decides which tokens may be drawn).

Prompts come left-padded; positions count real tokens only, so a prompt's answer does not depend on how much
padding its batch needed. HF `generate` is the test oracle: greedy decoding gives the same tokens.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class Samples(NamedTuple):
    tokens: Tensor  # (B, T) sampled ids; pad_id after a sequence's EOS
    logprobs: Tensor  # (B, T) log p(token) under logits / temperature; 0 after EOS
    mask: Tensor  # (B, T) 1 on tokens up to and including EOS


def top_p_filter(logits: Tensor, top_p: float) -> Tensor:
    """Keep the smallest set of tokens whose probability reaches top_p (nucleus sampling, Holtzman et al. 2020)."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    remove_sorted = probs.cumsum(dim=-1) - probs >= top_p  # mass before this token already reaches top_p
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


FAST_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


class _HFDecoder:
    """Any causal LM through transformers' own KV cache."""

    def __init__(self, model, input_ids: Tensor, attention_mask: Tensor, max_new_tokens: int):
        from transformers import DynamicCache

        self.model, self.mask = model, attention_mask
        self.cache = DynamicCache(config=model.config)
        self.position = (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)

    def prefill(self, input_ids: Tensor) -> Tensor:
        logits = self.model(
            input_ids=input_ids,
            attention_mask=self.mask,
            position_ids=self.position,
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1]
        self.position = self.position[:, -1:] + 1
        return logits

    def step(self, token: Tensor) -> Tensor:
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        logits = self.model(
            input_ids=token.unsqueeze(1),
            attention_mask=self.mask,
            position_ids=self.position,
            past_key_values=self.cache,
            use_cache=True,
        ).logits[:, -1]
        self.position = self.position + 1
        return logits


class _LlamaDecoder:
    """Llama-family decoding with a preallocated KV cache, calling the model's own modules (norms, projections,
    rotary embedding, MLP, LoRA-wrapped layers too) but none of transformers' per-step bookkeeping, which costs more
    than the arithmetic at small sizes. Tokens equal HF `generate`'s (tested)."""

    def __init__(self, model, input_ids: Tensor, attention_mask: Tensor, max_new_tokens: int):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.lm_head, self.inner = base.lm_head, base.model
        cfg = base.config
        attn = self.inner.layers[0].self_attn
        batch, prompt_len = input_ids.shape
        self.capacity = prompt_len + max_new_tokens
        shape = (batch, cfg.num_key_value_heads, self.capacity, attn.head_dim)
        dtype, device = self.lm_head.weight.dtype, input_ids.device
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in self.inner.layers]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in self.inner.layers]
        self.valid = torch.zeros((batch, self.capacity), dtype=torch.bool, device=device)
        self.valid[:, :prompt_len] = attention_mask.bool()
        self.length = 0
        self.position = (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)
        self.gqa = cfg.num_attention_heads != cfg.num_key_value_heads
        # Plain linear layers are fused (q|k|v and gate|up: fewer, larger matmuls); LoRA-wrapped ones are called as is.
        self.fused = [self._fuse(layer) for layer in self.inner.layers]
        # Rotary tables for every position this call can reach, computed once.
        positions = torch.arange(int(self.position.max()) + max_new_tokens + 1, device=device).unsqueeze(0)
        cos, sin = self.inner.rotary_emb(self.lm_head.weight[:1].unsqueeze(0), positions)
        self.cos_table, self.sin_table = cos[0], sin[0]

    @staticmethod
    def _fuse(layer) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None] | None:
        a, mlp = layer.self_attn, layer.mlp
        parts = (a.q_proj, a.k_proj, a.v_proj, mlp.gate_proj, mlp.up_proj)
        if not all(type(m) is torch.nn.Linear for m in parts) or getattr(mlp, "act_fn", None) is None:
            return None
        cat_bias = lambda ms: None if ms[0].bias is None else torch.cat([m.bias for m in ms])  # noqa: E731
        return (
            torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]),
            cat_bias(parts[:3]),
            torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]),
            cat_bias(parts[3:]),
        )

    @staticmethod
    def supports(model) -> bool:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        cfg = getattr(base, "config", None)
        return (
            getattr(cfg, "model_type", None) in FAST_MODEL_TYPES
            and getattr(cfg, "sliding_window", None) is None
            and hasattr(base, "lm_head")
            and hasattr(getattr(base, "model", None), "layers")
        )

    def _forward(self, ids: Tensor, positions: Tensor) -> Tensor:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        t = ids.size(1)
        start, end = self.length, self.length + t
        keys_valid = self.valid[:, :end]
        # query i (layout index start + i) sees valid keys up to itself, and always itself (so a padding row
        # never has an empty softmax)
        key_index = torch.arange(end, device=ids.device)
        query_index = start + torch.arange(t, device=ids.device).unsqueeze(1)
        causal = key_index <= query_index
        mask = (causal.unsqueeze(0) & keys_valid.unsqueeze(1)) | (key_index == query_index).unsqueeze(0)
        mask = mask.unsqueeze(1)
        h = self.inner.embed_tokens(ids)
        cos, sin = self.cos_table[positions], self.sin_table[positions]
        batch = ids.size(0)
        for i, layer in enumerate(self.inner.layers):
            a = layer.self_attn
            x = layer.input_layernorm(h)
            fused = self.fused[i]
            if fused is not None:
                qkv = F.linear(x, fused[0], fused[1])
                n_q = a.q_proj.out_features
                n_kv = a.k_proj.out_features
                q, k, v = qkv.split([n_q, n_kv, n_kv], dim=-1)
            else:
                q, k, v = a.q_proj(x), a.k_proj(x), a.v_proj(x)
            q = q.view(batch, t, -1, a.head_dim)
            k = k.view(batch, t, -1, a.head_dim)
            v = v.view(batch, t, -1, a.head_dim)
            if hasattr(a, "q_norm"):  # Qwen3 normalizes queries and keys per head
                q, k = a.q_norm(q), a.k_norm(k)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            self.keys[i][:, :, start:end] = k
            self.values[i][:, :, start:end] = v
            out = F.scaled_dot_product_attention(
                q,
                self.keys[i][:, :, :end],
                self.values[i][:, :, :end],
                attn_mask=mask,
                scale=a.scaling,
                enable_gqa=self.gqa,
            )
            h = h + a.o_proj(out.transpose(1, 2).reshape(batch, t, -1))
            x = layer.post_attention_layernorm(h)
            if fused is not None:
                gate, up = F.linear(x, fused[2], fused[3]).chunk(2, dim=-1)
                h = h + layer.mlp.down_proj(layer.mlp.act_fn(gate) * up)
            else:
                h = h + layer.mlp(x)
        self.length = end
        return self.lm_head(self.inner.norm(h[:, -1]))

    def prefill(self, input_ids: Tensor) -> Tensor:
        logits = self._forward(input_ids, self.position)
        self.position = self.position[:, -1:] + 1
        return logits

    def step(self, token: Tensor) -> Tensor:
        self.valid[:, self.length] = True
        logits = self._forward(token.unsqueeze(1), self.position)
        self.position = self.position + 1
        return logits


@torch.no_grad()
def sample(
    model,
    input_ids: Tensor,
    attention_mask: Tensor,
    *,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    fast: bool = True,
) -> Samples:
    """Sample up to max_new_tokens for each left-padded prompt. temperature 0 is greedy. `fast` uses the
    preallocated-cache decoder for Llama-family models (others always take transformers' cache)."""
    batch = input_ids.size(0)
    device = input_ids.device
    decoder_cls = _LlamaDecoder if fast and _LlamaDecoder.supports(model) else _HFDecoder
    decoder = decoder_cls(model, input_ids, attention_mask, max_new_tokens)
    logits = decoder.prefill(input_ids)
    tokens = torch.full((batch, max_new_tokens), pad_id, dtype=torch.long, device=device)
    logprobs = torch.zeros((batch, max_new_tokens), dtype=torch.float32, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    steps = 0
    for t in range(max_new_tokens):
        scaled = logits.float() / temperature if temperature > 0 else logits.float()
        logp = F.log_softmax(scaled, dim=-1)
        if temperature > 0:
            probs = top_p_filter(scaled, top_p).softmax(dim=-1)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            token = scaled.argmax(dim=-1)
        token = token.masked_fill(finished, pad_id)
        tokens[:, t] = token
        logprobs[:, t] = logp.gather(1, token.unsqueeze(1)).squeeze(1).masked_fill(finished, 0.0)
        finished |= token == eos_id
        steps = t + 1
        if bool(finished.all()) or t == max_new_tokens - 1:
            break
        logits = decoder.step(token)
    tokens, logprobs = tokens[:, :steps], logprobs[:, :steps]
    # 1 up to and including the first EOS (everything, if a sequence hit the length limit)
    is_eos = tokens == eos_id
    after_eos = (is_eos.cumsum(dim=1) - is_eos.long()) > 0
    return Samples(tokens, logprobs, (~after_eos).long())
