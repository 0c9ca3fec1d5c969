"""Logging in and out, for the API and the login form alike (the same limits, the same limiter)."""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from rlhfkit.annotate import service
from rlhfkit.annotate.deps import DB, CurrentUser, FormFields, csrf_token, end_session, parse, start_session
from rlhfkit.annotate.schemas import LoginBody
from rlhfkit.annotate.service import ServiceError
from rlhfkit.annotate.store import User

router = APIRouter()


async def attempt_login(request: Request, s: Session, body: LoginBody) -> User:
    """Check the password unless this address is backing off, for this name or for all names (password spraying).
    The address is the peer's, or the proxy's X-Forwarded-For only where `--forwarded-allow-ips` trusts it.

    The attempt is counted (reserved) before the password is checked, so a burst of concurrent logins gets no more
    checks than the limits allow; the right password resets the name's count and gives the address its attempt back."""
    by_name, by_address = request.app.state.login_by_name, request.app.state.login_by_address
    address = request.client.host if request.client else "?"
    keys = ((by_name, (address, service.name_key(body.name))), (by_address, address))
    reserved: list = []
    try:
        for limiter, key in keys:
            wait = limiter.reserve(key)
            if wait > 0:
                seconds = math.ceil(wait)
                raise HTTPException(
                    429, f"too many failed logins; try again in {seconds} s", headers={"Retry-After": str(seconds)}
                )
            reserved.append((limiter, key))
        try:
            user = await service.authenticate(s, body.name, body.password)
        except ServiceError as e:  # too many logins waiting for a hashing slot
            raise HTTPException(e.status, str(e), headers=e.headers) from None
    except HTTPException:  # refused before the password was checked: nothing to count
        for limiter, key in reserved:
            limiter.release(key)
        raise
    if user is None:
        raise HTTPException(401, "wrong name or password")
    by_name.succeed(keys[0][1])
    by_address.release(keys[1][1])
    return user


@router.get("/api/v1/csrf", tags=["auth"])
def api_csrf(request: Request) -> dict[str, str]:
    """A CSRF token for this session (send it as X-CSRF-Token on every POST, login included)."""
    return {"csrf_token": csrf_token(request)}


# The login routes are async: waiting for a hashing slot holds no worker thread; database work goes to one.


@router.post("/api/v1/login", tags=["auth"])
async def api_login(body: LoginBody, request: Request, s: DB) -> dict[str, Any]:
    user = await attempt_login(request, s, body)
    await run_in_threadpool(start_session, request, s, user)
    return {"name": user.name, "role": user.role, "csrf_token": request.session["csrf"]}


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def login_page(request: Request):
    templates = request.app.state.templates
    return templates.TemplateResponse(request, "login.html", {"csrf": csrf_token(request), "error": None})


@router.post("/login", response_class=HTMLResponse, include_in_schema=False)
async def login_form(request: Request, form: FormFields, s: DB):
    templates = request.app.state.templates
    try:
        body = parse(LoginBody, {"name": form.get("name") or "", "password": form.get("password") or ""})
        user = await attempt_login(request, s, body)
    except RequestValidationError:
        error, status, headers = "A name has at most 100 characters and a password at most 1000.", 422, None
    except HTTPException as e:
        error, status = ("Wrong name or password." if e.status_code == 401 else e.detail), e.status_code
        headers = e.headers
    else:
        await run_in_threadpool(start_session, request, s, user)
        return RedirectResponse("/", status_code=303)
    return templates.TemplateResponse(
        request, "login.html", {"csrf": csrf_token(request), "error": error}, status_code=status, headers=headers
    )


@router.post("/api/v1/logout", tags=["auth"])
def api_logout(request: Request, user: CurrentUser, s: DB) -> dict[str, str]:
    end_session(request, s)
    return {"status": "logged out"}


@router.post("/logout", include_in_schema=False)
def logout_form(request: Request, user: CurrentUser, s: DB):
    end_session(request, s)
    return RedirectResponse("/login", status_code=303)


@router.get("/api/v1/me", tags=["people"])
def me(user: CurrentUser) -> dict[str, Any]:
    return {"name": user.name, "role": user.role}
