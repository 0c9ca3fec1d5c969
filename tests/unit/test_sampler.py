"""The rollout sampler: its categorical draw, and its fast decoder against HF `generate` on the model layouts it
takes (grouped-query attention, LoRA-wrapped projections, Qwen3's per-head norms), with left-padded prompts; the
per-row settings, generators and step hook that serving batches requests with."""

import pytest
import torch

from rlhfkit.data.collate import pad_left
from rlhfkit.models.sampler import (
    _LlamaDecoder,
    choose_tokens,
    draw,
    exponential_noise,
    race,
    sample,
    top_p_filter,
)


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


def test_race_by_hand_and_from_its_noise():
    probs = torch.tensor([[0.2, 0.0, 0.5, 0.3], [2.0, 0.0, 1.0, 1.0]])  # rows need not sum to 1
    noise = torch.tensor([[1.0, 1e-300, 2.0, 0.1], [4.0, 1e-300, 1.0, 0.5]], dtype=torch.float64)
    # ratios 0.2, 0, 0.25, 3 and 0.5, 0, 1, 2: a zero probability never wins, however small its noise
    assert race(probs, noise).tolist() == [3, 3]
    g = [torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)]
    a, b = exponential_noise(g, 1000), exponential_noise(g[:1], 1000)
    assert a.dtype == torch.float64 and (a > 0).all() and torch.equal(a[0], a[1])  # row i from generator i
    assert not torch.equal(a[0], b[0])  # the generator moved on
    assert abs(float(a.mean()) - 1.0) < 0.1  # Exp(1)


def test_race_matches_the_distribution_and_never_draws_a_zero():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.25, 0.25], [2.0, 0.0, 0.0, 0.0, 6.0]])
    g = [torch.Generator().manual_seed(1)]
    n = 20000
    tokens = torch.stack([race(probs, torch.cat([exponential_noise(g, 5), exponential_noise(g, 5)])) for _ in range(n)])
    counts = torch.nn.functional.one_hot(tokens, 5).sum(dim=0).double()
    expected = probs / probs.sum(dim=1, keepdim=True)
    assert counts[probs == 0].sum() == 0
    sigma = (expected * (1 - expected) / n).sqrt()
    assert ((counts / n - expected).abs() <= 4 * sigma + 1e-9).all(), counts / n


def test_race_keeps_its_token_when_rounding_moves_the_probabilities_and_draw_does_not():
    """Why serving draws by race: the same row computed in another batch differs by ~5e-5 in its logits (measured on
    SmolLM2). With a real model's spread of logits over a 50k vocabulary that flips the inverted-cdf draw of a few
    percent of the rows (each flip changes the rest of an answer), the race's almost never."""
    torch.manual_seed(0)
    logits = torch.randn(300, 50_000) * 3
    moved = logits + torch.randn_like(logits) * 5e-5
    p, q = logits.softmax(dim=-1), moved.softmax(dim=-1)
    u = torch.rand(300, 1)
    drawn = [torch.searchsorted(x.cumsum(-1), u * x.sum(-1, keepdim=True), right=True).squeeze(1) for x in (p, q)]
    noise = exponential_noise([torch.Generator().manual_seed(i) for i in range(300)], 50_000)
    raced = race(p, noise), race(q, noise)
    assert int((drawn[0] != drawn[1]).sum()) >= 5  # measured: 11 of 300
    assert int((raced[0] != raced[1]).sum()) <= 1  # measured: none


def test_top_p_filter_per_row_keeps_every_token_at_1_and_the_best_at_0():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(4, 1)
    # cumulative sums that round past 1 before the last token: a scalar 1 returns early, a row at 1 must keep all
    tail = torch.log(torch.tensor([[0.5, 0.5, 1e-9, 1e-9]]))
    top_p = torch.tensor([[0.7], [1.0], [0.0], [0.4]])
    kept = torch.isfinite(top_p_filter(torch.cat([logits[:3], tail]), torch.cat([top_p[:3], torch.ones(1, 1)])))
    assert kept.tolist() == [[True, True, False, False], [True] * 4, [True, False, False, False], [True] * 4]
    assert torch.equal(top_p_filter(logits, top_p)[3:], top_p_filter(logits[3:], 0.4))


def test_choose_tokens_per_row_equals_each_row_chosen_alone():
    torch.manual_seed(1)
    logits = torch.randn(4, 50) * 3
    temperature, top_p = torch.tensor([0.0, 1.0, 0.7, 1.3]), torch.tensor([1.0, 1.0, 0.5, 0.9])
    noise = exponential_noise([torch.Generator().manual_seed(i) for i in range(4)], 50)
    token, logp = choose_tokens(logits, temperature=temperature, top_p=top_p, noise=noise)
    for i in range(4):
        alone, alone_logp = choose_tokens(
            logits[i : i + 1], temperature=float(temperature[i]), top_p=float(top_p[i]), noise=noise[i : i + 1]
        )
        assert token[i] == alone[0]
        assert torch.equal(logp[i], alone_logp[0])
    assert token[0] == logits[0].argmax()  # temperature 0 is greedy whatever its uniform


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


def test_sample_with_a_generator_per_row_does_not_depend_on_the_batch():
    """Serving batches unrelated requests: a row with its own generator draws the same tokens alone and beside
    others (other prompt lengths, settings and generators), and on_step ends rows early."""
    model = _llama("gqa")
    prompts = [[5, 9, 13, 22, 7, 3], [40, 2], [17, 17, 30, 8]]
    query, mask = pad_left(prompts, pad_id=0, device="cpu")

    def gens(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    kw = dict(max_new_tokens=16, eos_id=-1, pad_id=0)
    batched = sample(
        model,
        query,
        mask,
        temperature=torch.tensor([1.0, 0.0, 0.8]),
        top_p=torch.tensor([1.0, 1.0, 0.9]),
        generators=gens([7, 8, 9]),
        **kw,
    )
    for i, (temperature, top_p, seed) in enumerate([(1.0, 1.0, 7), (0.0, 1.0, 8), (0.8, 0.9, 9)]):
        q, m = pad_left([prompts[i]], pad_id=0, device="cpu")
        alone = sample(
            model,
            q,
            m,
            temperature=torch.tensor([temperature]),
            top_p=torch.tensor([top_p]),
            generators=gens([seed]),
            **kw,
        )
        assert torch.equal(batched.tokens[i], alone.tokens[0]), i
    other_seed = sample(
        model, query, mask, temperature=torch.ones(3), top_p=torch.ones(3), generators=gens([1, 8, 9]), **kw
    )
    assert not torch.equal(other_seed.tokens[0], batched.tokens[0])

    seen = []

    def stop_row_1_after_step_3(t, tokens, finished):
        seen.append(tokens.clone())
        if t == 3:
            finished[1] = True

    hooked = sample(
        model,
        query,
        mask,
        temperature=torch.tensor([1.0, 0.0, 0.8]),
        top_p=torch.tensor([1.0, 1.0, 0.9]),
        generators=gens([7, 8, 9]),
        on_step=stop_row_1_after_step_3,
        **kw,
    )
    assert len(seen) == 16 and torch.equal(torch.stack(seen, dim=1), hooked.tokens)
    assert torch.equal(hooked.tokens[1, :4], batched.tokens[1, :4]) and (hooked.tokens[1, 4:] == 0).all()
    assert hooked.mask[1].tolist() == [1] * 4 + [0] * 12 and hooked.mask[[0, 2]].all()
    assert torch.equal(hooked.tokens[[0, 2]], batched.tokens[[0, 2]])
