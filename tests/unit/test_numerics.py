"""Numerics that no learning test can see: dropout rates hidden in modules, pooling when pad = EOS, logprob
arithmetic order, the HF fallback sampler's distribution, reward-data details (margins, centering, calibration)."""

import math

import pytest
import torch

from rlhfkit.config import RewardConfig
from rlhfkit.data.preferences import build_items
from rlhfkit.data.schema import PreferencePair, Ranking

PAD = EOS = 1  # as in Llama, Mistral, GPT-2 and SmolLM2 tokenizers: padding is the EOS token


def tiny_llama_config(**extra):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        initializer_range=0.2,
        pad_token_id=PAD,
        eos_token_id=EOS,
        **extra,
    )


def test_dropout_off_reaches_rates_that_transformers_copied_into_modules():
    from transformers import LlamaForCausalLM

    from rlhfkit.models.load import disable_dropout

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(attention_dropout=0.3)).train()
    ids = torch.tensor([[5, 9, 13, 22, 7, 3, 40, 2]])
    assert not torch.equal(model(ids).logits, model(ids).logits)  # the rate lives in each attention module
    disable_dropout(model)
    assert all(layer.self_attn.attention_dropout == 0.0 for layer in model.model.layers)
    assert torch.equal(model(ids).logits, model(ids).logits)


@pytest.mark.parametrize("shared_prefix", [True, False])
def test_reward_model_sees_the_eos_that_ends_an_answer_when_pad_is_eos(shared_prefix):
    from transformers import LlamaForSequenceClassification

    from rlhfkit.models.reward import PromptResponseScorer

    torch.manual_seed(0)
    model = LlamaForSequenceClassification(tiny_llama_config(num_labels=1)).eval()
    scorer = PromptResponseScorer(model, pad_id=PAD, shared_prefix=shared_prefix)
    prompt, answer = [5, 9, 13], [22, 7, 3]
    with torch.no_grad():
        finished, cut = scorer([prompt], [answer + [EOS], answer], [0, 0]).tolist()
        # a longer neighbour in the batch (more padding) changes nothing
        alone = scorer([prompt], [answer + [EOS]], [0]).item()
        full = model.model(input_ids=torch.tensor([prompt + answer + [EOS]])).last_hidden_state[:, -1]
    assert abs(finished - cut) > 1e-3  # transformers' own head would pool both at the last non-pad token
    assert finished == pytest.approx(alone, abs=1e-5)
    assert finished == pytest.approx(model.score(full).item(), abs=1e-5)  # the score of the EOS position


def test_logprobs_cast_to_fp32_before_the_temperature():
    from rlhfkit.ops import logprobs_from_logits

    torch.manual_seed(0)
    logits = (torch.randn(4, 7, 50) * 8).bfloat16()
    labels = torch.randint(0, 50, (4, 7))
    expected = torch.log_softmax(logits.float() / 0.7, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    assert torch.equal(logprobs_from_logits(logits, labels, temperature=0.7), expected)


def test_hf_fallback_samples_from_the_plain_distribution_not_the_models_generation_config():
    from transformers import LlamaForCausalLM

    from rlhfkit.data.collate import pad_left
    from rlhfkit.models.sampler import hf_sample, sample

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(tie_word_embeddings=False)).eval()
    model.generation_config.repetition_penalty = 10.0  # a shipped generation_config may hold anything
    model.generation_config.top_k = 3
    query, mask = pad_left([[5, 9, 13, 22], [40, 2]], pad_id=PAD)
    kw = dict(max_new_tokens=16, eos_id=-1, pad_id=PAD, temperature=0.0)
    ours, hf = sample(model, query, mask, **kw), hf_sample(model, query, mask, **kw)
    assert torch.equal(ours.tokens, hf.tokens)
    torch.testing.assert_close(ours.logprobs, hf.logprobs, rtol=0, atol=1e-5)
    assert model.generation_config.repetition_penalty == 10.0  # left as it was


def test_a_pairs_margin_keeps_its_sign_whatever_the_votes_say():
    pair = PreferencePair("q", "good", "bad", margin=2.0, votes={"chosen": 3, "rejected": 1, "tie": 2})
    (item,), _ = build_items([pair])
    (j,) = item.judgements
    a_is_chosen = item.responses[j.a] == "good"
    assert j.margin == (2.0 if a_is_chosen else -2.0)
    assert (j.p_a if a_is_chosen else j.p_b) == pytest.approx(3 / 6)
    # two records of one pair in opposite orders: each margin counts in favour of its own chosen response, so
    # after pooling the margin favours "good" by (2 - 1) / 2
    (item,), _ = build_items(
        [PreferencePair("q", "good", "bad", margin=2.0), PreferencePair("q", "bad", "good", margin=1.0)]
    )
    assert item.responses == ("good", "bad") and item.judgements[0].margin == pytest.approx(0.5)


