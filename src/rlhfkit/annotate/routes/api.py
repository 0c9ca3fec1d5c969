"""The JSON API under /api/v1, for scripts: people, projects, the work queue, export; the chat page's and the
arena's answers (server-sent events), thumbs and votes; the models of a project and the leaderboard (admins)."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from rlhfkit.annotate import chat, service, upstream
from rlhfkit.annotate.deps import DB, AdminUser, CurrentUser, Id
from rlhfkit.annotate.schemas import (
    ArenaBody,
    ChatBody,
    FeedbackBody,
    ItemsBody,
    ModelBody,
    ModelUpdateBody,
    ProjectBody,
    SubmitBody,
    UserBody,
    VoteBody,
)
from rlhfkit.annotate.service import ServiceError
from rlhfkit.annotate.upstream import AnswerStream, UpstreamError

router = APIRouter(prefix="/api/v1")


# --- people ---


@router.post("/users", tags=["admin"], status_code=201)
def api_create_user(body: UserBody, admin: AdminUser, s: DB) -> dict[str, Any]:
    u = service.create_user(s, body.name, body.password, body.role)
    return {"id": u.id, "name": u.name, "role": u.role}


def set_disabled(s, admin, user_id: int, *, disabled: bool) -> None:
    user = service.get_user(s, user_id)
    if user.id == admin.id:
        raise ServiceError("you cannot disable or enable yourself")  # and so the last admin stays
    service.set_disabled(s, user, disabled=disabled)


@router.post("/users/{user_id}/disable", tags=["admin"])
def api_disable_user(user_id: Id, admin: AdminUser, s: DB) -> dict[str, str]:
    """The person can no longer log in; their sessions end and their leases go back to the queue."""
    set_disabled(s, admin, user_id, disabled=True)
    return {"status": "disabled"}


@router.post("/users/{user_id}/enable", tags=["admin"])
def api_enable_user(user_id: Id, admin: AdminUser, s: DB) -> dict[str, str]:
    set_disabled(s, admin, user_id, disabled=False)
    return {"status": "enabled"}


# --- projects ---


def project_list(s, user) -> list[dict[str, Any]]:
    out = []
    for p in service.projects(s):
        prog = service.progress(s, p)
        if user.role != "admin":  # an annotator sees their own count only
            prog = {**prog, "per_person": {user.name: prog["per_person"].get(user.name, 0)}}
        out.append({"id": p.id, "name": p.name, **prog})
    return out


@router.get("/projects", tags=["projects"])
def api_projects(user: CurrentUser, s: DB) -> list[dict[str, Any]]:
    return project_list(s, user)


@router.post("/projects", tags=["admin"], status_code=201)
def api_create_project(body: ProjectBody, admin: AdminUser, s: DB) -> dict[str, Any]:
    p = service.create_project(s, body.name, overlap=body.overlap, lease_seconds=body.lease_seconds)
    return {"id": p.id, "name": p.name, "overlap": p.overlap, "lease_seconds": p.lease_seconds}


@router.post("/projects/{project_id}/items", tags=["admin"], status_code=201)
def api_import(project_id: Id, body: ItemsBody, admin: AdminUser, s: DB) -> dict[str, int]:
    from rlhfkit.data.schema import FieldError, detect_format, parse_record

    project = service.get_project(s, project_id)
    records = []
    for n, raw in enumerate(body.records, start=1):
        fmt = detect_format(raw)
        if fmt not in ("sft", "messages", "prompts", "generations", "rankings"):
            raise ServiceError(f"records[{n}]: not a question or a prompt with answers")
        try:
            records.append(parse_record(fmt, raw))
        except FieldError as e:
            raise ServiceError(f"records[{n}]: {e}") from None
    return dict(service.import_records(s, project, records))


@router.get("/projects/{project_id}/progress", tags=["projects"])
def api_progress(project_id: Id, user: CurrentUser, s: DB) -> dict[str, Any]:
    prog = service.progress(s, service.get_project(s, project_id))
    if user.role != "admin":
        prog["per_person"] = {user.name: prog["per_person"].get(user.name, 0)}
    return prog


@router.get("/projects/{project_id}/stats", tags=["admin"])
def api_stats(project_id: Id, admin: AdminUser, s: DB) -> dict[str, Any]:
    return service.project_stats(s, service.get_project(s, project_id))


@router.get("/projects/{project_id}/export", tags=["admin"])
def api_export(
    project_id: Id,
    admin: AdminUser,
    s: DB,
    format: Literal["sft", "pairs", "comparisons", "rankings", "ratings"] = Query(...),
    exclude_flagged: bool = Query(False, description="leave out judgements flagged unsafe, private_data or incorrect"),
) -> list[dict[str, Any]]:
    return service.export(s, service.get_project(s, project_id), format, exclude_flagged=exclude_flagged)


# --- the work ---


@router.post("/projects/{project_id}/next", tags=["work"])
def api_next(project_id: Id, user: CurrentUser, s: DB) -> dict[str, Any]:
    a = service.next_assignment(s, service.get_project(s, project_id), user)
    if a is None:
        return {"assignment_id": None, "detail": "nothing left for you in this project"}
    return service.view(a)


@router.post("/assignments/{assignment_id}/submit", tags=["work"], status_code=201)
def api_submit(assignment_id: Id, body: SubmitBody, user: CurrentUser, s: DB) -> dict[str, Any]:
    ann = service.submit(s, service.own_assignment(s, assignment_id, user), body.model_dump())
    return {"annotation_id": ann.id}


@router.post("/assignments/{assignment_id}/skip", tags=["work"])
def api_skip(assignment_id: Id, user: CurrentUser, s: DB) -> dict[str, str]:
    service.skip(s, service.own_assignment(s, assignment_id, user))
    return {"status": "skipped"}


# --- the models a project chats with (admins only: the URL and the key never reach other people) ---


@router.get("/projects/{project_id}/models", tags=["admin"])
def api_models(project_id: Id, admin: AdminUser, s: DB) -> list[dict[str, Any]]:
    """The project's models; of an API key only its last 4 characters (when it has 16 or more)."""
    return [chat.model_view(m) for m in chat.models(s, service.get_project(s, project_id))]


