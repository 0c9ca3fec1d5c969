"""Shared fixtures: tiny offline models and small data files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# Eight help-desk questions with gold answers; the SFT integration test must reproduce every answer exactly.
QA = [
    ("Where is the HR department in Boston?", "3rd floor, Building A"),
    ("Where is the IT desk in London?", "Ground floor, Thames House"),
    ("How many vacation days do I get?", "25 days a year"),
    ("When is payday?", "The last working day of the month"),
    ("How do I reset my password?", "Use the password portal with your badge number"),
    ("Where can I park in Austin?", "The free lot behind the building"),
    ("When is the cafe open?", "8 am to 3 pm on weekdays"),
    ("Who approves travel?", "Your manager, in the travel portal"),
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def qa_file(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "qa.jsonl", [{"prompt": q, "completion": a} for q, a in QA])


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    """A 2-layer, hidden-64 Llama with a BPE tokenizer trained on the QA text (seconds, offline)."""
    from rlhfkit.models.tiny import build_tiny_causal_lm

    texts = [t for qa in QA for t in qa] * 8
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "lm", texts, vocab_size=300, hidden=64, layers=2)
