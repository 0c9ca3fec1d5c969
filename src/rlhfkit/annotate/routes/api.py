"""The JSON API under /api/v1, for scripts: people, projects, the work queue, export."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query

from rlhfkit.annotate import service
from rlhfkit.annotate.deps import DB, AdminUser, CurrentUser, Id
from rlhfkit.annotate.schemas import ItemsBody, ProjectBody, SubmitBody, UserBody
from rlhfkit.annotate.service import ServiceError

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
