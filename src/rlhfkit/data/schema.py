"""Typed records for every data format (README: Data formats) and their validation.

A record is built from one raw JSON object by `parse_record(fmt, obj)`, which raises `FieldError(field, problem)`;
the readers add the file and line. Message lists are kept as given: `[{"role": ..., "content": ...}, ...]`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

Message = dict[str, str]
Text = str | list[Message]  # a plain string or a conversation

ROLES = ("system", "user", "assistant", "tool")
LABELS = ("a", "b", "tie", "both_bad")
HH_ASSISTANT = "\n\nAssistant:"


class FieldError(ValueError):
    """One problem with one field of one record."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None and v is not False and v != {}}


@dataclass(frozen=True)
class SFTRecord:
    """A demonstration: the prompt and the gold completion (the expert's answer)."""

    prompt: Text
    completion: str

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "completion": self.completion}


@dataclass(frozen=True)
class PreferencePair:
    """Canonical preference (TRL-compatible): `chosen` was preferred to `rejected`."""

    prompt: Text
    chosen: Text
    rejected: Text
    margin: float | None = None
    annotator: str | None = None
    votes: dict[str, int] | None = None  # e.g. {"chosen": 3, "rejected": 1}: several annotators, one item

    def to_dict(self) -> dict[str, Any]:
        return _drop_none(asdict(self))


@dataclass(frozen=True)
class Comparison:
    """A tie-aware A/B judgement."""

    prompt: Text
    response_a: Text
    response_b: Text
    label: str  # one of LABELS
    annotator: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _drop_none(asdict(self))


@dataclass(frozen=True)
class Ranking:
    """K responses ranked by a person: rank 1 is best, equal ranks are ties."""

    prompt: Text
    responses: list[Text]
    ranks: list[int]
    not_rankable: bool = False
    annotator: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _drop_none(asdict(self))


@dataclass(frozen=True)
class Rating:
    """One response judged on its own, thumbs up or down: the unpaired feedback a deployed chatbot collects (KTO)."""

    prompt: Text
    response: Text
    label: str  # "good" or "bad"
    annotator: str | None = None

    @property
    def good(self) -> bool:
        return self.label == "good"

    def to_dict(self) -> dict[str, Any]:
        return _drop_none(asdict(self))


RATING_LABELS = ("good", "bad")


@dataclass(frozen=True)
class Generations:
    """A prompt and model responses, as `rlhf generate` writes them; unranked. Also used for a plain prompt list."""

    prompt: Text
    responses: list[Text] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "responses": self.responses}


Record = SFTRecord | PreferencePair | Comparison | Ranking | Rating | Generations

# The responses of each kind of record, and the key its score goes under when a reward model scores it.
_SCORED = {
    SFTRecord: (("completion", "score"),),
    PreferencePair: (("chosen", "score_chosen"), ("rejected", "score_rejected")),
    Comparison: (("response_a", "score_a"), ("response_b", "score_b")),
    Rating: (("response", "score"),),
}


def responses_of(record: Record) -> list[Text]:
    """The responses a record holds, in order: a ranking's or generations' list, a pair's chosen and rejected, ..."""
    if isinstance(record, (Generations, Ranking)):
        return list(record.responses)
    return [getattr(record, name) for name, _ in _SCORED[type(record)]]


def with_scores(record: Record, scores: list[float]) -> dict[str, Any]:
    """The record as a dict with a score beside each response (`scores` beside `responses`, `score` beside
    `completion`, `score_chosen`/`score_rejected`, `score_a`/`score_b`)."""
    row = record.to_dict()
    if isinstance(record, (Generations, Ranking)):
        row["scores"] = list(scores)
    else:
        row.update({key: score for (_, key), score in zip(_SCORED[type(record)], scores, strict=True)})
    return row


