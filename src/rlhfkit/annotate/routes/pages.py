"""The pages people work in. GET only shows; every change (a lease included) is a POST with the CSRF token."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from rlhfkit.annotate import chat, service
from rlhfkit.annotate.deps import DB, CurrentUser, FormFields, Id, csrf_token, parse
from rlhfkit.annotate.routes.api import project_list
from rlhfkit.annotate.schemas import SubmitBody
from rlhfkit.annotate.service import ServiceError

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def home(request: Request, user: CurrentUser, s: DB):
    return request.app.state.templates.TemplateResponse(
        request, "home.html", {"user": user, "projects": project_list(s, user), "csrf": csrf_token(request)}
    )


def work_page(request: Request, s, user, project, *, error: str | None = None, status_code: int = 200):
    """The person's current item in the project; without one, a button for the next, or "all done"."""
    a = service.current_assignment(s, project, user)
    return request.app.state.templates.TemplateResponse(
        request,
        "task.html",
        {
            "user": user,
            "project": project,
            "task": service.view(a) if a else None,
            "more": a is None and service.has_work(s, project, user),
            "error": error,
            "csrf": csrf_token(request),
            "progress": service.progress(s, project),
        },
        status_code=status_code,
    )


@router.get("/projects/{project_id}/work", response_class=HTMLResponse)
def work(project_id: Id, request: Request, user: CurrentUser, s: DB):
    return work_page(request, s, user, service.get_project(s, project_id))


@router.post("/projects/{project_id}/work")
def next_item(project_id: Id, user: CurrentUser, s: DB):
    """Lease the next item (the Start button), then show it."""
    service.next_assignment(s, service.get_project(s, project_id), user)
    return RedirectResponse(f"/projects/{project_id}/work", status_code=303)


def form_answer(form, kind: str, shown: int) -> dict[str, Any]:
    """The page's fields as the API's SubmitBody (so the same limits apply)."""
    data: dict[str, Any] = {"reason": form.get("reason") or "", "flags": form.getlist("flags")}
    if kind == "gold":
        data["answer"] = form.get("answer")
    elif kind == "compare":
        data["label"] = form.get("label")
    else:
        data["all_bad"] = form.get("all_bad") == "on"
        if not data["all_bad"]:
            try:
                data["ranks"] = [int(form.get(f"rank_{i}") or 0) for i in range(shown)]
            except ValueError:
                raise ServiceError("ranks must be numbers") from None
    return data


@router.post("/assignments/{assignment_id}")
def submit_form(assignment_id: Id, request: Request, form: FormFields, user: CurrentUser, s: DB):
    """Submit or skip, then lease the next item. A refusal (an expired lease, bad ranks) is shown on the page."""
    a = service.own_assignment(s, assignment_id, user)
    project = a.item.project
    try:
        if form.get("action") == "skip":
            service.skip(s, a)
        else:
            body = parse(SubmitBody, form_answer(form, a.item.kind, len(a.order)))
            service.submit(s, a, body.model_dump())
    except ServiceError as e:
        s.rollback()
        return work_page(request, s, user, project, error=str(e), status_code=e.status)
    service.next_assignment(s, project, user)
    return RedirectResponse(f"/projects/{project.id}/work", status_code=303)


@router.get("/projects/{project_id}/chat", response_class=HTMLResponse)
def chat_page(project_id: Id, request: Request, user: CurrentUser, s: DB):
    """Ask the project's model, rate its answers; ask two models at once in the arena. No model's name, URL or key
    is on the page."""
    project = service.get_project(s, project_id)
    n_models = len(chat.models(s, project))
    return request.app.state.templates.TemplateResponse(
        request,
        "chat.html",
        {
            "user": user,
            "project": project,
            "chat_ready": n_models >= 1,
            "arena_ready": n_models >= 2,
            "csrf": csrf_token(request),
        },
    )
