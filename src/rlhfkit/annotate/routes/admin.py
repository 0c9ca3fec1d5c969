"""The admin page and its forms (through the API's models and the same service functions)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from rlhfkit.annotate import chat, service
from rlhfkit.annotate.deps import DB, AdminUser, FormFields, Id, csrf_token, parse
from rlhfkit.annotate.routes.api import set_disabled
from rlhfkit.annotate.schemas import ModelBody, ModelUpdateBody, ProjectBody, UserBody

router = APIRouter(prefix="/admin", include_in_schema=False)


@router.get("", response_class=HTMLResponse)
def admin_page(request: Request, admin: AdminUser, s: DB):
    projects = [(p, service.progress(s, p), service.project_stats(s, p)) for p in service.projects(s)]
    chats = {
        p.id: {
            "models": [chat.model_view(m) for m in chat.models(s, p)],
            "stats": chat.chat_stats(s, p),
            "leaderboard": chat.arena_leaderboard(s, p),
        }
        for p in service.projects(s)
    }
    return request.app.state.templates.TemplateResponse(
        request,
        "admin.html",
        {
            "user": admin,
            "projects": projects,
            "chats": chats,
            "users": service.users(s),
            "csrf": csrf_token(request),
        },
    )


@router.post("/projects")
def admin_create_project(form: FormFields, admin: AdminUser, s: DB):
    body = parse(ProjectBody, {k: v for k in ("name", "overlap", "lease_seconds") if (v := form.get(k)) is not None})
    service.create_project(s, body.name, overlap=body.overlap, lease_seconds=body.lease_seconds)
    return RedirectResponse("/admin", status_code=303)


@router.post("/users")
def admin_create_user(form: FormFields, admin: AdminUser, s: DB):
    body = parse(UserBody, {k: v for k in ("name", "password", "role") if (v := form.get(k)) is not None})
    service.create_user(s, body.name, body.password, body.role)
    return RedirectResponse("/admin", status_code=303)


@router.post("/users/{user_id}/disable")
def admin_disable_user(user_id: Id, admin: AdminUser, s: DB):
    set_disabled(s, admin, user_id, disabled=True)
    return RedirectResponse("/admin", status_code=303)


@router.post("/users/{user_id}/enable")
def admin_enable_user(user_id: Id, admin: AdminUser, s: DB):
    set_disabled(s, admin, user_id, disabled=False)
    return RedirectResponse("/admin", status_code=303)


@router.post("/projects/{project_id}/models")
def admin_add_model(project_id: Id, form: FormFields, admin: AdminUser, s: DB):
    fields = ("name", "base_url", "model", "api_key", "max_tokens")
    body = parse(ModelBody, {k: v for k in fields if (v := form.get(k))})  # empty fields take their defaults
    chat.add_model(s, service.get_project(s, project_id), **body.model_dump())
    return RedirectResponse("/admin", status_code=303)


@router.post("/projects/{project_id}/models/{model_id}/key")
def admin_set_model_key(project_id: Id, model_id: Id, form: FormFields, admin: AdminUser, s: DB):
    """A new API key; an empty field removes the key."""
    row = chat.get_model(s, service.get_project(s, project_id), model_id)
    body = parse(ModelUpdateBody, {"api_key": form.get("api_key") or None})
    chat.update_model(s, row, api_key=body.api_key, clear_api_key=not body.api_key)
    return RedirectResponse("/admin", status_code=303)


@router.post("/projects/{project_id}/models/{model_id}/delete")
def admin_delete_model(project_id: Id, model_id: Id, admin: AdminUser, s: DB):
    chat.delete_model(s, chat.get_model(s, service.get_project(s, project_id), model_id))
    return RedirectResponse("/admin", status_code=303)
