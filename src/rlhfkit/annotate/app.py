"""The annotation web app: server-rendered pages for people, a JSON API under /api/v1 for scripts.

Security: every route except /healthz, /login and /api/v1/csrf needs a signed session (401 without, 403 for the
wrong role); every POST needs the session's CSRF token (form field `csrf_token` or header `X-CSRF-Token`);
passwords are argon2 hashes; failed logins are rate limited; all model text is escaped by Jinja2's autoescape.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import defaultdict, deque
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Form, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session
from starlette.middleware.sessions import SessionMiddleware

from rlhfkit.annotate import service
from rlhfkit.annotate.agreement import agreement_report
from rlhfkit.annotate.service import ServiceError
from rlhfkit.annotate.store import Annotation, Item, Project, User, open_db

HERE = FilePath(__file__).parent
Id = Annotated[int, Path(ge=1, le=2**31 - 1)]  # database ids: anything else is a 422, not a crash
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
PUBLIC = {"/healthz", "/login", "/api/v1/csrf", "/api/v1/login", "/openapi.json", "/docs"}


class LoginLimiter:
    """At most `limit` failed logins per key (client address, user name) in `window` seconds."""

    def __init__(self, limit: int = 5, window: float = 300.0):
        self.limit, self.window = limit, window
        self.failures: dict[str, deque] = defaultdict(deque)
        self.lock = threading.Lock()

    def blocked(self, *keys: str) -> bool:
        now = time.monotonic()
        with self.lock:
            for key in keys:
                q = self.failures[key]
                while q and now - q[0] > self.window:
                    q.popleft()
                if len(q) >= self.limit:
                    return True
        return False

    def fail(self, *keys: str) -> None:
        with self.lock:
            for key in keys:
                self.failures[key].append(time.monotonic())


# --- request and response bodies (they describe the API in /openapi.json) ---


class LoginBody(BaseModel):
    name: str = Field(max_length=100)
    password: str = Field(max_length=1000)


class ProjectBody(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    overlap: int = Field(1, ge=1, le=50)
    lease_seconds: int = Field(1800, ge=30, le=604800)


class UserBody(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=8, max_length=1000)
    role: Literal["admin", "annotator"] = "annotator"


class ItemsBody(BaseModel):
    records: list[dict[str, Any]] = Field(max_length=10000)


class SubmitBody(BaseModel):
    answer: str | None = Field(None, max_length=10000, description="gold tasks: the answer")
    label: Literal["a", "b", "tie", "both_bad"] | None = Field(None, description="compare tasks, as shown")
    ranks: list[int] | None = Field(None, max_length=50, description="rank tasks: ranks in the order shown")
    all_bad: bool = False
    reason: str = Field("", max_length=2000)
    flags: list[Literal["incorrect", "unsafe", "private_data"]] = Field(default_factory=list, max_length=3)


def create_app(db_url: str, *, secret_key: str, secure_cookies: bool = False) -> FastAPI:
    sessions = open_db(db_url)

    async def verify_csrf(request: Request) -> None:
        """Every state-changing request carries the session's CSRF token (header, or form field for pages). The
        form is parsed once and cached on the request, so the endpoint still reads its fields."""
        if request.method in SAFE_METHODS:
            return
        expected = request.session.get("csrf")
        given = request.headers.get("x-csrf-token")
        if given is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")
        ):
            given = (await request.form()).get("csrf_token")
        if not expected or not isinstance(given, str) or not hmac.compare_digest(expected, given):
            raise HTTPException(403, "missing or wrong CSRF token")

    app = FastAPI(
        title="rlhfkit annotate",
        version="1",
        description="Human feedback collection for rlhfkit.",
        dependencies=[Depends(verify_csrf)],
    )
    app.state.sessions = sessions
    limiter = LoginLimiter()
    templates = Jinja2Templates(directory=str(HERE / "templates"))  # autoescape on for .html
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'"
        )
        return response

    # added last = outermost, so everything inside sees the session
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret_key,
        session_cookie="rlhfkit_session",
        same_site="lax",
        https_only=secure_cookies,
        max_age=12 * 3600,
    )

    def db():
        with sessions() as s:
            yield s

    def csrf_token(request: Request) -> str:
        if "csrf" not in request.session:
            request.session["csrf"] = secrets.token_urlsafe(32)
        return request.session["csrf"]

    def current_user(request: Request, s: Session = Depends(db)) -> User:
        user_id = request.session.get("user_id")
        user = s.get(User, user_id) if isinstance(user_id, int) else None
        if user is None:
            raise HTTPException(401, "log in first")
        return user

    def admin_user(user: User = Depends(current_user)) -> User:
        if user.role != "admin":
            raise HTTPException(403, "admins only")
        return user

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(DataError)
    async def unstorable_input(request: Request, exc: DataError):
        # a value the database refuses, e.g. a NUL character in PostgreSQL text: the input's fault, not the server's
        # (the request's session is rolled back when it closes)
        return JSONResponse({"detail": "the input holds a value the database cannot store (e.g. NUL)"}, 422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        wants_html = not request.url.path.startswith("/api/") and "text/html" in request.headers.get("accept", "")
        if exc.status_code == 401 and wants_html:
            return RedirectResponse("/login", status_code=303)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    def login_checks(request: Request, name: str) -> tuple[str, str]:
        keys = (f"ip:{request.client.host if request.client else '?'}", f"user:{name}")
        if limiter.blocked(*keys):
            raise HTTPException(429, "too many failed logins; wait a few minutes")
        return keys

    def start_session(request: Request, user: User) -> None:
        request.session.clear()  # a new session on login (no fixation)
        request.session["user_id"] = user.id
        request.session["csrf"] = secrets.token_urlsafe(32)

    # --- public ---

    @app.get("/healthz", tags=["public"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/v1/csrf", tags=["auth"])
    def api_csrf(request: Request) -> dict[str, str]:
        """A CSRF token for this session (send it as X-CSRF-Token on every POST, login included)."""
        return {"csrf_token": csrf_token(request)}

    @app.post("/api/v1/login", tags=["auth"])
    def api_login(body: LoginBody, request: Request, s: Session = Depends(db)) -> dict[str, Any]:
        keys = login_checks(request, body.name)
        user = service.authenticate(s, body.name, body.password)
        if user is None:
            limiter.fail(*keys)
            raise HTTPException(401, "wrong name or password")
        start_session(request, user)
        return {"name": user.name, "role": user.role, "csrf_token": request.session["csrf"]}

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(request: Request):
        return templates.TemplateResponse(request, "login.html", {"csrf": csrf_token(request), "error": None})

    @app.post("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form(request: Request, name: str = Form(""), password: str = Form(""), s: Session = Depends(db)):
        try:
            keys = login_checks(request, name)
        except HTTPException as e:
            return templates.TemplateResponse(
                request, "login.html", {"csrf": csrf_token(request), "error": e.detail}, status_code=429
            )
        user = service.authenticate(s, name, password)
        if user is None:
            limiter.fail(*keys)
            return templates.TemplateResponse(
                request,
                "login.html",
                {"csrf": csrf_token(request), "error": "Wrong name or password."},
                status_code=401,
            )
        start_session(request, user)
        return RedirectResponse("/", status_code=303)

    # --- people (session required) ---

    @app.post("/api/v1/logout", tags=["auth"])
    def api_logout(request: Request, user: User = Depends(current_user)) -> dict[str, str]:
        request.session.clear()
        return {"status": "logged out"}

    @app.post("/logout", include_in_schema=False)
    def logout_form(request: Request, user: User = Depends(current_user)):
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    @app.get("/api/v1/me", tags=["people"])
    def me(user: User = Depends(current_user)) -> dict[str, Any]:
        return {"name": user.name, "role": user.role}

    @app.post("/api/v1/users", tags=["admin"], status_code=201)
    def api_create_user(body: UserBody, admin: User = Depends(admin_user), s: Session = Depends(db)) -> dict[str, Any]:
        u = service.create_user(s, body.name, body.password, body.role)
        return {"id": u.id, "name": u.name, "role": u.role}

    # --- projects ---

    @app.get("/api/v1/projects", tags=["projects"])
    def api_projects(user: User = Depends(current_user), s: Session = Depends(db)) -> list[dict[str, Any]]:
        out = []
        for p in s.scalars(select(Project).order_by(Project.id)):
            prog = service.progress(s, p)
            if user.role != "admin":  # an annotator sees their own count only
                prog = {**prog, "per_person": {user.name: prog["per_person"].get(user.name, 0)}}
            out.append({"id": p.id, "name": p.name, **prog})
        return out

    @app.post("/api/v1/projects", tags=["admin"], status_code=201)
    def api_create_project(
        body: ProjectBody, admin: User = Depends(admin_user), s: Session = Depends(db)
    ) -> dict[str, Any]:
        p = service.create_project(s, body.name, overlap=body.overlap, lease_seconds=body.lease_seconds)
        return {"id": p.id, "name": p.name, "overlap": p.overlap, "lease_seconds": p.lease_seconds}

    @app.post("/api/v1/projects/{project_id}/items", tags=["admin"], status_code=201)
    def api_import(
        project_id: Id, body: ItemsBody, admin: User = Depends(admin_user), s: Session = Depends(db)
    ) -> dict[str, int]:
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

    @app.get("/api/v1/projects/{project_id}/progress", tags=["projects"])
    def api_progress(project_id: Id, user: User = Depends(current_user), s: Session = Depends(db)) -> dict[str, Any]:
        prog = service.progress(s, service.get_project(s, project_id))
        if user.role != "admin":
            prog["per_person"] = {user.name: prog["per_person"].get(user.name, 0)}
        return prog

    @app.get("/api/v1/projects/{project_id}/stats", tags=["admin"])
    def api_stats(project_id: Id, admin: User = Depends(admin_user), s: Session = Depends(db)) -> dict[str, Any]:
        return project_stats(s, service.get_project(s, project_id))

    @app.get("/api/v1/projects/{project_id}/export", tags=["admin"])
    def api_export(
        project_id: Id,
        format: Literal["sft", "pairs", "comparisons", "rankings"] = Query(...),
        admin: User = Depends(admin_user),
        s: Session = Depends(db),
    ) -> list[dict[str, Any]]:
        return service.export(s, service.get_project(s, project_id), format)

    # --- the work ---

    @app.post("/api/v1/projects/{project_id}/next", tags=["work"])
    def api_next(project_id: Id, user: User = Depends(current_user), s: Session = Depends(db)) -> dict[str, Any]:
        a = service.next_assignment(s, service.get_project(s, project_id), user)
        if a is None:
            return {"assignment_id": None, "detail": "nothing left for you in this project"}
        return service.view(a)

    @app.post("/api/v1/assignments/{assignment_id}/submit", tags=["work"], status_code=201)
    def api_submit(
        assignment_id: Id, body: SubmitBody, user: User = Depends(current_user), s: Session = Depends(db)
    ) -> dict[str, Any]:
        ann = service.submit(s, service.own_assignment(s, assignment_id, user), body.model_dump())
        return {"annotation_id": ann.id}

    @app.post("/api/v1/assignments/{assignment_id}/skip", tags=["work"])
    def api_skip(assignment_id: Id, user: User = Depends(current_user), s: Session = Depends(db)) -> dict[str, str]:
        service.skip(s, service.own_assignment(s, assignment_id, user))
        return {"status": "skipped"}

    # --- pages ---

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def home(request: Request, user: User = Depends(current_user), s: Session = Depends(db)):
        projects = api_projects(user, s)
        return templates.TemplateResponse(
            request, "home.html", {"user": user, "projects": projects, "csrf": csrf_token(request)}
        )

    @app.get("/projects/{project_id}/work", response_class=HTMLResponse, include_in_schema=False)
    def work(project_id: Id, request: Request, user: User = Depends(current_user), s: Session = Depends(db)):
        project = service.get_project(s, project_id)
        a = service.next_assignment(s, project, user)
        task = service.view(a) if a else None
        return templates.TemplateResponse(
            request,
            "task.html",
            {
                "user": user,
                "project": project,
                "task": task,
                "csrf": csrf_token(request),
                "progress": service.progress(s, project),
            },
        )

    @app.post("/assignments/{assignment_id}", include_in_schema=False)
    async def submit_form(
        assignment_id: Id, request: Request, user: User = Depends(current_user), s: Session = Depends(db)
    ):
        form = await request.form()
        a = service.own_assignment(s, assignment_id, user)
        project_id = a.item.project_id
        if form.get("action") == "skip":
            service.skip(s, a)
        else:
            data: dict[str, Any] = {"reason": form.get("reason") or "", "flags": form.getlist("flags")}
            kind = a.item.kind
            if kind == "gold":
                data["answer"] = form.get("answer")
            elif kind == "compare":
                data["label"] = form.get("label")
            else:
                data["all_bad"] = form.get("all_bad") == "on"
                try:
                    data["ranks"] = (
                        None if data["all_bad"] else [int(form.get(f"rank_{i}") or 0) for i in range(len(a.order))]
                    )
                except ValueError:
                    raise ServiceError("ranks must be numbers") from None
            service.submit(s, a, data)
        return RedirectResponse(f"/projects/{project_id}/work", status_code=303)

    @app.get("/admin", response_class=HTMLResponse, include_in_schema=False)
    def admin_page(request: Request, admin: User = Depends(admin_user), s: Session = Depends(db)):
        projects = [(p, service.progress(s, p), project_stats(s, p)) for p in s.scalars(select(Project))]
        users = list(s.scalars(select(User).order_by(User.name)))
        return templates.TemplateResponse(
            request, "admin.html", {"user": admin, "projects": projects, "users": users, "csrf": csrf_token(request)}
        )

    @app.post("/admin/projects", include_in_schema=False)
    def admin_create_project(
        name: str = Form(...),
        overlap: int = Form(1),
        lease_seconds: int = Form(1800),
        admin: User = Depends(admin_user),
        s: Session = Depends(db),
    ):
        service.create_project(s, name, overlap=overlap, lease_seconds=lease_seconds)
        return RedirectResponse("/admin", status_code=303)

    @app.post("/admin/users", include_in_schema=False)
    def admin_create_user(
        name: str = Form(...),
        password: str = Form(...),
        role: str = Form("annotator"),
        admin: User = Depends(admin_user),
        s: Session = Depends(db),
    ):
        service.create_user(s, name, password, role)
        return RedirectResponse("/admin", status_code=303)

    return app


def project_stats(s: Session, project: Project) -> dict[str, Any]:
    """Agreement on the project's A/B comparisons, by item."""
    units: dict[int, dict[str, str]] = defaultdict(dict)
    rows = s.execute(
        select(Annotation.item_id, User.pseudonym, Annotation.payload)
        .join(User)
        .join(Item)
        .where(Item.project_id == project.id, Annotation.kind == "compare")
    )
    for item_id, who, payload in rows:
        units[item_id][who] = payload["label"]
    return agreement_report(units)
