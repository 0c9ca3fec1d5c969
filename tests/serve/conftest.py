"""`rlhf serve` under test: the tiny Llama of tests/conftest.py behind a real uvicorn server in this process (so the
engine can be paused and inspected), talked to by the official `openai` client."""

from __future__ import annotations

import socket
import time
from contextlib import contextmanager

import pytest

from tests.conftest import serving  # noqa: F401 (the serve tests import it from here)

MODEL = "tiny"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def lm(tiny_lm):
    from rlhfkit.models.load import load_causal_lm, load_tokenizer

    return load_causal_lm(str(tiny_lm), device="cpu"), load_tokenizer(str(tiny_lm), padding_side="left")


@pytest.fixture(scope="session")
def engine(lm):
    from rlhfkit.serve.engine import Engine

    model, tokenizer = lm
    engine = Engine(model, tokenizer, max_batch=40).start()
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def base_url(engine):
    from rlhfkit.serve.api import create_app

    with serving(create_app({MODEL: engine})) as url:
        yield url


@pytest.fixture
def client(base_url):
    from openai import OpenAI

    with OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=120) as c:
        yield c


@contextmanager
def queued(engine, count: int):
    """Stop the engine's worker while the body sends `count` requests (from threads), then start it: they are all
    waiting, so its next batch takes them together."""
    engine.stop()
    try:
        yield
        deadline = time.monotonic() + 60
        while len(engine._pending) < count:
            assert time.monotonic() < deadline, f"{len(engine._pending)} of {count} requests arrived"
            time.sleep(0.01)
    finally:
        engine.start()
