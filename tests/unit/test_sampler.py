"""The rollout sampler: its categorical draw, and its fast decoder against HF `generate` on the model layouts it
takes (grouped-query attention, LoRA-wrapped projections, Qwen3's per-head norms), with left-padded prompts."""

import pytest
import torch

from rlhfkit.data.collate import pad_left
from rlhfkit.models.sampler import _LlamaDecoder, draw, sample


def test_draw_matches_the_distribution_and_never_draws_a_zero():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.25, 0.25], [2.0, 0.0, 0.0, 0.0, 6.0]])  # rows need not sum to 1
    g = torch.Generator().manual_seed(0)
    n = 20000
    counts = torch.zeros_like(probs)
    for _ in range(n // 1000):
        tokens = draw(probs.repeat_interleave(1000, dim=0), g).view(2, 1000)
        counts += torch.nn.functional.one_hot(tokens, probs.size(1)).sum(dim=1)
    expected = probs / probs.sum(dim=1, keepdim=True)
    assert counts[probs == 0].sum() == 0
    sigma = (expected * (1 - expected) / n).sqrt()
    assert ((counts / n - expected).abs() <= 4 * sigma + 1e-9).all(), counts / n


@pytest.mark.parametrize("u", [1 - 2**-24, 1.0])  # the largest torch.rand gives, and a rounding beyond it
def test_draw_at_the_top_of_the_unit_interval_stays_in_support(monkeypatch, u):
    probs = torch.tensor([[0.3, 0.7, 0.0, 0.0]])
    monkeypatch.setattr(torch, "rand", lambda shape, **kw: torch.full(shape, u))
    assert draw(probs).item() == 1


def _llama(kind: str):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    common = dict(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2 if kind != "mha" else 4,
        max_position_embeddings=128,
        initializer_range=0.2,  # peaked logits: greedy choices are not near-ties
        pad_token_id=0,
        eos_token_id=1,
        tie_word_embeddings=False,
    )
    if kind == "qwen3":
        return Qwen3ForCausalLM(Qwen3Config(**common, head_dim=16)).eval()
    model = LlamaForCausalLM(LlamaConfig(**common)).eval()
    if kind == "lora":
        from peft import LoraConfig, get_peft_model

        # random A and B, so the adapters change the output and the unfused path is exercised
        config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False)
        model = get_peft_model(model, config).eval()
    return model


@pytest.mark.parametrize("kind", ["mha", "gqa", "lora", "qwen3"])
def test_fast_decoder_greedy_equals_hf_generate(kind):
    model = _llama(kind)
    assert _LlamaDecoder.supports(model)
    prompts = [[5, 9, 13, 22, 7, 3], [40, 2], [17, 17, 30, 8]]  # different lengths: left padding
    query, mask = pad_left(prompts, pad_id=0, device="cpu")
    ours = sample(model, query, mask, max_new_tokens=24, eos_id=-1, pad_id=0, temperature=0.0)
    with torch.no_grad():
        hf = model.generate(
            input_ids=query, attention_mask=mask, max_new_tokens=24, do_sample=False, pad_token_id=0, eos_token_id=None
        )[:, query.size(1) :]
    assert torch.equal(ours.tokens, hf)
    # and the slow path (transformers' cache) agrees too
    slow = sample(model, query, mask, max_new_tokens=24, eos_id=-1, pad_id=0, temperature=0.0, fast=False)
    assert torch.equal(slow.tokens, hf)
    torch.testing.assert_close(ours.logprobs, slow.logprobs, rtol=0, atol=1e-5)


def test_generate_answers_runs_the_rollout_sampler_and_agrees_with_hf_generate(tiny_lm, monkeypatch):
    """`rlhf generate`, SFT's gold metrics and the pipeline sample with the sampler PPO rolls out with; HF
    `generate` is the fallback and the oracle."""
    import rlhfkit.models.generate as gen
    from rlhfkit.models.load import load_causal_lm, load_tokenizer

    tok = load_tokenizer(str(tiny_lm), padding_side="left")
    model = load_causal_lm(str(tiny_lm), device="cpu")
    calls = []
    monkeypatch.setattr(gen, "sample", lambda *a, **kw: calls.append(1) or sample(*a, **kw))
    prompts = ["Where is the HR department in Boston?", "When is payday?", "hi"]
    ours = gen.generate_answers(model, tok, prompts, num_samples=2, max_new_tokens=12, batch_size=4)
    assert calls and len(ours) == 3 and all(len(a) == 2 and a[0] == a[1] for a in ours)
    assert ours == gen.generate_answers(model, tok, prompts, num_samples=2, max_new_tokens=12, sampler="hf")
    sampled = gen.generate_answers(model, tok, prompts, num_samples=3, temperature=1.0, seed=0, max_new_tokens=12)
    assert sampled == gen.generate_answers(
        model, tok, prompts, num_samples=3, temperature=1.0, seed=0, max_new_tokens=12
    )