@router.post("/projects/{project_id}/models", tags=["admin"], status_code=201)
def api_add_model(project_id: Id, body: ModelBody, admin: AdminUser, s: DB) -> dict[str, Any]:
    """An OpenAI-compatible endpoint for the chat page and the arena (the first model added answers in chat)."""
    project = service.get_project(s, project_id)
    row = chat.add_model(s, project, **body.model_dump())
    return chat.model_view(row)


@router.patch("/projects/{project_id}/models/{model_id}", tags=["admin"])
def api_update_model(project_id: Id, model_id: Id, body: ModelUpdateBody, admin: AdminUser, s: DB) -> dict[str, Any]:
    row = chat.get_model(s, service.get_project(s, project_id), model_id)
    return chat.model_view(chat.update_model(s, row, **body.model_dump()))


@router.delete("/projects/{project_id}/models/{model_id}", tags=["admin"])
def api_delete_model(project_id: Id, model_id: Id, admin: AdminUser, s: DB) -> dict[str, str]:
    chat.delete_model(s, chat.get_model(s, service.get_project(s, project_id), model_id))
    return {"status": "deleted"}


@router.get("/projects/{project_id}/leaderboard", tags=["admin"])
def api_leaderboard(project_id: Id, admin: AdminUser, s: DB) -> list[dict[str, Any]]:
    """The arena's Bradley-Terry ratings (Elo scale) with bootstrap 95% intervals, best first."""
    return chat.arena_leaderboard(s, service.get_project(s, project_id))


# --- chat and arena: answers streamed as server-sent events ---

SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}  # no proxy buffering
STREAM_DOC = {
    200: {
        "content": {"text/event-stream": {}},
        "description": 'events `data: {"type": ...}`: start, delta (text, and side in the arena), done (turn_id or '
        "battle_id), error (detail)",
    }
}


def sse(event: dict[str, Any]) -> bytes:
    """One server-sent event. The answer travels as a JSON string in a text/event-stream (with nosniff), and the
    page sets it as text: model output never becomes markup."""
    return f"data: {json.dumps(event)}\n\n".encode()


def take_chat_budget(request: Request, user_id: int, answers: int) -> None:
    wait = request.app.state.chat_rate.take(user_id, answers)
    if wait > 0:
        seconds = math.ceil(wait)
        raise ServiceError(
            f"too many questions in a short time; try again in {seconds} s", 429, {"Retry-After": str(seconds)}
        )


async def open_streams(request: Request, user_id: int, endpoints: list[upstream.Endpoint], messages: list[dict]):
    """A stream slot of the person's, then the endpoints asked at once; on failure everything opened is closed."""
    slots = request.app.state.chat_slots
    slot = slots.acquire(user_id)
    if slot is None:
        raise ServiceError(f"you have {slots.per_key} answers coming already; wait for them", 429, {"Retry-After": "5"})
    bounds = request.app.state.upstream_bounds
    results = await asyncio.gather(
        *(upstream.open_answer(e, messages, bounds) for e in endpoints), return_exceptions=True
    )
    streams = [r for r in results if isinstance(r, AnswerStream)]
    failed = next((r for r in results if not isinstance(r, AnswerStream)), None)
    if failed is not None:
        for stream in streams:
            await stream.aclose()
        slots.release(user_id, slot)
        raise failed
    return slot, streams


