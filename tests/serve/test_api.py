"""The OpenAI chat API of `rlhf serve` through the official `openai` client on the tiny Llama: completions with and
without streaming, n, stop strings, seeds that make a request's answer independent of its batch, greedy answers equal
to `generate_answers`, OpenAI-shaped errors, and 32 concurrent streams."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import httpx
import openai
import pytest

from tests.serve.conftest import MODEL, queued

QUESTIONS = ["When is payday?", "Where is the IT desk in London?", "How many vacation days do I get?", "hi"]


def ask(client, question: str, **kw):
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": question}], **kw)


def streamed(client, question: str, **kw) -> tuple[dict[int, str], dict[int, str], list]:
    """Text and finish_reason per choice index from a streamed completion, and the chunks."""
    chunks = list(ask(client, question, stream=True, **kw))
    texts: dict[int, str] = {}
    reasons: dict[int, str] = {}
    for chunk in chunks:
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
            if c.finish_reason is not None:
                assert c.index not in reasons, "a choice finished twice"
                reasons[c.index] = c.finish_reason
    return texts, reasons, chunks


def test_models_and_health(client, base_url):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    assert httpx.get(base_url + "/healthz").json() == {"status": "ok"}


def test_greedy_answers_equal_generate_answers(client, lm):
    from rlhfkit.data.prompts import encode_prompt
    from rlhfkit.models.generate import generate_answers

    model, tokenizer = lm
    finished: list[list[bool]] = []
    expected = generate_answers(model, tokenizer, QUESTIONS, max_new_tokens=24, temperature=0.0, finished=finished)
    for question, [answer], [ended] in zip(QUESTIONS, expected, finished):
        r = ask(client, question, max_tokens=24, temperature=0)
        [choice] = r.choices
        assert choice.message.content == answer and choice.message.role == "assistant"
        assert choice.finish_reason == ("stop" if ended else "length")
        prompt_tokens = len(encode_prompt(tokenizer, question))
        assert r.usage.prompt_tokens == prompt_tokens
        assert r.usage.total_tokens == prompt_tokens + r.usage.completion_tokens
        assert r.usage.completion_tokens == 24 or ended  # an EOS counts as a generated token
        assert r.object == "chat.completion" and r.model == MODEL and r.id.startswith("chatcmpl-")


def test_stream_gives_the_same_answer_as_one_response(client):
    kw = dict(max_tokens=30, temperature=1.0, seed=11)
    whole = ask(client, QUESTIONS[1], **kw).choices[0]
    texts, reasons, chunks = streamed(client, QUESTIONS[1], stream_options={"include_usage": True}, **kw)
    assert texts == {0: whole.message.content} and reasons == {0: whole.finish_reason}
    assert len(chunks) > 5  # piece by piece, not one chunk at the end
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens <= 30  # the usage chunk comes last


def test_raw_event_stream_ends_with_done(base_url):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stream": True}
    with httpx.stream("POST", base_url + "/v1/chat/completions", json=body, timeout=60) as res:
        assert res.status_code == 200 and res.headers["content-type"].startswith("text/event-stream")
        events = [line for line in res.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] in ("stop", "length")


def test_n_choices_each_with_its_own_draws(client):
    r = ask(client, QUESTIONS[0], n=2, max_tokens=20, temperature=1.0, seed=3)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].message.content != r.choices[1].message.content
    texts, reasons, _ = streamed(client, QUESTIONS[0], n=2, max_tokens=20, temperature=1.0, seed=3)
    assert texts == {c.index: c.message.content for c in r.choices}
    assert reasons == {c.index: c.finish_reason for c in r.choices}
    # choice 0 of n=2 is the same draw as the request with n=1
    assert ask(client, QUESTIONS[0], max_tokens=20, temperature=1.0, seed=3).choices[0].message.content == texts[0]


def test_stop_strings_cut_the_answer(client):
    full = ask(client, QUESTIONS[2], max_tokens=40, temperature=0).choices[0].message.content
    assert len(full) > 12
    stop = full[6:9]
    cut = full[: full.index(stop)]
    r = ask(client, QUESTIONS[2], max_tokens=40, temperature=0, stop=stop)
    assert r.choices[0].message.content == cut and r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens < 40
    texts, reasons, chunks = streamed(client, QUESTIONS[2], max_tokens=40, temperature=0, stop=[full[-3:], stop])
    assert texts == {0: cut} and reasons == {0: "stop"}
    assert all(stop not in (c.delta.content or "") for chunk in chunks for c in chunk.choices)


def test_a_seeded_request_answers_the_same_alone_and_batched(client, engine):
    kw = dict(max_tokens=24, temperature=1.0, top_p=0.95)
    alone = ask(client, QUESTIONS[1], seed=1234, **kw).choices[0].message.content
    results: dict[str, str] = {}

    def send(key, question, **extra):
        results[key] = ask(client, question, **{**kw, **extra}).choices[0].message.content

    others = [("a", QUESTIONS[0], {"seed": 1}), ("b", QUESTIONS[2], {"temperature": 0}), ("c", "x" * 40, {"n": 3})]
    before = len(engine.batches)
    with queued(engine, 4):
        threads = [threading.Thread(target=send, args=("target", QUESTIONS[1]), kwargs={"seed": 1234})]
        threads += [threading.Thread(target=send, args=(k, q), kwargs=e) for k, q, e in others]
        for t in threads:
            t.start()
    for t in threads:
        t.join(120)
    assert engine.batches[before:] == [6]  # all four requests (1 + 1 + 1 + 3 rows) in one batch
    assert results["target"] == alone
    assert ask(client, QUESTIONS[1], seed=1235, **kw).choices[0].message.content != alone


def test_32_concurrent_streams_each_equal_its_own_answer_alone(base_url, client, engine):
    requests = [dict(question=QUESTIONS[i % 4] + " " * (i // 4), seed=i, max_tokens=8 + i % 5 * 4) for i in range(32)]
    alone = [
        ask(client, r["question"], seed=r["seed"], max_tokens=r["max_tokens"], temperature=1.0).choices[0]
        for r in requests
    ]

    async def stream_all():
        async with openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=300) as c:

            async def one(r):
                text, reason = "", None
                stream = await c.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": r["question"]}],
                    seed=r["seed"],
                    max_tokens=r["max_tokens"],
                    temperature=1.0,
                    stream=True,
                )
                async for chunk in stream:
                    for choice in chunk.choices:
                        text += choice.delta.content or ""
                        reason = choice.finish_reason or reason
                return text, reason

            return await asyncio.gather(*(one(r) for r in requests))

    before = len(engine.batches)
    got = asyncio.run(stream_all())
    assert got == [(a.message.content, a.finish_reason) for a in alone]
    assert sum(engine.batches[before:]) == 32 and max(engine.batches[before:]) > 1  # they were batched


def error_of(exc_info) -> dict:
    body = exc_info.value.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize(
    ("kw", "param", "code"),
    [
        (dict(temperature=2.5), "temperature", None),
        (dict(top_p=-0.1), "top_p", None),
        (dict(n=0), "n", None),
        (dict(n=9), "n", None),
        (dict(max_tokens=0), "max_tokens", None),
        (dict(max_tokens=5000), "max_tokens", None),
        (dict(max_tokens=1020), "messages", "context_length_exceeded"),  # the tiny model's context is 1024
        (dict(stop=["a", "b", "c", "d", "e"]), "stop", None),
        (dict(stop="x" * 65), "stop", None),
        (dict(stop=[""]), "stop", None),
        (dict(logprobs=True), "logprobs", None),
        (dict(presence_penalty=0.5), "presence_penalty", None),
        (dict(messages=[]), "messages", None),
        (dict(messages=[{"role": "tool", "content": "x"}]), "messages.0.role", None),
        (dict(messages=[{"role": "user", "content": "x" * 200_001}]), "messages", None),
        (dict(messages=[{"role": "user", "content": "x"}] * 257), "messages", None),
    ],
)
def test_bad_requests_get_openai_errors(client, kw, param, code):
    messages = kw.pop("messages", [{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=messages, **kw)
    err = error_of(e)
    assert e.value.status_code == 400 and err["type"] == "invalid_request_error"
    assert err["param"] == param and err["code"] == code and err["message"]


def test_unknown_model_and_unparseable_json(client, base_url):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-17", messages=[{"role": "user", "content": "hi"}])
    assert error_of(e)["code"] == "model_not_found" and "gpt-17" in error_of(e)["message"]
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("gpt-17")
    assert error_of(e)["code"] == "model_not_found"
    res = httpx.post(
        base_url + "/v1/chat/completions", content=b'{"model": ', headers={"content-type": "application/json"}
    )
    assert res.status_code == 400 and res.json()["error"]["type"] == "invalid_request_error"


def test_a_full_queue_gets_503(client, engine, monkeypatch):
    monkeypatch.setattr(engine, "max_queue", 2)
    answers = []
    with queued(engine, 2):
        threads = [threading.Thread(target=lambda: answers.append(ask(client, "hi", max_tokens=3))) for _ in range(2)]
        for t in threads:
            t.start()
        while len(engine._pending) < 2:
            pass
        with pytest.raises(openai.InternalServerError) as e:
            ask(client.with_options(timeout=10), "hi", max_tokens=3)
        assert e.value.status_code == 503 and error_of(e)["type"] == "server_error"
    for t in threads:
        t.join(60)
    assert len(answers) == 2


def test_api_key_is_required_and_checked(engine):
    from rlhfkit.serve.api import create_app
    from tests.serve.conftest import serving

    with serving(create_app({MODEL: engine}, api_key="s3cret-key-123")) as url:
        for key in ("wrong-key-1234", "s3cret-key-12", "s3cret-key-1234"):
            with openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as c:
                with pytest.raises(openai.AuthenticationError) as e:
                    c.models.list()
                assert e.value.status_code == 401 and error_of(e)["code"] == "invalid_api_key"
        res = httpx.post(url + "/v1/chat/completions", json={"model": MODEL, "messages": []})
        assert res.status_code == 401 and res.json()["error"]["code"] == "invalid_api_key"
        res = httpx.get(url + "/v1/models", headers={"Authorization": "Basic s3cret-key-123"})
        assert res.status_code == 401
        assert httpx.get(url + "/healthz").status_code == 200  # health checks need no key
        with openai.OpenAI(base_url=url + "/v1", api_key="s3cret-key-123", max_retries=0) as c:
            assert [m.id for m in c.models.list().data] == [MODEL]
            assert ask(c, "hi", max_tokens=3).choices[0].message.content is not None


def test_an_oversized_body_gets_413_before_it_is_parsed(engine):
    from rlhfkit.serve.api import Limits, create_app
    from tests.serve.conftest import serving

    with serving(create_app({MODEL: engine}, limits=Limits(max_body_bytes=1000))) as url:
        # refused by its Content-Length alone: the answer comes before a byte of the body is sent
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):  # the server closes the connection after its answer
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 413") and b"request_too_large" in answer
        big = b"{" + b" " * 2000  # not even JSON: parsing it would give 400
        res = httpx.post(url + "/v1/chat/completions", content=big, headers={"content-type": "application/json"})
        assert res.status_code == 413 and res.json()["error"]["code"] == "request_too_large"
        # no Content-Length (chunked): counted while read, refused when the count passes the limit
        chunked = httpx.post(url + "/v1/chat/completions", content=iter([b"{", b" " * 600, b" " * 600]))
        assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "request_too_large"
        with openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0) as c:
            with pytest.raises(openai.APIStatusError) as e:
                ask(c, "x" * 2000)
            assert e.value.status_code == 413 and error_of(e)["type"] == "invalid_request_error"
            assert ask(c, "hi", max_tokens=2).choices  # a small one still passes


def test_a_stream_the_client_drops_ends_its_choice(base_url, engine, monkeypatch):
    """Its choice ends at the next step, or is dropped before it runs when the client left while it waited."""
    jobs = []
    submit = engine.submit
    monkeypatch.setattr(engine, "submit", lambda job: jobs.append(job) or submit(job))
    monkeypatch.setattr(engine, "eos_id", -1)  # no early EOS: the choice would run to max_tokens
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 900, "stream": True}
    with httpx.stream("POST", base_url + "/v1/chat/completions", json=body, timeout=60) as res:
        lines = res.iter_lines()
        assert next(lines).startswith("data: ")  # the role chunk; then close the connection
    deadline = time.monotonic() + 60
    while not (jobs and jobs[0].remaining == 0):
        assert time.monotonic() < deadline, "the dropped stream's choice did not end"
        time.sleep(0.05)
    assert jobs[0].cancelled and jobs[0].completion_tokens < 900
