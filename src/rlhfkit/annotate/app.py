"""The annotation web app: server-rendered pages for people, a JSON API under /api/v1 for scripts.

Security: every route except /healthz, /login and /api/v1/csrf needs a live server-side session of this database
(401 without, 403 for the wrong role); sessions end at logout, when an admin disables the person, or after 12
hours. Every POST (and PATCH, DELETE) needs the session's CSRF token (form field `csrf_token` or header `X-CSRF-Token`);
bodies are capped before they are parsed; passwords are argon2 hashes; failed logins back off per address and name;
all model text is escaped by Jinja2's autoescape, and answers streamed to the chat page are JSON in a
text/event-stream that the page sets as text. Model endpoints (URL, key) are seen and changed by admins only; chat
answers are limited per person (a rate, and streams at once).
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.exc import DataError
from starlette.middleware.sessions import SessionMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from rlhfkit.annotate import service
from rlhfkit.annotate.deps import verify_csrf
from rlhfkit.annotate.limits import LoginLimiter, RateLimiter, StreamSlots
from rlhfkit.annotate.routes import admin, api, auth, pages
from rlhfkit.annotate.service import ServiceError
from rlhfkit.annotate.store import open_db
from rlhfkit.annotate.upstream import Bounds

HERE = Path(__file__).parent
log = logging.getLogger("rlhfkit.annotate")
MAX_BODY_BYTES = 4 * 2**20  # larger imports: `rlhf annotate import`
CHAT_PER_MINUTE = 20  # model answers per person (an arena question takes two)
CHAT_STREAMS = 2  # answers streaming to one person at once (an arena question is one)


class ForwardedFor:
    """X-Forwarded-For is believed only from the `trusted` proxies (uvicorn's ProxyHeadersMiddleware; the login
    limiter would otherwise take each client's word for its address). The first time it arrives from a peer that is
    not trusted, a warning says so: most likely a proxy missing from --forwarded-allow-ips, behind which everyone
    shares one address and so one login budget."""

    def __init__(self, app, trusted: str | None = None):
        self.app = ProxyHeadersMiddleware(app, trusted_hosts=trusted) if trusted else app
        self.trusted = self.app.trusted_hosts if trusted else ()
        self.warned = False

    async def __call__(self, scope, receive, send):
        if not self.warned and scope["type"] in ("http", "websocket"):
            peer = scope["client"][0] if scope.get("client") else None
            if peer not in self.trusted and any(name == b"x-forwarded-for" for name, _ in scope["headers"]):
                self.warned = True
                log.warning(
                    f"X-Forwarded-For came from {peer}, which --forwarded-allow-ips does not name, so it is ignored: "
                    f"everyone behind {peer} shares one login budget (20 failed logins, then everyone waits). If "
                    f"{peer} is your reverse proxy, serve with --forwarded-allow-ips {peer}"
                )
        await self.app(scope, receive, send)


def create_app(
    db_url: str,
    *,
    secret_key: str | None = None,
    secure_cookies: bool = False,
    max_body_bytes: int = MAX_BODY_BYTES,
    forwarded_allow_ips: str | None = None,
    chat_per_minute: int = CHAT_PER_MINUTE,
) -> FastAPI:
    """The app on the database at `db_url` (migrated first). Cookies are signed with the database's own key unless
    `secret_key` is given; either way a session is valid only in the database that issued it. X-Forwarded-For is
    believed from the addresses in `forwarded_allow_ips` (comma-separated; a reverse proxy's) only. Each person
    gets `chat_per_minute` model answers a minute on the chat page and in the arena."""
    sessions = open_db(db_url)
    with sessions() as s:
        instance = service.instance(s)
        database_id, own_key = instance.database_id, instance.secret_key

    app = FastAPI(
        title="rlhfkit annotate",
        version="1",
        description="Human feedback collection for rlhfkit.",
        dependencies=[Depends(verify_csrf)],
        max_body_size=max_body_bytes,  # a 413 before a byte is parsed (by Content-Length, or counted while read)
    )
    app.state.sessions = sessions
    app.state.database_id = database_id
    app.state.templates = Jinja2Templates(directory=str(HERE / "templates"))  # autoescape on for .html
    app.state.login_by_name = LoginLimiter()  # per (address, name)
    app.state.login_by_address = LoginLimiter(free=20)  # per address, over all names: password spraying
    app.state.chat_rate = RateLimiter(limit=chat_per_minute, window=60.0)  # per person
    app.state.chat_slots = StreamSlots(per_key=CHAT_STREAMS)
    app.state.upstream_bounds = Bounds()
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    for module in (auth, api, pages, admin):
        app.include_router(module.router)

    @app.get("/healthz", tags=["public"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'"
        )
        if not request.url.path.startswith("/static/"):  # pages and answers carry people's data and work
            response.headers["Cache-Control"] = "no-store"
        return response

    # added late = outer, so everything inside sees the session
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret_key or own_key,
        session_cookie="rlhfkit_session",
        same_site="lax",
        https_only=secure_cookies,
        max_age=int(service.SESSION_LIFETIME.total_seconds()),
    )
    app.add_middleware(ForwardedFor, trusted=forwarded_allow_ips)  # outermost: sees the peer's own address

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(DataError)
    async def unstorable_input(request: Request, exc: DataError):
        # a value the database refuses, e.g. a NUL character in PostgreSQL text: the input's fault, not the server's
        # (the request's session is rolled back when it closes)
        return JSONResponse({"detail": "the input holds a value the database cannot store (e.g. NUL)"}, 422)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        # FastAPI's own answer echoes each bad input back: a lone surrogate cannot be encoded (a 500), and a 4 MB
        # field would be sent back whole
        errors = [{k: v for k, v in e.items() if k != "input"} for e in exc.errors()]
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        wants_html = not request.url.path.startswith("/api/") and "text/html" in request.headers.get("accept", "")
        if exc.status_code == 401 and wants_html:
            return RedirectResponse("/login", status_code=303)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    return app