async def respond(events: AsyncIterator[bytes]) -> StreamingResponse:
    """Run `events` up to its first event (the endpoints asked and answering) before answering: a refusal or a
    failed endpoint is then an HTTP error with its status, not an event in a 200."""
    try:
        first = await anext(events)
    except UpstreamError as e:
        raise ServiceError(str(e), e.status) from None

    async def rest() -> AsyncIterator[bytes]:
        yield first
        async for event in events:
            yield event

    return StreamingResponse(rest(), media_type="text/event-stream", headers=SSE_HEADERS)


def _store(request: Request, save, *args) -> int:
    """The id of what `save` stored, in a session of its own (the request's may be closed while the answer streams)."""
    with request.app.state.sessions() as s:
        return save(s, *args).id


@router.post("/projects/{project_id}/chat", tags=["chat"], responses=STREAM_DOC)
async def api_chat(project_id: Id, body: ChatBody, request: Request, user: CurrentUser, s: DB):
    """Ask the project's model (continuing the conversation of your answer `parent_id`, if given). The answer is
    stored as the model gave it; rate it by its turn_id."""

    def prepare():
        project = service.get_project(s, project_id)
        row = chat.chat_model(s, project)
        return row.name, chat.endpoint(row), chat.conversation(s, project, user, body.message, body.parent_id)

    name, endpoint, messages = await run_in_threadpool(prepare)
    take_chat_budget(request, user.id, 1)
    user_id = user.id

    async def events() -> AsyncIterator[bytes]:
        slot, (stream,) = await open_streams(request, user_id, [endpoint], messages)
        try:
            yield sse({"type": "start"})
            try:
                async for piece in stream.pieces():
                    yield sse({"type": "delta", "text": piece})
            except UpstreamError as e:
                yield sse({"type": "error", "detail": str(e)})
                return
            if not stream.text.strip():
                yield sse({"type": "error", "detail": "the model gave an empty answer"})
                return
            turn_id = await run_in_threadpool(
                _store, request, chat.save_turn, project_id, user_id, name, messages, stream.text, stream.truncated
            )
            yield sse({"type": "done", "turn_id": turn_id, "truncated": stream.truncated})
        finally:
            await stream.aclose()
            request.app.state.chat_slots.release(user_id, slot)

    return await respond(events())


@router.post("/chat/{turn_id}/feedback", tags=["chat"])
def api_feedback(turn_id: Id, body: FeedbackBody, user: CurrentUser, s: DB) -> dict[str, Any]:
    """Thumbs up or down on one of your answers, once, with an optional correction."""
    turn = chat.rate(s, chat.own_turn(s, user, turn_id), body.label, body.correction)
    return {"turn_id": turn.id, "label": turn.label, "correction": turn.correction}


@router.post("/projects/{project_id}/arena", tags=["chat"], responses=STREAM_DOC)
async def api_arena(project_id: Id, body: ArenaBody, request: Request, user: CurrentUser, s: DB):
    """Two of the project's models answer, side by side as A and B, in random order; which is which is never
    shown. Vote by battle_id."""

    def prepare():
        project = service.get_project(s, project_id)
        pair = chat.arena_pair(s, project)
        messages = chat.conversation(s, project, user, body.message, None)
        return [m.name for m in pair], [chat.endpoint(m) for m in pair], messages

    names, endpoints, messages = await run_in_threadpool(prepare)
    take_chat_budget(request, user.id, 2)
    user_id = user.id

    async def events() -> AsyncIterator[bytes]:
        slot, streams = await open_streams(request, user_id, endpoints, messages)
        try:
            yield sse({"type": "start"})
            try:
                async for side, piece in upstream.merge(dict(zip("ab", streams))):
                    yield sse({"type": "delta", "side": side, "text": piece})
            except UpstreamError as e:
                yield sse({"type": "error", "detail": str(e)})
                return
            if not all(stream.text.strip() for stream in streams):
                yield sse({"type": "error", "detail": "a model gave an empty answer"})
                return
            answers = tuple(stream.text for stream in streams)
            battle_id = await run_in_threadpool(
                _store, request, chat.save_battle, project_id, user_id, messages, tuple(names), answers
            )
            yield sse({"type": "done", "battle_id": battle_id})
        finally:
            for stream in streams:
                await stream.aclose()
            request.app.state.chat_slots.release(user_id, slot)

    return await respond(events())


@router.post("/arena/{battle_id}/vote", tags=["chat"])
def api_vote(battle_id: Id, body: VoteBody, user: CurrentUser, s: DB) -> dict[str, Any]:
    """A, B (as shown), tie or both bad, once per arena question."""
    battle = chat.vote(s, chat.own_battle(s, user, battle_id), body.label)
    return {"battle_id": battle.id, "label": battle.label}
