"""A small OpenAI-compatible chat server for tests: `POST /v1/chat/completions` with `stream: true` answered as
server-sent events (`data: {...}` chunks with `choices[0].delta.content`, then `data: [DONE]`), the way `rlhf serve`
and vLLM answer. Each model name gets a scripted `Reply`; it records every request it was sent."""

from __future__ import annotations

import asyncio
import json
import threading
from contextlib import contextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tests.app.conftest import serving

KEY = "sk-test-0123456789abcdefWXYZ"  # what the fake wants as its bearer token


@dataclass
class Reply:
    text: str = ""  # empty: "You asked: <the last question>"
    status: int = 200
    as_json: bool = False  # one JSON body (stream ignored), as some servers do
    delay: float = 0.0  # before each piece
    gate: bool = False  # send half the pieces, then wait for FakeOpenAI.gate (10 s at most, then break off)
    flood: bool = False  # pieces without end
    endless_line: bool = False  # bytes that never end a line
    error_midway: bool = False  # an error event after the first piece


class FakeOpenAI:
    def __init__(self, api_key: str | None = None):
        self.api_key = api_key
        self.replies: dict[str, Reply] = {}
        self.requests: list[dict] = []
        self.gate = threading.Event()
        self.app = self._make_app()

    def reply(self, model: str, body: dict) -> Reply:
        r = self.replies.get(model, Reply())
        if not r.text:
            question = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
            r = Reply(**{**r.__dict__, "text": f"{model} says: you asked {question!r}"})
        return r

    def _make_app(self) -> FastAPI:
        api = FastAPI()
        fake = self

        @api.post("/v1/chat/completions")
        async def completions(request: Request):
            body = await request.json()
            fake.requests.append({"authorization": request.headers.get("authorization"), "body": body})
            if fake.api_key and request.headers.get("authorization") != f"Bearer {fake.api_key}":
                return JSONResponse({"error": {"message": "Invalid API key", "type": "invalid_request_error"}}, 401)
            reply = fake.reply(body["model"], body)
            if reply.status != 200:
                return JSONResponse({"error": {"message": "the model fell over", "type": "server_error"}}, reply.status)
            if reply.as_json:
                message = {"role": "assistant", "content": reply.text}
                return JSONResponse({"object": "chat.completion", "choices": [{"index": 0, "message": message}]})
            pieces = [reply.text[i : i + 7] for i in range(0, len(reply.text), 7)]

            def chunk(delta: dict, finish: str | None = None) -> str:
                event = {"object": "chat.completion.chunk", "model": body["model"]}
                event["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
                return f"data: {json.dumps(event)}\n\n"

            async def events():
                yield chunk({"role": "assistant"})
                if reply.endless_line:
                    yield "data: "
                    while True:
                        yield "x" * 4096
                        await asyncio.sleep(0)
                if reply.flood:
                    while True:
                        yield chunk({"content": "flood "})
                        await asyncio.sleep(0)
                for i, piece in enumerate(pieces):
                    if reply.gate and i == len(pieces) // 2 and not await asyncio.to_thread(fake.gate.wait, 10):
                        return  # nobody opened the gate: the answer breaks off, unfinished
                    if reply.delay:
                        await asyncio.sleep(reply.delay)
                    yield chunk({"content": piece})
                    if reply.error_midway:
                        yield f"data: {json.dumps({'error': {'message': 'out of memory'}})}\n\n"
                        return
                yield chunk({}, "stop")
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        return api

    @contextmanager
    def running(self):
        """Serve on a free port; yields the base URL (…/v1), as an admin would enter it."""
        with serving(self.app) as url:
            yield url + "/v1"