# format name -> (required keys, record type). Order matters for detection: the first whose keys all appear wins.
FORMATS: dict[str, tuple[tuple[str, ...], type]] = {
    "pairs": (("prompt", "chosen", "rejected"), PreferencePair),
    "hh": (("chosen", "rejected"), PreferencePair),
    "comparisons": (("prompt", "response_a", "response_b", "label"), Comparison),
    "rankings": (("prompt", "responses", "ranks"), Ranking),
    "ratings": (("prompt", "response", "label"), Rating),
    "generations": (("prompt", "responses"), Generations),
    "messages": (("messages",), SFTRecord),
    "sft": (("prompt", "completion"), SFTRecord),
    "prompts": (("prompt",), Generations),
}


# A "preferences" file mixes these, one judgement a line in the form it was given (the annotation app's export: A/B
# votes as comparisons, K-way rankings as rankings); each line's format is detected from its own keys.
MIXABLE = ("pairs", "comparisons", "rankings")
PREFERENCE_FORMATS = ("pairs", "hh", "comparisons", "rankings", "preferences")


def detect_format(obj: dict[str, Any]) -> str | None:
    """The format whose required keys this object has, or None."""
    for name, (keys, _) in FORMATS.items():
        if all(k in obj for k in keys):
            return name
    return None


