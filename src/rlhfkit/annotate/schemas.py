"""Request bodies, for the JSON API and the page forms alike (one validation for both); they also describe the API
in /openapi.json."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

_SURROGATE = re.compile("[\ud800-\udfff]")
# Deeper than any request needs (records > record > responses > messages > message is 5): deep nesting would
# otherwise reach Python's recursion limit in checks and serializers, a 500.
MAX_DEPTH = 32


def _check_json(value: Any) -> None:
    """Refuse lone surrogates and nesting deeper than MAX_DEPTH; walked with a stack, not recursion."""
    stack = [(value, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise ValueError("text must be valid Unicode (a lone surrogate such as \\ud800 is not)")
        elif isinstance(value, (dict, list)):
            if depth >= MAX_DEPTH:
                raise ValueError(f"the JSON is nested too deeply (at most {MAX_DEPTH} levels)")
            children = [x for kv in value.items() for x in kv] if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)


class Body(BaseModel):
    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        # JSON may escape half a surrogate pair ("\ud800"): Python keeps it, and encoding it later would be a 500
        _check_json(data)
        return data


class LoginBody(Body):
    name: str = Field(max_length=100)
    password: str = Field(max_length=1000)


class ProjectBody(Body):
    name: str = Field(min_length=1, max_length=200)
    overlap: int = Field(1, ge=1, le=50)
    lease_seconds: int = Field(1800, ge=30, le=604800)


class UserBody(Body):
    name: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=8, max_length=1000)
    role: Literal["admin", "annotator"] = "annotator"


class ItemsBody(Body):
    records: list[dict[str, Any]] = Field(max_length=10000)


class SubmitBody(Body):
    answer: str | None = Field(None, max_length=10000, description="gold tasks: the answer")
    label: Literal["a", "b", "tie", "both_bad"] | None = Field(None, description="compare tasks, as shown")
    ranks: list[int] | None = Field(None, max_length=50, description="rank tasks: ranks in the order shown")
    all_bad: bool = False
    reason: str = Field("", max_length=2000)
    flags: list[Literal["incorrect", "unsafe", "private_data"]] = Field(default_factory=list, max_length=3)


class ChatBody(Body):
    message: str = Field(min_length=1, max_length=8000, description="the person's question")
    parent_id: int | None = Field(
        None, ge=1, le=2**31 - 1, description="continue the conversation of this answer of yours (its turn_id)"
    )


class ArenaBody(Body):
    message: str = Field(min_length=1, max_length=8000, description="the question both models answer")


class FeedbackBody(Body):
    label: Literal["good", "bad"] = Field(description="thumbs up or down")
    correction: str | None = Field(None, max_length=10000, description="what the answer should have been")


class VoteBody(Body):
    label: Literal["a", "b", "tie", "both_bad"] = Field(description="as shown: A, B, tie or both bad")


class ModelBody(Body):
    name: str | None = Field(None, max_length=200, description="what answers and the leaderboard call it (model)")
    base_url: str = Field(max_length=500, description="OpenAI-compatible base URL, e.g. http://10.0.0.7:8001/v1")
    model: str = Field(max_length=200, description="the model the endpoint serves (its `model` field)")
    api_key: str | None = Field(None, max_length=500, description="sent as a bearer token; never shown back")
    max_tokens: int = Field(512, ge=1, le=32768)


class ModelUpdateBody(Body):
    base_url: str | None = Field(None, max_length=500)
    model: str | None = Field(None, max_length=200)
    api_key: str | None = Field(None, max_length=500, description="a new key (omit to keep the current one)")
    clear_api_key: bool = False
    max_tokens: int | None = Field(None, ge=1, le=32768)
