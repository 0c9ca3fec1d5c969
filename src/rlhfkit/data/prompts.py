"""How prompts become the model's input: a string prompt is one user turn, a message list is used as is; both go
through the tokenizer's chat template with the generation prompt appended. A tokenizer without a chat template gets
FALLBACK_CHAT_TEMPLATE ("User: ...\\nAssistant: ..."), which every saved model carries (models/load.py), so later
stages format prompts the same way. `prompt_template=raw` uses string prompts verbatim.
"""

from __future__ import annotations

import json

from rlhfkit.data.schema import Text

FALLBACK_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}User: {{ m['content'] }}\n"
    "{% else %}Assistant: {{ m['content'] }}{{ eos_token }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant: {% endif %}"
)


def special_prefix(tokenizer) -> list[int]:
    """Ids the tokenizer puts in front of plain text on its own (BOS for Llama, [CLS] for BERT; often none)."""
    plain = tokenizer("a", add_special_tokens=False).input_ids
    full = tokenizer("a", add_special_tokens=True).input_ids
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start]
    return []


def end_token_id(tokenizer) -> int:
    """The token that ends an answer: EOS, or [SEP] for encoders that have no EOS."""
    end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if end is None:
        raise ValueError("tokenizer has neither an EOS nor a SEP token to end answers with")
    return end


def format_prompt(tokenizer, prompt: Text, *, template: str = "chat") -> str:
    """The text the model sees before its answer."""
    if template == "raw":
        if not isinstance(prompt, str):
            raise ValueError("prompt_template=raw needs string prompts, got a message list")
        return prompt
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer, prompt: Text, *, template: str = "chat") -> list[int]:
    """Token ids of the formatted prompt, with BOS ([CLS]) where the tokenizer would add it and the template did not."""
    ids = tokenizer(format_prompt(tokenizer, prompt, template=template), add_special_tokens=False).input_ids
    prefix = special_prefix(tokenizer)
    return ids if ids[: len(prefix)] == prefix else prefix + ids


def set_default_system(tokenizer, text: str) -> None:
    """Make `text` the system message of every conversation that does not bring its own, by putting it in front of
    the tokenizer's chat template. Saved with the tokenizer, it is the model's default from then on: the stages that
    load it, `rlhf generate` and `rlhf serve` format prompts as training did. Many templates add a default of their
    own (SmolLM2: "You are a helpful AI assistant named SmolLM, trained by Hugging Face", 16 tokens of every
    sequence); a short or empty one makes every sequence shorter."""
    template = tokenizer.chat_template
    if not isinstance(template, str):
        raise ValueError(f"system_prompt: the tokenizer's chat_template is {type(template).__name__}, not one template")
    guard = (
        "{%- if not messages or messages[0]['role'] != 'system' %}"
        "{%- set messages = [{'role': 'system', 'content': " + json.dumps(text) + "}] + messages %}"
        "{%- endif %}"
    )
    tokenizer.chat_template = guard + template
    probe = [{"role": "user", "content": "Where is HR?"}]

    def render(messages):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    try:
        ok = render(probe) == render([{"role": "system", "content": text}, *probe])
        ok = ok and render(probe) != render([{"role": "system", "content": text + " Answer in French."}, *probe])
    except Exception as e:  # noqa: BLE001 - a template that rejects system turns (Gemma's raises)
        tokenizer.chat_template = template
        raise ValueError(f"system_prompt: this model's chat template does not take a system message ({e})") from None
    if not ok:
        tokenizer.chat_template = template
        raise ValueError("system_prompt: this model's chat template ignores system messages")
