"""Answers from an OpenAI-compatible chat endpoint (`rlhf serve`, vLLM's OpenAI server, ...), streamed.

`POST {base_url}/chat/completions` with `stream: true`; the server-sent events' `choices[0].delta.content` pieces
are the answer (an endpoint that answers with one JSON body instead is read too). Everything the endpoint sends is
bounded: the time to connect and between chunks, the whole answer's time, the bytes read and the answer's length.
Past a bound the answer stops there and is marked truncated. Errors say what went wrong in words for the person
asking, never the URL or the key (the details go to the server's log).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

log = logging.getLogger("rlhfkit.annotate")


@dataclass(frozen=True)
class Endpoint:
    base_url: str  # without the trailing /chat/completions
    model: str
    api_key: str | None = None
    max_tokens: int = 512


@dataclass(frozen=True)
class Bounds:
    connect_seconds: float = 10.0
    chunk_seconds: float = 120.0  # the longest wait for the next piece (the first token of a long prompt included)
    total_seconds: float = 600.0
    max_bytes: int = 8 * 2**20  # of the endpoint's response
    max_chars: int = 20_000  # of the answer


class UpstreamError(Exception):
    """The endpoint failed; the message is for the person asking."""

    def __init__(self, message: str, status: int = 502):
        super().__init__(message)
        self.status = status


class AnswerStream:
    """One answer being received. `pieces()` yields it piece by piece; `text` and `truncated` hold what came."""

    def __init__(self, client: httpx.AsyncClient, response: httpx.Response, bounds: Bounds, started: float):
        self._client, self._response, self.bounds, self._started = client, response, bounds, started
        self.text = ""
        self.truncated = False

    async def aclose(self) -> None:
        await self._response.aclose()
        await self._client.aclose()

    def _add(self, piece: object) -> str:
        """Take a piece of the answer within max_chars; NUL characters are dropped (PostgreSQL cannot store them)."""
        if not isinstance(piece, str) or not piece:
            return ""
        piece = piece.replace("\x00", "")
        room = self.bounds.max_chars - len(self.text)
        if len(piece) > room:
            piece, self.truncated = piece[:room], True
        self.text += piece
        return piece

    async def _lines(self) -> AsyncIterator[bytes]:
        """The response's lines, within max_bytes (a line that never ends cannot fill memory) and total_seconds."""
        received, buffer = 0, b""
        async for chunk in self._response.aiter_bytes():
            received += len(chunk)
            if received > self.bounds.max_bytes or time.monotonic() - self._started > self.bounds.total_seconds:
                self.truncated = True
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                yield line.rstrip(b"\r")
        if buffer:
            yield buffer

    async def pieces(self) -> AsyncIterator[str]:
        try:
            if self._response.headers.get("content-type", "").startswith("application/json"):
                body = b"".join([line + b"\n" async for line in self._lines()])
                if self.truncated:
                    raise UpstreamError("the model server's answer was too large")
                piece = self._add(_message_content(body))
                if piece:
                    yield piece
                return
            async for line in self._lines():
                if not line.startswith(b"data:"):
                    continue  # comments, event names, blank lines between events
                data = line[5:].strip()
                if data == b"[DONE]":
                    return
                piece = self._add(_delta_content(data))
                if piece:
                    yield piece
                if self.truncated:
                    return
        except httpx.TimeoutException:
            raise UpstreamError("the model server stopped answering (timeout)", 504) from None
        except httpx.HTTPError as e:
            log.warning("the model server's stream broke: %r", e)
            raise UpstreamError("the model server's answer broke off") from None


def _delta_content(data: bytes) -> object:
    try:
        event = json.loads(data)
    except ValueError:
        raise UpstreamError("the model server sent something that is not an answer") from None
    if not isinstance(event, dict):
        raise UpstreamError("the model server sent something that is not an answer")
    if "error" in event:
        log.warning("the model server failed while answering: %.500s", data)
        raise UpstreamError("the model server failed while answering")
    choices = event.get("choices")
    if not isinstance(choices, list):
        return None
    for choice in choices:
        if isinstance(choice, dict) and choice.get("index", 0) == 0 and isinstance(choice.get("delta"), dict):
            return choice["delta"].get("content")
    return None


def _message_content(body: bytes) -> object:
    try:
        choice = json.loads(body)["choices"][0]
        return choice["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise UpstreamError("the model server sent something that is not an answer") from None


async def open_answer(endpoint: Endpoint, messages: list[dict], bounds: Bounds = Bounds()) -> AnswerStream:
    """Ask the endpoint and wait for its status: an error status, a refused connection or a timeout raise
    UpstreamError before anything reaches the person asking. The caller must `aclose()` the stream."""
    timeout = httpx.Timeout(bounds.chunk_seconds, connect=bounds.connect_seconds)
    # no redirects: the key goes to the configured server only
    client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)
    headers = {"Accept": "text/event-stream"}
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    body = {"model": endpoint.model, "messages": messages, "max_tokens": endpoint.max_tokens, "stream": True}
    started = time.monotonic()
    try:
        request = client.build_request("POST", f"{endpoint.base_url}/chat/completions", json=body, headers=headers)
        response = await client.send(request, stream=True)
    except httpx.TimeoutException:
        await client.aclose()
        raise UpstreamError("the model server did not answer in time", 504) from None
    except httpx.HTTPError as e:
        await client.aclose()
        log.warning("the model server at %s could not be reached: %r", endpoint.base_url, e)
        raise UpstreamError("the model server could not be reached") from None
    except BaseException:
        await client.aclose()
        raise
    if response.status_code != 200:
        try:
            detail = b""
            async for chunk in response.aiter_bytes():
                detail += chunk
                if len(detail) > 2000:
                    break
        except httpx.HTTPError:
            detail = b""
        finally:
            await response.aclose()
            await client.aclose()
        text = detail.decode(errors="replace")
        log.warning("the model server at %s answered %d: %.2000s", endpoint.base_url, response.status_code, text)
        raise UpstreamError(f"the model server answered with status {response.status_code}")
    return AnswerStream(client, response, bounds, started)


async def merge(streams: dict[str, AnswerStream]) -> AsyncIterator[tuple[str, str]]:
    """(side, piece) from several streams as they arrive; the first error ends them all."""
    queue: asyncio.Queue = asyncio.Queue(maxsize=64)

    async def pump(side: str, stream: AnswerStream) -> None:
        try:
            async for piece in stream.pieces():
                await queue.put((side, piece, None))
            await queue.put((side, None, None))
        except UpstreamError as e:
            await queue.put((side, None, e))
        except Exception:  # anything else must still end the merge, not leave it waiting
            log.exception("reading the model server's answer failed")
            await queue.put((side, None, UpstreamError("the model server's answer could not be read")))

    tasks = [asyncio.create_task(pump(side, stream)) for side, stream in streams.items()]
    try:
        running = len(tasks)
        while running:
            side, piece, error = await queue.get()
            if error is not None:
                raise error
            if piece is None:
                running -= 1
            else:
                yield side, piece
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
