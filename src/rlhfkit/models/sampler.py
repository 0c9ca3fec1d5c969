"""A KV-cached batched sampler for rollouts: temperature, top-p, stop at EOS per sequence, stop early when every
sequence has ended. It returns the sampled tokens' log-probabilities under logits / temperature (the distribution
PPO optimizes; the top-p cut only decides which tokens may be drawn).

Prompts come left-padded; positions count real tokens only, so a prompt's answer does not depend on how much
padding its batch needed. HF `generate` is the test oracle (greedy decoding gives the same tokens) and the fallback
(`hf_sample`).

Under mixed precision the sampler computes in the compute dtype (`dtype`): the fast decoder casts the weights it
uses once per call (a copy the size of the model in that dtype, freed afterwards) rather than once per step. Its
logprobs are the sampler's own; PPO recomputes the ones it compares with a full forward pass (see algorithms/ppo).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from rlhfkit.models.load import cache_kwargs, unwrapped


class Samples(NamedTuple):
    tokens: Tensor  # (B, T) sampled ids; pad_id after a sequence's EOS
    logprobs: Tensor  # (B, T) log p(token) under logits / temperature; 0 after EOS
    mask: Tensor  # (B, T) 1 on tokens up to and including EOS


def top_p_filter(logits: Tensor, top_p: float | Tensor) -> Tensor:
    """Keep the smallest set of tokens whose probability reaches top_p (nucleus sampling, Holtzman et al. 2020).
    `top_p` is one number, or one per row as a (B, 1) tensor: there a row at 1 keeps every token (its cumulative
    sum may round past 1 before the last token) and a row at 0 keeps its most likely token."""
    if not isinstance(top_p, Tensor):
        if top_p >= 1.0:
            return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    remove_sorted = probs.cumsum(dim=-1) - probs >= top_p  # mass before this token already reaches top_p
    if isinstance(top_p, Tensor):
        remove_sorted &= top_p < 1.0
        remove_sorted[:, 0] = False
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def draw(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One token per row of `probs` (rows need not sum to 1) by inverting the cumulative distribution with one
    uniform number per row. Exact like `torch.multinomial`, which draws one exponential number per vocabulary entry
    and costs more than a small model's whole decoding step."""
    cdf = probs.cumsum(dim=-1)
    total = cdf[:, -1:]
    u = torch.rand(total.shape, generator=generator, device=probs.device, dtype=probs.dtype)
    # the first index whose cdf exceeds u * total has positive probability; keep u * total below total so that
    # such an index always exists despite rounding
    x = torch.minimum(u * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, x, right=True).squeeze(1)


def race(probs: Tensor, noise: Tensor) -> Tensor:
    """One token per row of `probs` (rows need not sum to 1): the index of the largest probs / noise, `noise` being
    independent Exp(1) numbers, one per entry (the exponential race: entry j wins with probability probs_j / the row's
    sum; the Gumbel-max trick in another form). Used where a row's token must not depend on its batch: a tiny change
    of its probabilities (another batch shape's rounding, ~1e-5 in the logits) changes the winner only when the two
    best ratios nearly tie, whereas `draw`'s inverted cumulative sum moves at each of the vocabulary's boundaries
    (on SmolLM2, 5 of 12 seeded answers of 48 tokens changed with the batch that way; none with the race)."""
    return (probs.to(noise.dtype) / noise).argmax(dim=-1)


def exponential_noise(generators: Sequence[torch.Generator], size: int) -> Tensor:
    """(len(generators), size) Exp(1) numbers, row i from CPU generator i: -log of float64 uniforms in [0, 1), never
    0 (a 0 would let a token of probability 0 win). torch's exponential_ is several times slower."""
    return torch.stack([torch.rand(size, dtype=torch.float64, generator=g) for g in generators]).log_().neg_()


