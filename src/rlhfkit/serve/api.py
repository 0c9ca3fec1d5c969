"""The OpenAI-compatible HTTP API: POST /v1/chat/completions (streamed as server-sent events or not), GET
/v1/models, GET /healthz.

Every error has OpenAI's shape, {"error": {"message", "type", "param", "code"}}: 400 for an invalid request
(validation errors included), 401 for a missing or wrong API key (code invalid_api_key), 404 for an unknown model
(code model_not_found), 413 for a body over the limit (refused by its Content-Length, or counted while read, before
any of it is parsed), 503 when the model's queue is full. The API key (optional) is compared in constant time and
checked before the body is read.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from rlhfkit.data.prompts import encode_prompt
from rlhfkit.serve.engine import Delta, Done, Engine, Failed, Finish, Job, QueueFull


@dataclass(frozen=True)
class Limits:
    """What one request may ask for."""

    max_body_bytes: int = 1 << 20
    max_messages: int = 256
    max_chars: int = 200_000  # all message contents together
    max_tokens: int = 4096  # per choice; prompt + max_tokens must also fit the model's context
    max_n: int = 8
    max_stop: int = 4  # stop strings per request (OpenAI's limit)
    max_stop_chars: int = 64


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code


def error_body(message: str, *, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(err: APIError, headers: dict[str, str] | None = None) -> JSONResponse:
    body = error_body(err.message, type=err.type, param=err.param, code=err.code)
    return JSONResponse(body, status_code=err.status, headers=headers)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(status_code=413, detail=f"the request body is larger than {limit} bytes")


class Guard:
    """Outermost ASGI layer for /v1/: the API key first (before the body is read), then the body's size: by its
    Content-Length before the app runs, and counted while the app reads it (a chunked body without a length)."""

    def __init__(self, app, *, api_key: str | None, max_body_bytes: int):
        self.app, self.max_body_bytes = app, max_body_bytes
        self.api_key = api_key.encode() if api_key is not None else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        if self.api_key is not None:
            scheme, _, token = headers.get("authorization", "").partition(" ")
            if not token:
                err = APIError(401, "No API key was given: send Authorization: Bearer KEY.", code="invalid_api_key")
                return await error_response(err, {"WWW-Authenticate": "Bearer"})(scope, receive, send)
            # compare_digest takes as long whatever the key and the guess share
            matches = hmac.compare_digest(token.strip().encode(), self.api_key)
            if scheme.lower() != "bearer" or not matches:
                err = APIError(401, "Incorrect API key provided.", code="invalid_api_key")
                return await error_response(err, {"WWW-Authenticate": "Bearer"})(scope, receive, send)
        length = headers.get("content-length")
        if length is not None and (not length.strip().isdigit() or int(length) > self.max_body_bytes):
            err = APIError(413, BodyTooLarge(self.max_body_bytes).detail, code="request_too_large")
            return await error_response(err, {"Connection": "close"})(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        await self.app(scope, limited_receive, send)


# ---- the request ------------------------------------------------------------------------------------------------


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The fields of OpenAI's chat completion request that this server implements; others that would change the
    answer are refused (400) rather than ignored; fields that do not (user, metadata, ...) are ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0)
    n: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    # refused unless left at what they mean by default
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    logit_bias: dict[str, float] | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None


def _unsupported(req: ChatRequest) -> str | None:
    if req.frequency_penalty or req.presence_penalty:
        return "frequency_penalty" if req.frequency_penalty else "presence_penalty"
    if req.logprobs or req.top_logprobs:
        return "logprobs" if req.logprobs else "top_logprobs"
    if req.logit_bias:
        return "logit_bias"
    if req.tools or req.functions:
        return "tools" if req.tools else "functions"
    if req.tool_choice not in (None, "none"):
        return "tool_choice"
    if req.response_format and req.response_format.get("type") != "text":
        return "response_format"
    return None


@dataclass
class Checked:
    engine: Engine
    name: str
    prompt_ids: list[int]
    n: int
    max_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    seed: int | None
    stream: bool
    include_usage: bool


def check(req: ChatRequest, engines: dict[str, Engine], limits: Limits) -> Checked:
    """The request's settings after every limit, and its prompt's tokens (APIError otherwise)."""
    if req.model not in engines:
        raise APIError(404, f"The model `{req.model}` does not exist.", param="model", code="model_not_found")
    engine = engines[req.model]
    if (bad := _unsupported(req)) is not None:
        raise APIError(400, f"{bad} is not supported by this server.", param=bad)
    if len(req.messages) > limits.max_messages:
        raise APIError(400, f"At most {limits.max_messages} messages are allowed.", param="messages")
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in req.messages]
    if sum(len(m["content"]) for m in messages) > limits.max_chars:
        raise APIError(400, f"The messages hold more than {limits.max_chars} characters.", param="messages")
    n = req.n or 1
    if n > min(limits.max_n, engine.max_batch):
        raise APIError(400, f"n must be at most {min(limits.max_n, engine.max_batch)}.", param="n")
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    if len(stop) > limits.max_stop:
        raise APIError(400, f"At most {limits.max_stop} stop sequences are allowed.", param="stop")
    if any(not s or len(s) > limits.max_stop_chars for s in stop):
        raise APIError(400, f"Stop sequences must hold 1 to {limits.max_stop_chars} characters.", param="stop")
    asked = req.max_completion_tokens or req.max_tokens
    param = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
    if asked is not None and asked > limits.max_tokens:
        raise APIError(400, f"{param} must be at most {limits.max_tokens}.", param=param)
    try:
        prompt_ids = encode_prompt(engine.tokenizer, messages, template="chat")
    except Exception as e:  # the chat template refuses the conversation (e.g. roles out of order)
        raise APIError(400, f"The chat template could not format the messages: {e}", param="messages") from None
    room = engine.context - len(prompt_ids) if engine.context else limits.max_tokens
    if room < 1 or (asked is not None and asked > room):
        raise APIError(
            400,
            f"This model's maximum context length is {engine.context} tokens. However, you requested "
            f"{len(prompt_ids) + (asked or 1)} tokens ({len(prompt_ids)} in the messages, {asked or 1} in the "
            "completion). Please reduce the length of the messages or completion.",
            param="messages",
            code="context_length_exceeded",
        )
    temperature = 1.0 if req.temperature is None else req.temperature
    return Checked(
        engine=engine,
        name=req.model,
        prompt_ids=prompt_ids,
        n=n,
        max_tokens=asked or min(room, limits.max_tokens),
        temperature=temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        stop=stop,
        seed=req.seed,
        stream=bool(req.stream),
        include_usage=bool(req.stream_options and req.stream_options.include_usage),
    )


# ---- the app ----------------------------------------------------------------------------------------------------


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "Invalid request.", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        return "We could not parse the JSON body of your request.", None
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    param = ".".join(loc) or None
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"{param + ': ' if param else ''}{first.get('msg', 'invalid')}{more}", param


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


def create_app(engines: dict[str, Engine], *, api_key: str | None = None, limits: Limits = Limits()) -> FastAPI:
    """The API over `engines` (model name -> Engine; their worker threads are started with the app)."""
    from contextlib import asynccontextmanager

    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for engine in engines.values():
            engine.start()
        yield

    app = FastAPI(title="rlhfkit serve", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(Guard, api_key=api_key, max_body_bytes=limits.max_body_bytes)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        # FastAPI's own answer echoes the bad input back (a 1 MB field would return whole): the first problem only
        message, param = _validation_message(exc)
        return error_response(APIError(400, message, param=param))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        code = {401: "invalid_api_key", 404: "not_found", 413: "request_too_large"}.get(exc.status_code)
        kind = "server_error" if exc.status_code >= 500 else "invalid_request_error"
        return error_response(APIError(exc.status_code, str(exc.detail), type=kind, code=code))

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception):
        return error_response(APIError(500, "The server had an error.", type="server_error"))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    def model_card(name: str) -> dict:
        return {"id": name, "object": "model", "created": created, "owned_by": "rlhfkit"}

    @app.get("/v1/models")
    async def list_models() -> dict:
        return {"object": "list", "data": [model_card(name) for name in engines]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str) -> dict:
        if name not in engines:
            raise APIError(404, f"The model `{name}` does not exist.", param="model", code="model_not_found")
        return model_card(name)

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest):
        c = check(req, engines, limits)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[list] = asyncio.Queue()
        job = Job(
            prompt_ids=c.prompt_ids,
            emit=lambda events: loop.call_soon_threadsafe(queue.put_nowait, events),
            n=c.n,
            max_tokens=c.max_tokens,
            temperature=c.temperature,
            top_p=c.top_p,
            stop=c.stop,
            seed=c.seed,
            stream=c.stream,
        )
        try:
            c.engine.submit(job)
        except QueueFull:
            raise APIError(
                503,
                "The server is overloaded: too many requests wait for this model. Retry later.",
                type="server_error",
            ) from None
        head = {"id": f"chatcmpl-{secrets.token_hex(12)}", "created": int(time.time()), "model": c.name}
        if c.stream:
            return StreamingResponse(
                _stream(job, queue, head, include_usage=c.include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            choices: dict[int, Finish] = {}
            while True:
                events = await queue.get()
                for ev in events:
                    if isinstance(ev, Failed):
                        raise APIError(500, ev.message, type="server_error")
                    if isinstance(ev, Finish):
                        choices[ev.index] = ev
                if any(isinstance(ev, Done) for ev in events):
                    usage = next(ev for ev in events if isinstance(ev, Done))
                    break
        finally:
            job.cancelled = job.remaining > 0  # the client went away, or the answer is complete
        return {
            **head,
            "object": "chat.completion",
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": choices[i].text},
                    "logprobs": None,
                    "finish_reason": choices[i].reason,
                }
                for i in sorted(choices)
            ],
            "usage": _usage(usage),
        }

    return app


def _usage(done: Done) -> dict:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }


async def _stream(job: Job, queue: asyncio.Queue, head: dict, *, include_usage: bool):
    """Server-sent events in OpenAI's chunk format: a first chunk per choice with the role, content deltas (what
    queued up while the client was slow goes out as one chunk per choice), a last chunk per choice with its
    finish_reason, the usage chunk if asked for, then `data: [DONE]`."""

    def chunk(choices: list[dict], **extra) -> str:
        return _sse({**head, "object": "chat.completion.chunk", "choices": choices, **extra})

    def choice(index: int, delta: dict, finish: str | None = None) -> dict:
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}

    try:
        for i in range(job.n):
            yield chunk([choice(i, {"role": "assistant", "content": ""})])
        while True:
            events = await queue.get()
            while not queue.empty():
                events += queue.get_nowait()
            pending: dict[int, str] = {}  # deltas that queued up, joined per choice
            for ev in events:
                if isinstance(ev, Delta):
                    pending[ev.index] = pending.get(ev.index, "") + ev.text
                    continue
                for i, text in pending.items():
                    yield chunk([choice(i, {"content": text})])
                pending = {}
                if isinstance(ev, Finish):
                    yield chunk([choice(ev.index, {}, ev.reason)])
                elif isinstance(ev, Failed):
                    yield _sse(error_body(ev.message, type="server_error"))
                    return
                elif isinstance(ev, Done):
                    if include_usage:
                        yield chunk([], usage=_usage(ev))
                    yield "data: [DONE]\n\n"
                    return
            for i, text in pending.items():
                yield chunk([choice(i, {"content": text})])
    finally:
        job.cancelled = job.remaining > 0  # the client went away: end its choices at the next step
