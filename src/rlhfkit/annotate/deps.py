"""What every route depends on: a database session, the person asking (from a server-side session), the admin
role, CSRF, forms parsed within limits, and pydantic validation shared by forms and the API."""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated, TypeVar

from fastapi import Depends, HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from rlhfkit.annotate import service
from rlhfkit.annotate.store import User

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
Id = Annotated[int, Path(ge=1, le=2**31 - 1)]  # database ids: anything else is a 422, not a crash
M = TypeVar("M", bound=BaseModel)


def db(request: Request):
    with request.app.state.sessions() as s:
        yield s


DB = Annotated[Session, Depends(db)]


async def read_form(request: Request) -> FormData:
    """The form, parsed once per request (then cached) and never with files: no page sends one."""
    return await request.form(max_files=0, max_fields=200, max_part_size=64 * 1024)


FormFields = Annotated[FormData, Depends(read_form)]


def parse(model: type[M], data: dict) -> M:
    """Form fields through the API's model: the same limits, and a 422 like the API's."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_url=False, include_context=False)) from None


async def verify_csrf(request: Request) -> None:
    """Every state-changing request carries the session's CSRF token (header, or form field for pages)."""
    if request.method in SAFE_METHODS:
        return
    expected = request.session.get("csrf")
    given = request.headers.get("x-csrf-token")
    if given is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        given = (await read_form(request)).get("csrf_token")
    if not expected or not isinstance(given, str) or not hmac.compare_digest(expected, given):
        raise HTTPException(403, "missing or wrong CSRF token")


def csrf_token(request: Request) -> str:
    if "csrf" not in request.session:
        request.session["csrf"] = secrets.token_urlsafe(32)
    return request.session["csrf"]


def start_session(request: Request, s: Session, user: User) -> None:
    """A new session on login (no fixation): a new server-side session, a new CSRF token, and the database named.
    The browser's previous session ends, so a copy of its old cookie opens nothing."""
    end_session(request, s)
    request.session["sid"] = service.start_session(s, user)
    request.session["db"] = request.app.state.database_id
    request.session["csrf"] = secrets.token_urlsafe(32)


def end_session(request: Request, s: Session) -> None:
    if isinstance(token := request.session.get("sid"), str):
        service.end_session(s, token)
    request.session.clear()


def current_user(request: Request, s: DB) -> User:
    """The person of a live session of this database; a cookie of another instance, a revoked session or a disabled
    or deleted person is a 401."""
    token = request.session.get("sid")
    user = None
    if isinstance(token, str) and request.session.get("db") == request.app.state.database_id:
        user = service.session_user(s, token)
    if user is None:
        raise HTTPException(401, "log in first")
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def admin_user(user: CurrentUser) -> User:
    if user.role != "admin":
        raise HTTPException(403, "admins only")
    return user


AdminUser = Annotated[User, Depends(admin_user)]