def choose_tokens(
    logits: Tensor,
    *,
    temperature: float | Tensor,
    top_p: float | Tensor,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One decoding step's choice: the next token of each row and the log-probabilities of every token under
    logits / temperature (B, V). temperature 0 is greedy (logprobs under the logits themselves). temperature and
    top_p are numbers, or (B,) tensors of per-row settings. Tokens are drawn with `draw` from `generator`, or, given
    `noise` (B, V) of Exp(1) numbers, by `race`; each row's token depends only on its own logits, settings and
    noise, never on the other rows."""
    if not isinstance(temperature, Tensor) and not isinstance(top_p, Tensor):
        scaled = logits.float() / temperature if temperature > 0 else logits.float()
        logp = F.log_softmax(scaled, dim=-1)
        if temperature > 0:
            probs = logp.exp() if top_p >= 1.0 else top_p_filter(scaled, top_p).softmax(dim=-1)
            return (draw(probs, generator) if noise is None else race(probs, noise.to(probs.device))), logp
        return scaled.argmax(dim=-1), logp
    batch, device = logits.size(0), logits.device
    temperature = torch.as_tensor(temperature, dtype=torch.float32, device=device).expand(batch)
    top_p = torch.as_tensor(top_p, dtype=torch.float32, device=device).expand(batch)
    greedy = temperature == 0
    scaled = logits.float() / torch.where(greedy, 1.0, temperature).unsqueeze(1)
    logp = F.log_softmax(scaled, dim=-1)
    probs = logp.exp()
    nucleus = (top_p < 1.0) & ~greedy
    if bool(nucleus.any()):
        kept = top_p_filter(scaled, top_p.unsqueeze(1)).softmax(dim=-1)
        probs = torch.where(nucleus.unsqueeze(1), kept, probs)
    drawn = draw(probs, generator) if noise is None else race(probs, noise.to(device))
    token = torch.where(greedy, scaled.argmax(dim=-1), drawn)
    return token, logp


FAST_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


class _HFDecoder:
    """Any causal LM through transformers' own KV cache."""

    def __init__(self, model, input_ids: Tensor, attention_mask: Tensor, max_new_tokens: int):
        from transformers import DynamicCache

        self.model, self.mask = model, attention_mask
        self.cache = DynamicCache(config=model.config)
        self.cache_kw = cache_kwargs(model, self.cache)
        self.position = (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)

    def prefill(self, input_ids: Tensor) -> Tensor:
        logits = self.model(
            input_ids=input_ids,
            attention_mask=self.mask,
            position_ids=self.position,
            **self.cache_kw,
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
            **self.cache_kw,
            use_cache=True,
        ).logits[:, -1]
        self.position = self.position + 1
        return logits


# RMSNorm classes whose forward is exactly F.rms_norm(x, weight, eps)
_PLAIN_RMS_NORMS = ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm")


def _cast(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if t is None else t.to(dtype)


def _direct(module, dtype: torch.dtype):
    """A plain Linear/Embedding/SiLU/RMSNorm as its functional call on weights in `dtype` (skipping nn.Module's call
    machinery and, for the norm, five of its six operators, which together cost as much as a small step's
    arithmetic); anything else (LoRA layers) as is, computed under the caller's autocast."""
    if type(module) is torch.nn.Linear:
        weight, bias = module.weight.to(dtype), _cast(module.bias, dtype)
        return lambda x: F.linear(x, weight, bias)
    if type(module) is torch.nn.Embedding:
        weight = module.weight.to(dtype)
        return lambda ids: F.embedding(ids, weight)
    if type(module) is torch.nn.SiLU or type(module).__name__ == "SiLUActivation":
        return F.silu
    if type(module).__name__ in _PLAIN_RMS_NORMS:
        weight, eps = module.weight.to(dtype), module.variance_epsilon
        if dtype == torch.float32:
            return lambda x: F.rms_norm(x, (weight.numel(),), weight, eps)
        # transformers normalizes in fp32, rounds, then scales in the low dtype: round where it rounds
        return lambda x: weight * F.rms_norm(x.float(), (weight.numel(),), None, eps).to(dtype)
    return module


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embedding of x (B, T, heads, D) with cos/sin (B, T, D): the same arithmetic as transformers'."""
    half = x.size(-1) // 2
    cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


class _LlamaDecoder:
    """Llama-family decoding with a preallocated KV cache, calling the model's own weights and modules (LoRA-wrapped
    layers too) but none of transformers' per-step bookkeeping, which costs more than the arithmetic at small sizes:
    q|k|v and gate|up projections fused (rotate_half folded into the first), one-token steps attend with two small
    matmuls against a precomputed padding bias. Tokens equal HF `generate`'s (tested)."""

    def __init__(self, model, input_ids: Tensor, attention_mask: Tensor, max_new_tokens: int, dtype: torch.dtype):
        base = unwrapped(model)
        self.lm_head, self.inner = base.lm_head, base.model
        cfg = base.config
        attn = self.inner.layers[0].self_attn
        batch, prompt_len = input_ids.shape
        self.capacity = prompt_len + max_new_tokens
        self.heads, self.kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, attn.head_dim
        shape = (batch, self.kv_heads, self.capacity, self.head_dim)
        self.dtype, device = dtype, input_ids.device
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in self.inner.layers]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in self.inner.layers]
        self.valid = torch.zeros((batch, self.capacity), dtype=torch.bool, device=device)
        self.valid[:, :prompt_len] = attention_mask.bool()
        self.valid[:, prompt_len:] = True  # every generated position holds a real key (HF generate's mask too)
        # additive attention bias of one-token steps, -inf on the prompt's padding, per (sequence, key/value head)
        # pair: the batch dimension of the step's batched matmuls
        bias = torch.zeros((batch, 1, self.capacity), dtype=torch.float32, device=device)
        bias.masked_fill_(~self.valid[:, None, :], float("-inf"))
        self.bias_bh = bias.repeat_interleave(self.kv_heads, dim=0)
        self.length = 0
        self.position = (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)
        # Plain linear layers are fused (fewer, larger matmuls); LoRA-wrapped ones are called as is.
        self.fused = [self._fuse(layer) for layer in self.inner.layers]
        self.norms = [
            (_direct(layer.input_layernorm, dtype), _direct(layer.post_attention_layernorm, dtype))
            for layer in self.inner.layers
        ]
        self.final_norm = _direct(self.inner.norm, dtype)
        self.embed, self.head = _direct(self.inner.embed_tokens, dtype), _direct(self.lm_head, dtype)
        self.o_proj = [_direct(layer.self_attn.o_proj, dtype) for layer in self.inner.layers]
        self.down = [_direct(layer.mlp.down_proj, dtype) for layer in self.inner.layers]
        self.act = [
            _direct(layer.mlp.act_fn, dtype) if hasattr(layer.mlp, "act_fn") else None for layer in self.inner.layers
        ]
        # Rotary tables for every position this call can reach, computed once.
        positions = torch.arange(int(self.position.max()) + max_new_tokens + 1, device=device).unsqueeze(0)
        cos, sin = self.inner.rotary_emb(torch.zeros(1, 1, dtype=dtype, device=device), positions)
        self.cos_table, self.sin_table = cos[0], sin[0]

    def _fuse(self, layer) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None] | None:
        """Weights (and biases) of [q | k | v | rotate_half(q) | rotate_half(k)] and [gate | up], or None when a
        projection is not a plain Linear (LoRA). rotate_half of a projection is the projection by its weight's rows
        permuted and negated, so one matmul also gives what the rotary embedding multiplies by sin."""
        a, mlp = layer.self_attn, layer.mlp
        parts = (a.q_proj, a.k_proj, a.v_proj, mlp.gate_proj, mlp.up_proj)
        if not all(type(m) is torch.nn.Linear for m in parts) or getattr(mlp, "act_fn", None) is None:
            return None
        attn = [a.q_proj, a.k_proj, a.v_proj]
        weights, biases = [m.weight for m in attn], [m.bias for m in attn]
        if not hasattr(a, "q_norm"):  # Qwen3 normalizes between projection and rotation: nothing to fold
            weights += [self._rotate_rows(a.q_proj.weight), self._rotate_rows(a.k_proj.weight)]
            if a.q_proj.bias is not None:
                biases += [self._rotate_rows(a.q_proj.bias), self._rotate_rows(a.k_proj.bias)]
        mlp_biases = [mlp.gate_proj.bias, mlp.up_proj.bias]
        return (
            torch.cat(weights).to(self.dtype),
            None if biases[0] is None else torch.cat(biases).to(self.dtype),
            torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).to(self.dtype),
            None if mlp_biases[0] is None else torch.cat(mlp_biases).to(self.dtype),
        )

    def _rotate_rows(self, w: Tensor) -> Tensor:
        """Rows of w such that x @ result.T == rotate_half(x @ w.T) per head."""
        heads = w.size(0) // self.head_dim
        w = w.reshape(heads, self.head_dim, *w.shape[1:])
        half = self.head_dim // 2
        return torch.cat([-w[:, half:], w[:, :half]], dim=1).reshape(heads * self.head_dim, *w.shape[2:])

    @staticmethod
    def supports(model) -> bool:
        base = unwrapped(model)
        cfg = getattr(base, "config", None)
        return (
            getattr(cfg, "model_type", None) in FAST_MODEL_TYPES
            and getattr(cfg, "sliding_window", None) is None
            and hasattr(base, "lm_head")
            and hasattr(getattr(base, "model", None), "layers")
        )

    def _qkv(self, layer, fused, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Rotated queries, rotated keys and values, each (B, heads, T, D)."""
        a = layer.self_attn
        batch, t = x.shape[:2]
        n_q, n_kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        if fused is not None and not hasattr(a, "q_norm"):
            out = F.linear(x, fused[0], fused[1])
            qk = out[..., : n_q + n_kv].view(batch, t, -1, self.head_dim)
            qk_half_rotated = out[..., n_q + 2 * n_kv :].view(batch, t, -1, self.head_dim)
            qk = qk * cos.unsqueeze(2) + qk_half_rotated * sin.unsqueeze(2)
            q, k = qk.split([self.heads, self.kv_heads], dim=2)
            v = out[..., n_q + n_kv : n_q + 2 * n_kv].view(batch, t, -1, self.head_dim)
        else:
            if fused is not None:
                q, k, v = F.linear(x, fused[0], fused[1]).split([n_q, n_kv, n_kv], dim=-1)
            else:
                q, k, v = a.q_proj(x), a.k_proj(x), a.v_proj(x)
            q = q.view(batch, t, -1, self.head_dim)
            k = k.view(batch, t, -1, self.head_dim)
            v = v.view(batch, t, -1, self.head_dim)
            if hasattr(a, "q_norm"):  # Qwen3 normalizes queries and keys per head before rotating them
                q, k = a.q_norm(q), a.k_norm(k)
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def _attend(self, i: int, scaling: float, q: Tensor, start: int, end: int) -> Tensor:
        """Attention output (B, T, heads * D) of queries at layout positions start..end-1."""
        batch, _, t, _ = q.shape
        if t == 1:
            # (B * kv_heads, group, D): each key/value head serves a group of consecutive query heads
            q = q.reshape(-1, self.heads // self.kv_heads, self.head_dim)
            keys = self.keys[i].view(-1, self.capacity, self.head_dim)[:, :end]
            values = self.values[i].view(-1, self.capacity, self.head_dim)[:, :end]
            if self.dtype == torch.float32:
                scores = torch.baddbmm(self.bias_bh[..., :end], q, keys.transpose(1, 2), alpha=scaling)
                return torch.bmm(scores.softmax(dim=-1), values).reshape(batch, 1, -1)
            # bf16/fp16 scores of size ~10 keep 2-3 significant digits, which moves the softmax: score in fp32
            # as transformers' attention does, then weigh the values in the compute dtype
            scores = torch.baddbmm(self.bias_bh[..., :end], q.float(), keys.float().transpose(1, 2), alpha=scaling)
            return torch.bmm(scores.softmax(dim=-1).to(self.dtype), values).reshape(batch, 1, -1)
        keys, values = self.keys[i][:, :, :end], self.values[i][:, :, :end]
        # query i (layout index start + i) sees valid keys up to itself, and always itself (so a padding row
        # never has an empty softmax)
        key_index = torch.arange(end, device=q.device)
        query_index = start + torch.arange(t, device=q.device).unsqueeze(1)
        causal = key_index <= query_index
        mask = (causal.unsqueeze(0) & self.valid[:, :end].unsqueeze(1)) | (key_index == query_index).unsqueeze(0)
        out = F.scaled_dot_product_attention(
            q, keys, values, attn_mask=mask.unsqueeze(1), scale=scaling, enable_gqa=self.heads != self.kv_heads
        )
        return out.transpose(1, 2).reshape(batch, t, -1)

    def _forward(self, ids: Tensor, positions: Tensor) -> Tensor:
        t = ids.size(1)
        start, end = self.length, self.length + t
        h = self.embed(ids)
        cos, sin = self.cos_table[positions], self.sin_table[positions]
        for i, layer in enumerate(self.inner.layers):
            fused, (norm_in, norm_post) = self.fused[i], self.norms[i]
            q, k, v = self._qkv(layer, fused, norm_in(h), cos, sin)
            self.keys[i][:, :, start:end] = k
            self.values[i][:, :, start:end] = v
            h = h + self.o_proj[i](self._attend(i, layer.self_attn.scaling, q, start, end))
            x = norm_post(h)
            if fused is not None:
                gate, up = F.linear(x, fused[2], fused[3]).chunk(2, dim=-1)
                h = h + self.down[i](self.act[i](gate) * up)
            else:
                h = h + layer.mlp(x)
        self.length = end
        return self.head(self.final_norm(h[:, -1]))

    def prefill(self, input_ids: Tensor) -> Tensor:
        logits = self._forward(input_ids, self.position)
        self.position = self.position[:, -1:] + 1
        return logits

    def step(self, token: Tensor) -> Tensor:
        logits = self._forward(token.unsqueeze(1), self.position)
        self.position = self.position + 1
        return logits


def fast_decoding(model) -> bool:
    """Whether `sample` decodes this model with its own decoder (which reads the weights and calls no module's
    forward) rather than through transformers' cache."""
    return _LlamaDecoder.supports(model)


def sample(
    model,
    input_ids: Tensor,
    attention_mask: Tensor,
    *,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    temperature: float | Tensor = 1.0,
    top_p: float | Tensor = 1.0,
    generator: torch.Generator | None = None,
    generators: Sequence[torch.Generator] | None = None,
    on_step: Callable[[int, Tensor, Tensor], None] | None = None,
    fast: bool = True,
    dtype: torch.dtype | None = None,
) -> Samples:
    """Sample up to max_new_tokens for each left-padded prompt. temperature 0 is greedy. `fast` uses the
    preallocated-cache decoder for Llama-family models (others always take transformers' cache). `dtype` is the
    compute dtype (None: the weights' own); a lower one than the weights' runs under autocast.

    For serving (rlhfkit.serve): temperature and top_p may be (B,) tensors of per-row settings; `generators` (one
    CPU generator per row) gives each row its own noise per step (`race`), so that a row's tokens do not depend on
    what it is batched with; `on_step(t, tokens, finished)` is called after step t with
    that step's tokens (B,) (pad_id on rows already finished) and may set entries of `finished` to end rows early
    (stop strings, per-row limits). The mask then also ends where on_step ended a row."""
    weight_dtype = next(model.parameters()).dtype
    dtype = dtype or weight_dtype
    device = input_ids.device
    mixed = dtype != weight_dtype
    # inference mode (no autograd bookkeeping at all) for the loop; the results are copied out of it so that they
    # can be used in training
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype) if mixed else nullcontext():
        batch = input_ids.size(0)
        if fast and fast_decoding(model):
            decoder = _LlamaDecoder(model, input_ids, attention_mask, max_new_tokens, dtype)
        else:
            decoder = _HFDecoder(model, input_ids, attention_mask, max_new_tokens)
        logits = decoder.prefill(input_ids)
        tokens = torch.full((batch, max_new_tokens), pad_id, dtype=torch.long, device=device)
        logprobs = torch.zeros((batch, max_new_tokens), dtype=torch.float32, device=device)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        live = torch.zeros((batch, max_new_tokens), dtype=torch.bool, device=device) if on_step else None
        steps = 0
        for t in range(max_new_tokens):
            noise = exponential_noise(generators, logits.size(-1)) if generators else None
            token, logp = choose_tokens(logits, temperature=temperature, top_p=top_p, generator=generator, noise=noise)
            token = token.masked_fill(finished, pad_id)
            tokens[:, t] = token
            logprobs[:, t] = logp.gather(1, token.unsqueeze(1)).squeeze(1).masked_fill(finished, 0.0)
            if live is not None:
                live[:, t] = ~finished
            finished |= token == eos_id
            if on_step is not None:
                on_step(t, token, finished)
            steps = t + 1
            if bool(finished.all()) or t == max_new_tokens - 1:
                break
            logits = decoder.step(token)
        tokens, logprobs = tokens[:, :steps], logprobs[:, :steps]
        if live is not None:
            mask = live[:, :steps].long()
        else:
            # 1 up to and including the first EOS (everything, if a sequence hit the length limit)
            is_eos = tokens == eos_id
            after_eos = (is_eos.cumsum(dim=1) - is_eos.long()) > 0
            mask = (~after_eos).long()
    return Samples(tokens.clone(), logprobs.clone(), mask.clone())