def test_margins_under_a_tie_model_are_reported_not_silently_dropped():
    from rlhfkit.algorithms.reward import TokenizedItem, ignored_margins

    (item,), _ = build_items([PreferencePair("q", "good", "bad", margin=1.5)])
    items = [TokenizedItem(item, [1], ([2], [3]))]
    assert "1 pairs carry a margin" in ignored_margins(items, RewardConfig(tie_model="davidson"))
    assert ignored_margins(items, RewardConfig(tie_model="none")) is None


def test_plackett_luce_items_keep_the_centering_term():
    from rlhfkit.algorithms.reward import TokenizedItem, item_losses
    from rlhfkit.losses import plackett_luce

    (item,), _ = build_items([Ranking("q", ["x", "y", "z"], [1, 2, 3])])
    items = [TokenizedItem(item, [1], ([2], [3], [4]))]
    scores = torch.tensor([1.0, 0.5, -0.25])  # in the item's response order
    pl = plackett_luce(scores, torch.tensor(item.ranks)).item()
    # mean over the three pairs of (r_a + r_b)^2: (1.5^2 + 0.75^2 + 0.25^2) / 3
    centering = (1.5**2 + 0.75**2 + 0.25**2) / 3
    cfg = RewardConfig(loss="plackett_luce", center_coef=0.5)
    assert item_losses(scores, items, cfg).item() == pytest.approx(pl + 0.5 * centering, abs=1e-6)


def test_calibration_under_rao_kupper_uses_its_own_win_odds():
    from rlhfkit.data.preferences import Judgement
    from rlhfkit.eval.reward import preference_metrics

    # d = ln 4, theta = 2: P(a) = 2/3, P(b) = 1/9, so P(a | not a tie) = 6/7 (sigmoid(d) would say 4/5)
    pairs = [(math.log(4), 0.0, Judgement(0, 1, 1.0, 0.0, 0.0, 1))]
    rk = preference_metrics(pairs, [math.log(4), 0.0], tie_model="rao_kupper", tie_param=math.log(2))
    bt = preference_metrics(pairs, [math.log(4), 0.0], tie_model="davidson")
    assert rk["eval_ece"] == pytest.approx(1 / 7, abs=1e-6)
    assert bt["eval_ece"] == pytest.approx(1 / 5, abs=1e-6)


def test_kv_cache_goes_in_under_the_name_the_installed_transformers_takes():
    import warnings

    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM, LlamaForSequenceClassification

    from rlhfkit.data.collate import pad_left
    from rlhfkit.models.load import cache_kwargs
    from rlhfkit.models.logprobs import AnswerLogprobs
    from rlhfkit.models.reward import PromptResponseScorer
    from rlhfkit.models.sampler import hf_sample

    class Old(torch.nn.Module):  # transformers before the rename
        def forward(self, input_ids=None, past_key_values=None, use_cache=None): ...

    class New(torch.nn.Module):
        def forward(self, input_ids=None, cache=None, use_cache=None, **kwargs): ...

    assert cache_kwargs(Old(), "kv") == {"past_key_values": "kv"}
    assert cache_kwargs(New(), "kv") == {"cache": "kv"}

    torch.manual_seed(0)
    lm = LlamaForCausalLM(tiny_llama_config(tie_word_embeddings=False)).eval()
    lora = get_peft_model(lm, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False)).eval()
    rm = LlamaForSequenceClassification(tiny_llama_config(num_labels=1)).eval()
    prompts, answers, owner = [[5, 9, 13], [40, 2]], [[22, 7, EOS], [3, 3], [8, EOS]], [0, 0, 1]
    query, mask = pad_left(prompts, pad_id=PAD)
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        for model in (lm, lora):  # peft passes the keyword through to the transformers module inside
            cached = AnswerLogprobs(model, pad_id=PAD, shared_prefix=True)(prompts, answers, owner)[0]
            whole = AnswerLogprobs(model, pad_id=PAD, shared_prefix=False)(prompts, answers, owner)[0]
            torch.testing.assert_close(cached, whole, rtol=0, atol=1e-5)  # the cache was used, not dropped
            hf_sample(model, query, mask, max_new_tokens=4, eos_id=-1, pad_id=PAD, temperature=0.0)
        scores = [PromptResponseScorer(rm, pad_id=PAD, shared_prefix=s)(prompts, answers, owner) for s in (1, 0)]
        torch.testing.assert_close(*scores, rtol=0, atol=1e-5)
    assert not [str(w.message) for w in caught if "past_key_values" in str(w.message)]
