"""Tokenization masks the prompt, keeps the completion whole, and packed batches keep sequences apart."""

import torch

from rlhfkit.data.collate import collate_packed, collate_padded, tokenize_sft
from rlhfkit.data.prompts import FALLBACK_CHAT_TEMPLATE, encode_prompt, format_prompt
from rlhfkit.data.schema import SFTRecord
from rlhfkit.losses import IGNORE_INDEX


def test_prompt_is_masked_and_completion_ends_with_eos(tiny_lm):
    from rlhfkit.models.load import load_tokenizer

    tok = load_tokenizer(str(tiny_lm))
    (ex,), truncated = tokenize_sft([SFTRecord("When is payday?", "25 days a year")], tok, max_length=512)
    prompt = encode_prompt(tok, "When is payday?")
    completion = tok("25 days a year", add_special_tokens=False).input_ids
    assert truncated == 0
    assert ex.input_ids == prompt + completion + [tok.eos_token_id]
    assert ex.labels == [IGNORE_INDEX] * len(prompt) + completion + [tok.eos_token_id]
    assert ex.num_targets == len(completion) + 1
    assert tok.decode(ex.input_ids) == "User: When is payday?\nAssistant: 25 days a year<eos>"


def test_truncation_cuts_the_prompt_from_the_left(tiny_lm):
    from rlhfkit.models.load import load_tokenizer

    tok = load_tokenizer(str(tiny_lm))
    long_prompt = "Where is the HR department in Boston? " * 20
    completion = tok("3rd floor, Building A", add_special_tokens=False).input_ids + [tok.eos_token_id]
    (ex,), truncated = tokenize_sft(
        [SFTRecord(long_prompt, "3rd floor, Building A")], tok, max_length=len(completion) + 5
    )
    assert truncated == 1 and len(ex.input_ids) == len(completion) + 5
    assert ex.input_ids[-len(completion) :] == completion and ex.labels[:5] == [IGNORE_INDEX] * 5


def test_fallback_template_formats_conversations(tiny_lm):
    from rlhfkit.models.load import load_tokenizer

    tok = load_tokenizer(str(tiny_lm))
    assert tok.chat_template == FALLBACK_CHAT_TEMPLATE
    convo = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "HR?"},
    ]
    assert format_prompt(tok, convo) == "Be brief.\n\nUser: hi\nAssistant: hello<eos>\nUser: HR?\nAssistant: "
    assert format_prompt(tok, "raw text", template="raw") == "raw text"


def test_packed_logits_equal_separate_logits(tiny_lm):
    """No sequence in a packed row may see another: each one's logits equal those of running it alone."""
    from rlhfkit.models.load import load_causal_lm, load_tokenizer

    tok, model = load_tokenizer(str(tiny_lm)), load_causal_lm(str(tiny_lm), device="cpu").eval()
    records = [SFTRecord("Where is HR?", "3rd floor"), SFTRecord("When is payday?", "The last working day")]
    examples, _ = tokenize_sft(records, tok, max_length=512)
    packed = collate_packed(examples)
    assert packed["labels"][0, len(examples[0].input_ids)].item() == IGNORE_INDEX
    with torch.no_grad():
        # use_cache=False matters: with a KV cache transformers does not read packing from position_ids
        logits = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits[0]
        start = 0
        for e in examples:
            alone = model(
                **{k: v for k, v in collate_padded([e], pad_id=tok.pad_token_id).items() if k != "labels"}
            ).logits[0]
            torch.testing.assert_close(logits[start : start + len(e.input_ids)], alone, rtol=0, atol=1e-5)
            start += len(e.input_ids)


# a template with a default system message of its own, as SmolLM2's and Qwen's have
CHATML_WITH_DEFAULT = (
    "{% for m in messages %}"
    "{% if loop.first and m['role'] != 'system' %}<|im_start|>system\nYou are BigBot.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_default_system_prompt_replaces_the_templates_own_and_is_saved_with_the_tokenizer(tiny_lm, tmp_path):
    from rlhfkit.data.prompts import set_default_system
    from rlhfkit.models.load import load_tokenizer

    tok = load_tokenizer(str(tiny_lm))
    tok.chat_template = CHATML_WITH_DEFAULT
    assert "BigBot" in format_prompt(tok, "Where is HR?")
    set_default_system(tok, "")
    tok.save_pretrained(tmp_path)
    again = load_tokenizer(str(tmp_path))
    plain = "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nWhere is HR?<|im_end|>\n<|im_start|>assistant\n"
    assert format_prompt(again, "Where is HR?") == plain
    assert encode_prompt(again, "Where is HR?") == again(plain, add_special_tokens=False).input_ids
    # a conversation that brings its own system message keeps it
    own = format_prompt(again, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    assert own.startswith("<|im_start|>system\nBe brief.<|im_end|>") and "BigBot" not in own

    fallback = load_tokenizer(str(tiny_lm))
    set_default_system(fallback, "You answer for Lumen & Pike's help desk.")
    assert format_prompt(fallback, "HR?") == "You answer for Lumen & Pike's help desk.\n\nUser: HR?\nAssistant: "


def test_default_system_prompt_is_refused_by_a_template_without_system_turns(tiny_lm):
    import pytest

    from rlhfkit.data.prompts import set_default_system
    from rlhfkit.models.load import load_tokenizer

    tok = load_tokenizer(str(tiny_lm))
    rejects = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "{{ m['content'] }}\n{% endfor %}"
    )
    ignores = "{% for m in messages %}{% if m['role'] != 'system' %}{{ m['content'] }}\n{% endif %}{% endfor %}"
    for template, said in ((rejects, "does not take a system message"), (ignores, "ignores system messages")):
        tok.chat_template = template
        with pytest.raises(ValueError, match=said):
            set_default_system(tok, "Be brief.")
        assert tok.chat_template == template  # left as it was