@contextmanager
def _plain_generation_config(model):
    """`generate` fills every setting left unset from the model's own generation_config (a repetition penalty,
    top_k, ...), which would make it sample from another distribution than the one we score: swap in a plain one."""
    from transformers import GenerationConfig

    base = unwrapped(model)
    saved = base.generation_config
    base.generation_config = GenerationConfig()
    try:
        yield
    finally:
        base.generation_config = saved


def hf_sample(
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
    dtype: torch.dtype | None = None,
) -> Samples:
    """The same contract as `sample` through transformers' `generate` (fallback and test oracle): only
    temperature, top-p, EOS and padding shape the distribution; logprobs under logits / temperature."""
    from rlhfkit.ops import logprobs_from_logits

    if generator is not None:  # generate draws from the global generator
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    sampling = temperature > 0
    weight_dtype = next(model.parameters()).dtype
    mixed = dtype is not None and dtype != weight_dtype
    with (
        torch.no_grad(),
        _plain_generation_config(model),
        torch.autocast(input_ids.device.type, dtype=dtype) if mixed else nullcontext(),
    ):
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            do_sample=sampling,
            temperature=temperature if sampling else None,
            top_p=top_p if sampling else None,
            top_k=0 if sampling else None,
            pad_token_id=pad_id,
            eos_token_id=eos_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
    tokens = out.sequences[:, input_ids.size(1) :]
    logits = torch.stack(out.logits, dim=1)
    logprobs = logprobs_from_logits(logits, tokens, temperature=temperature if sampling else 1.0)
    is_eos = tokens == eos_id
    mask = ((is_eos.cumsum(dim=1) - is_eos.long()) == 0).long()
    return Samples(tokens.masked_fill(mask == 0, pad_id), logprobs * mask, mask)
