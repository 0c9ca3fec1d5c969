"""Request bodies, for the JSON API and the page forms alike (one validation for both); they also describe the API
in /openapi.json."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse_surrogates(value: Any) -> None:
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise ValueError("text must be valid Unicode (a lone surrogate such as \\ud800 is not)")
    elif isinstance(value, dict):
        for k, v in value.items():
            _refuse_surrogates(k)
            _refuse_surrogates(v)
    elif isinstance(value, list):
        for v in value:
            _refuse_surrogates(v)


class Body(BaseModel):
    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        # JSON may escape half a surrogate pair ("\ud800"): Python keeps it, and encoding it later would be a 500
        _refuse_surrogates(data)
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