def _messages(value: Any, name: str, *, allow_empty: bool = False) -> list[Message]:
    if not isinstance(value, list) or (not value and not allow_empty):
        raise FieldError(name, "expected a non-empty list of {role, content} messages")
    for i, m in enumerate(value):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise FieldError(f"{name}[{i}]", "expected an object with 'role' and 'content'")
        if m["role"] not in ROLES:
            raise FieldError(f"{name}[{i}].role", f"{m['role']!r} is not one of {', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise FieldError(f"{name}[{i}].content", f"expected a string, got {type(m['content']).__name__}")
    return value


def _text(value: Any, name: str, *, allow_empty: bool = False) -> Text:
    if isinstance(value, str):
        if not value.strip() and not allow_empty:
            raise FieldError(name, "is empty")
        return value
    if isinstance(value, list):
        return _messages(value, name)
    raise FieldError(name, f"expected a string or a list of messages, got {type(value).__name__}")


def _opt_str(obj: dict, name: str) -> str | None:
    v = obj.get(name)
    if v is not None and not isinstance(v, str):
        raise FieldError(name, f"expected a string, got {type(v).__name__}")
    return v


def split_hh(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split two HH-RLHF transcripts at their last shared `Assistant:` turn into (prompt, chosen, rejected).

    prompt + chosen and prompt + rejected rebuild the originals exactly.
    """
    n = 0
    limit = min(len(chosen), len(rejected))
    while n < limit and chosen[n] == rejected[n]:
        n += 1
    cut = chosen.rfind(HH_ASSISTANT, 0, n)  # the marker must lie wholly inside the shared prefix
    if cut < 0:
        raise FieldError("chosen", "chosen and rejected share no '\\n\\nAssistant:' turn to split at")
    end = cut + len(HH_ASSISTANT)
    return chosen[:end], chosen[end:], rejected[end:]


def split_shared_messages(chosen: list[Message], rejected: list[Message]) -> tuple[list, list, list]:
    """Implicit-prompt conversations: the shared leading messages are the prompt."""
    n = 0
    while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
        n += 1
    if n == 0:
        raise FieldError("chosen", "chosen and rejected share no leading messages to use as the prompt")
    return chosen[:n], chosen[n:], rejected[n:]


def parse_record(fmt: str, obj: Any) -> Record:
    """Validate one raw object as `fmt` and build its record. Raises FieldError naming the field."""
    if not isinstance(obj, dict):
        raise FieldError("record", f"expected a JSON object, got {type(obj).__name__}")
    keys, _ = FORMATS[fmt]
    for k in keys:
        if k not in obj:
            raise FieldError(k, f"missing (a {fmt} record needs {', '.join(keys)})")
    if fmt == "sft":
        completion = obj["completion"]
        if not isinstance(completion, str) or not completion.strip():
            raise FieldError("completion", "expected a non-empty string")
        return SFTRecord(_text(obj["prompt"], "prompt"), completion)
    if fmt == "messages":
        msgs = _messages(obj["messages"], "messages")
        if msgs[-1]["role"] != "assistant":
            raise FieldError("messages", "the last message must be the assistant's (it is the target)")
        if len(msgs) < 2:
            raise FieldError("messages", "needs at least one message before the assistant's answer")
        return SFTRecord(msgs[:-1], msgs[-1]["content"])
    if fmt in ("prompts", "generations"):
        responses = obj.get("responses", [])
        if not isinstance(responses, list):
            raise FieldError("responses", "expected a list")
        return Generations(
            _text(obj["prompt"], "prompt"), [_text(r, f"responses[{i}]") for i, r in enumerate(responses)]
        )
    if fmt == "hh":
        chosen, rejected = obj["chosen"], obj["rejected"]
        if isinstance(chosen, str) and isinstance(rejected, str):
            prompt, c, r = split_hh(chosen, rejected)
        elif isinstance(chosen, list) and isinstance(rejected, list):
            prompt, c, r = split_shared_messages(_messages(chosen, "chosen"), _messages(rejected, "rejected"))
        else:
            raise FieldError("chosen", "chosen and rejected must both be transcripts (strings) or message lists")
        return PreferencePair(prompt, c, r)
    if fmt == "pairs":
        margin = obj.get("margin")
        if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))):
            raise FieldError("margin", f"expected a number, got {margin!r}")
        votes = obj.get("votes")
        if votes is not None:
            if not isinstance(votes, dict) or not votes:
                raise FieldError("votes", 'expected counts like {"chosen": 2, "rejected": 1}')
            for k, v in votes.items():
                if k not in ("chosen", "rejected", "tie"):
                    raise FieldError(f"votes.{k}", "unknown key (use chosen, rejected, tie)")
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    raise FieldError(f"votes.{k}", f"expected a count >= 0, got {v!r}")
        return PreferencePair(
            _text(obj["prompt"], "prompt", allow_empty=True),
            _text(obj["chosen"], "chosen"),
            _text(obj["rejected"], "rejected"),
            None if margin is None else float(margin),
            _opt_str(obj, "annotator"),
            votes,
        )
    if fmt == "comparisons":
        label = obj["label"]
        if label not in LABELS:
            raise FieldError("label", f"{label!r} is not one of {', '.join(LABELS)}")
        return Comparison(
            _text(obj["prompt"], "prompt"),
            _text(obj["response_a"], "response_a"),
            _text(obj["response_b"], "response_b"),
            label,
            _opt_str(obj, "annotator"),
        )
    if fmt == "ratings":
        label = obj["label"]
        if label not in RATING_LABELS:
            raise FieldError("label", f"{label!r} is not one of {', '.join(RATING_LABELS)}")
        return Rating(
            _text(obj["prompt"], "prompt"), _text(obj["response"], "response"), label, _opt_str(obj, "annotator")
        )
    if fmt == "rankings":
        responses, ranks = obj["responses"], obj["ranks"]
        if not isinstance(responses, list) or len(responses) < 2:
            raise FieldError("responses", "expected a list of at least 2 responses")
        if not isinstance(ranks, list) or len(ranks) != len(responses):
            raise FieldError("ranks", f"expected a list of {len(responses)} ranks, one per response")
        for i, r in enumerate(ranks):
            if isinstance(r, bool) or not isinstance(r, int) or r < 1:
                raise FieldError(f"ranks[{i}]", f"expected an integer >= 1, got {r!r}")
        not_rankable = obj.get("not_rankable", False)
        if not isinstance(not_rankable, bool):
            raise FieldError("not_rankable", f"expected true or false, got {not_rankable!r}")
        return Ranking(
            _text(obj["prompt"], "prompt"),
            [_text(r, f"responses[{i}]") for i, r in enumerate(responses)],
            list(ranks),
            not_rankable,
            _opt_str(obj, "annotator"),
        )
    raise ValueError(f"unknown format {fmt!r}")
