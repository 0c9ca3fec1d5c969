"""The admin page and its forms (through the API's models and the same service functions)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from rlhfkit.annotate import service
from rlhfkit.annotate.deps import DB, AdminUser, FormFields, Id, csrf_token, parse
from rlhfkit.annotate.routes.api import set_disabled
from rlhfkit.annotate.schemas import ProjectBody, UserBody

router = APIRouter(prefix="/admin", include_in_schema=False)


@router.get("", response_class=HTMLResponse)
def admin_page(request: Request, admin: AdminUser, s: DB):
    projects = [(p, service.progress(s, p), service.project_stats(s, p)) for p in service.projects(s)]
    return request.app.state.templates.TemplateResponse(
        request,
        "admin.html",
        {"user": admin, "projects": projects, "users": service.users(s), "csrf": csrf_token(request)},
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
