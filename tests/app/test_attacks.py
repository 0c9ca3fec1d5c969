"""Issue 12: each attack on the annotation app, as a hostile annotator, an anonymous client or a careless admin
would try it. Every test here failed before its fix (see the commit that fixed it)."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from rlhfkit.annotate import service
from rlhfkit.annotate.app import create_app
from rlhfkit.annotate.store import Assignment, User, open_db, utcnow
from rlhfkit.data.io import read_records
from tests.app.conftest import PASSWORD, RLHF, free_port, login, served
from tests.app.test_api import project_with


def anonymous(app, **client_options) -> TestClient:
    client = TestClient(app, **client_options)
    client.headers["X-CSRF-Token"] = client.get("/api/v1/csrf").json()["csrf_token"]
    return client


def replay(app, cookies, csrf: str) -> TestClient:
    """Another client presenting cookies someone else was given (a copied or stolen cookie)."""
    client = TestClient(app)
    for name, value in cookies.items():
        client.cookies.set(name, value)
    client.headers["X-CSRF-Token"] = csrf
    return client


# --- 1. a cookie from one instance is not accepted by another ---


def _two_instances(tmp_path, **key):
    a = create_app(str(tmp_path / "a.db"), **key)
    b = create_app(str(tmp_path / "b.db"), **key)
    for app, people in ((a, [("ada", "admin"), ("bob", "annotator")]), (b, [("cy", "annotator"), ("eve", "admin")])):
        with app.state.sessions() as s:
            for name, role in people:
                service.create_user(s, name, PASSWORD, role)
    return a, b


def test_a_cookie_signed_with_a_shared_key_names_its_database(tmp_path):
    """Two instances that share a signing key (one key file, one environment): bob (id 2, annotator) on A must not
    be eve (id 2, admin) on B."""
    a, b = _two_instances(tmp_path, secret_key="one key for both")
    bob = login(a, "bob")
    stolen = replay(b, bob.cookies, bob.headers["X-CSRF-Token"])
    assert stolen.get("/api/v1/me").status_code == 401
    res = stolen.post("/api/v1/users", json={"name": "mallory", "password": "a long password", "role": "admin"})
    assert res.status_code == 401


def test_each_database_signs_its_own_cookies(tmp_path):
    a, b = _two_instances(tmp_path)  # no key given: each database keeps its own
    bob = login(a, "bob")
    stolen = replay(b, bob.cookies, bob.headers["X-CSRF-Token"])
    assert stolen.get("/api/v1/me").status_code == 401
    assert stolen.post("/api/v1/users", json={"name": "mallory", "password": "a long password"}).status_code == 403


# --- 2. sessions can be revoked ---


@pytest.mark.parametrize("logout", ["/api/v1/logout", "/logout"])
def test_logout_revokes_the_session_not_just_the_browsers_copy(app, admin, make_user, logout):
    pid = project_with(admin, [{"prompt": "q", "responses": ["a", "b"]}])
    make_user("bob")
    bob = login(app, "bob")
    cookies, csrf = dict(bob.cookies), bob.headers["X-CSRF-Token"]
    assert bob.post(logout, follow_redirects=False).status_code in (200, 303)
    again = replay(app, cookies, csrf)
    assert again.get("/api/v1/me").status_code == 401
    assert again.post(f"/api/v1/projects/{pid}/next").status_code == 401


def test_an_admin_can_disable_a_person_which_ends_their_sessions(app, admin, make_user):
    bob_user = make_user("bob")
    bob = login(app, "bob")
    cy_user = make_user("cy")
    cy = login(app, "cy")
    assert cy.post(f"/api/v1/users/{bob_user.id}/disable").status_code == 403  # annotators cannot
    res = admin.post(f"/api/v1/users/{bob_user.id}/disable")
    assert res.status_code == 200, res.text
    assert bob.get("/api/v1/me").status_code == 401
    fresh = anonymous(app)
    assert fresh.post("/api/v1/login", json={"name": "bob", "password": PASSWORD}).status_code == 401
    assert cy.get("/api/v1/me").status_code == 200  # others keep theirs
    with app.state.sessions() as s:
        ada_id = s.scalar(select(User.id).where(User.name == "ada"))
    assert admin.post(f"/api/v1/users/{ada_id}/disable").status_code == 400  # not yourself: the last admin stays
    # the admin page does the same, by form
    page = admin.post(f"/admin/users/{cy_user.id}/disable", follow_redirects=False)
    assert page.status_code == 303
    assert cy.get("/api/v1/me").status_code == 401


def test_disable_user_command_ends_sessions(app, db_url, make_user):
    from rlhfkit.cli import app as cli

    make_user("bob")
    bob = login(app, "bob")
    res = CliRunner().invoke(cli, ["annotate", "disable-user", "bob", "--db", db_url])
    assert res.exit_code == 0, res.output
    assert "disabled bob" in res.output
    assert bob.get("/api/v1/me").status_code == 401
    res = CliRunner().invoke(cli, ["annotate", "disable-user", "nobody", "--db", db_url])
    assert res.exit_code == 2 and "no user" in res.output
    res = CliRunner().invoke(cli, ["annotate", "enable-user", "bob", "--db", db_url])
    assert res.exit_code == 0
    assert login(app, "bob").get("/api/v1/me").status_code == 200


@pytest.mark.parametrize("how", ["api", "admin page", "command"])
def test_disabling_a_person_returns_their_leased_items_to_the_queue(app, admin, make_user, db_url, how):
    """README: a disabled person's leased items go back to the queue at once (not when the lease runs out); other
    people's leases stay."""
    from rlhfkit.cli import app as cli

    pid = project_with(admin, [{"prompt": f"q{i}", "responses": ["a", "b"]} for i in range(2)], overlap=1)
    bob_user = make_user("bob")
    for name in ("cy", "dee", "eve"):
        make_user(name)
    bob, cy, dee, eve = (login(app, n) for n in ("bob", "cy", "dee", "eve"))
    held = bob.post(f"/api/v1/projects/{pid}/next").json()
    kept = dee.post(f"/api/v1/projects/{pid}/next").json()
    assert held["assignment_id"] and kept["assignment_id"] and held["prompt"] != kept["prompt"]
    assert cy.post(f"/api/v1/projects/{pid}/next").json()["assignment_id"] is None  # both items leased
    if how == "api":
        assert admin.post(f"/api/v1/users/{bob_user.id}/disable").status_code == 200
    elif how == "admin page":
        assert admin.post(f"/admin/users/{bob_user.id}/disable", follow_redirects=False).status_code == 303
    else:
        res = CliRunner().invoke(cli, ["annotate", "disable-user", "bob", "--db", db_url])
        assert res.exit_code == 0, res.output
    freed = cy.post(f"/api/v1/projects/{pid}/next").json()
    assert freed["assignment_id"] and freed["prompt"] == held["prompt"]  # bob's item, long before its lease ran out
    assert eve.post(f"/api/v1/projects/{pid}/next").json()["assignment_id"] is None  # dee's lease still holds
    assert cy.post(f"/api/v1/assignments/{freed['assignment_id']}/submit", json={"label": "a"}).status_code == 201
    assert dee.post(f"/api/v1/assignments/{kept['assignment_id']}/submit", json={"label": "b"}).status_code == 201
    assert len(admin.get(f"/api/v1/projects/{pid}/export?format=comparisons").json()) == 2


def test_a_deleted_persons_cookie_does_not_become_the_next_persons(app, admin, make_user):
    bob_user = make_user("bob")
    bob = login(app, "bob")
    with app.state.sessions() as s:  # a careless admin removes bob by hand
        s.execute(text("DELETE FROM users WHERE id = :id"), {"id": bob_user.id})
        s.commit()
    eve = make_user("eve", "admin")
    assert eve.id != bob_user.id  # ids are never reused
    assert bob.get("/api/v1/me").status_code == 401


@pytest.mark.parametrize("secure", [True, False])
def test_secure_cookies_marks_the_session_cookie_secure(tmp_path, monkeypatch, secure):
    """`rlhf annotate serve --secure-cookies` (behind TLS): browsers send the session cookie over HTTPS only;
    without the flag the cookie has no Secure attribute (plain HTTP on localhost keeps working)."""
    from http.cookies import SimpleCookie

    import uvicorn

    from rlhfkit.cli import app as cli

    db = str(tmp_path / "team.db")
    with open_db(db)() as s:
        service.create_user(s, "bob", PASSWORD, "annotator")
    served_apps = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served_apps.append(app))
    res = CliRunner().invoke(cli, ["annotate", "serve", "--db", db, *(["--secure-cookies"] if secure else [])])
    assert res.exit_code == 0, res.output
    client = TestClient(served_apps[0], base_url="https://testserver")
    token = client.get("/api/v1/csrf").json()["csrf_token"]
    res = client.post("/api/v1/login", json={"name": "bob", "password": PASSWORD}, headers={"X-CSRF-Token": token})
    assert res.status_code == 200, res.text
    cookies = [SimpleCookie(h) for h in res.headers.get_list("set-cookie")]
    session = [c["rlhfkit_session"] for c in cookies if "rlhfkit_session" in c]
    assert len(session) == 1 and session[0]["httponly"] and session[0]["samesite"].lower() == "lax"
    assert bool(session[0]["secure"]) is secure


# --- 3. the login limiter ---


def test_rotating_x_forwarded_for_does_not_escape_the_login_limiter(tmp_path):
    """Password spraying (a new name each time) from one address, claiming a new address in each request: the
    header is not trusted without --forwarded-allow-ips, so the address's own budget runs out."""
    db = str(tmp_path / "team.db")
    with open_db(db)() as s:
        service.create_user(s, "bob", PASSWORD, "annotator")
    with served(db) as url, httpx.Client(base_url=url) as client:
        token = client.get("/api/v1/csrf").json()["csrf_token"]
        codes = [
            client.post(
                "/api/v1/login",
                json={"name": f"user{i}", "password": "wrong password"},
                headers={"X-CSRF-Token": token, "X-Forwarded-For": f"203.0.113.{i}"},
            ).status_code
            for i in range(24)
        ]
    assert codes[:20] == [401] * 20 and set(codes[20:]) == {429}


def test_behind_a_trusted_proxy_each_client_has_its_own_budget(tmp_path):
    db = str(tmp_path / "team.db")
    with open_db(db)() as s:
        service.create_user(s, "bob", PASSWORD, "annotator")
    with served(db, "--forwarded-allow-ips", "127.0.0.1") as url, httpx.Client(base_url=url) as client:
        token = client.get("/api/v1/csrf").json()["csrf_token"]

        def attempt(address: str, password: str) -> int:
            headers = {"X-CSRF-Token": token, "X-Forwarded-For": address}
            return client.post("/api/v1/login", json={"name": "bob", "password": password}, headers=headers).status_code

        assert [attempt("203.0.113.9", "wrong password") for _ in range(6)] == [401] * 5 + [429]
        assert attempt("198.51.100.4", PASSWORD) == 200


def test_failed_logins_from_one_address_do_not_lock_the_account_for_others(app, make_user):
    make_user("ada", "admin")
    attacker = anonymous(app, client=("198.51.100.7", 4000))
    codes = [attacker.post("/api/v1/login", json={"name": "ada", "password": "guess"}).status_code for _ in range(8)]
    assert codes[-1] == 429
    assert login(app, "ada", client=("192.0.2.10", 5000)).get("/api/v1/me").status_code == 200


def test_the_backoff_grows_ends_and_forgets():
    from rlhfkit.annotate.limits import LoginLimiter

    now = [0.0]
    limiter = LoginLimiter(clock=lambda: now[0], max_keys=100)
    key = ("192.0.2.1", "bob")
    for _ in range(5):
        assert limiter.wait(key) == 0
        assert limiter.reserve(key) == 0  # counted before the password is checked
    first = limiter.wait(key)
    assert first > 0 and limiter.reserve(key) == first  # refused, and not counted
    now[0] += first
    assert limiter.wait(key) == 0
    assert limiter.reserve(key) == 0
    assert limiter.wait(key) > first  # each further failure waits longer
    now[0] += 10 * 24 * 3600
    assert limiter.wait(key) == 0  # not forever
    for i in range(1000):  # memory is bounded whatever the number of names tried
        limiter.reserve(("192.0.2.1", f"name{i}"))
    assert len(limiter) <= 100
    limiter.reserve(key)
    limiter.succeed(key)
    assert limiter.wait(key) == 0


def test_password_hashing_runs_a_few_at_a_time(app, make_user, monkeypatch):
    make_user("bob")
    real, lock = service._hasher, threading.Lock()
    running = peak = 0

    class Counting:
        def verify(self, *args):
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
            try:
                time.sleep(0.2)
                return real.verify(*args)
            finally:
                with lock:
                    running -= 1

    monkeypatch.setattr(service, "_hasher", Counting())

    def attempt(i: int) -> int:
        client = anonymous(app, client=(f"192.0.2.{i}", 1000))
        return client.post("/api/v1/login", json={"name": "bob", "password": "wrong password"}).status_code

    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(attempt, range(12)))
    assert set(codes) == {401} and 1 <= peak <= 4


def test_the_login_form_has_the_apis_limits(app, make_user, monkeypatch):
    make_user("bob")
    hashed = []
    real = service._hasher

    class Counting:
        def verify(self, *args):
            hashed.append(1)
            return real.verify(*args)

    monkeypatch.setattr(service, "_hasher", Counting())
    client = TestClient(app)
    token = client.get("/api/v1/csrf").json()["csrf_token"]
    res = client.post("/login", data={"csrf_token": token, "name": "x" * 900_000, "password": "p"})
    assert res.status_code in (400, 422) and hashed == []  # the form parser's field cap, or the API's model
    res = client.post("/login", data={"csrf_token": token, "name": "bob", "password": "p" * 5000})
    assert res.status_code == 422 and hashed == []


def test_the_login_form_backs_off_like_the_api_with_the_same_limiter(app, make_user, monkeypatch):
    """5 wrong passwords for one name from one address, by form and API together, then 429 on both (the right
    password too); another name from that address still gets its own tries."""
    make_user("bob")
    now = [time.monotonic()]  # frozen: a slow hash on a loaded machine must not outlast the 1 s backoff
    for limiter in (app.state.login_by_name, app.state.login_by_address):
        monkeypatch.setattr(limiter, "clock", lambda: now[0])
    browser = TestClient(app, client=("198.51.100.20", 4000))
    token = re.search(r'name="csrf_token" value="([^"]+)"', browser.get("/login").text).group(1)

    def form(name: str, password: str):
        data = {"csrf_token": token, "name": name, "password": password}
        return browser.post("/login", data=data, follow_redirects=False)

    def api(name: str, password: str) -> int:
        body = {"name": name, "password": password}
        return browser.post("/api/v1/login", json=body, headers={"X-CSRF-Token": token}).status_code

    wrong = [form("bob", "wrong password") for _ in range(3)]
    assert [r.status_code for r in wrong] == [401] * 3 and "Wrong name or password." in wrong[0].text
    assert [api("bob", "wrong password") for _ in range(2)] == [401] * 2  # the API's failures count for the form
    refused = form("bob", "wrong password")
    assert refused.status_code == 429 and "too many failed logins" in refused.text
    assert refused.headers["retry-after"] == "1" and refused.headers["content-type"].startswith("text/html")
    assert form("bob", PASSWORD).status_code == 429  # even the right password waits now
    assert api("bob", PASSWORD) == 429
    assert form("cy", "wrong password").status_code == 401  # per name: others from this address still try
    now[0] += 1.5  # the backoff is over: the right password gets in
    res = form("bob", PASSWORD)
    assert res.status_code == 303 and res.headers["location"] == "/"


# --- 4. expired leases ---


def test_a_vote_after_the_lease_expired_and_the_item_moved_on_is_refused(app, admin, make_user):
    pid = project_with(admin, [{"prompt": "q", "responses": ["a", "b"]}], overlap=1)
    for name in ("bob", "cy"):
        make_user(name)
    bob, cy = login(app, "bob"), login(app, "cy")
    late = bob.post(f"/api/v1/projects/{pid}/next").json()["assignment_id"]
    with app.state.sessions() as s:
        s.get(Assignment, late).expires_at = utcnow()
        s.commit()
    taken = cy.post(f"/api/v1/projects/{pid}/next").json()["assignment_id"]
    assert taken and cy.post(f"/api/v1/assignments/{taken}/submit", json={"label": "a"}).status_code == 201
    res = bob.post(f"/api/v1/assignments/{late}/submit", json={"label": "b"})
    assert res.status_code == 409 and "expired" in res.json()["detail"]
    page = bob.post(f"/assignments/{late}", data={"label": "b", "action": "submit"})
    assert page.status_code == 409 and "expired" in page.text and page.headers["content-type"].startswith("text/html")
    assert len(admin.get(f"/api/v1/projects/{pid}/export?format=comparisons").json()) == 1


# --- 5. queue hoarding ---


def test_concurrent_next_calls_lease_one_item_per_person(app, admin, make_user, monkeypatch):
    pid = project_with(admin, [{"prompt": f"q{i}", "responses": ["a", "b"]} for i in range(30)])

    class SlowShuffle(random.Random):  # widens the window between choosing an item and committing its lease
        def shuffle(self, x):
            time.sleep(0.05)
            super().shuffle(x)

    monkeypatch.setattr(service, "random", SimpleNamespace(Random=SlowShuffle))
    make_user("bob")
    bob = login(app, "bob")
    tabs = [replay(app, bob.cookies, bob.headers["X-CSRF-Token"]) for _ in range(12)]
    with ThreadPoolExecutor(12) as pool:
        leased = set(pool.map(lambda c: c.post(f"/api/v1/projects/{pid}/next").json()["assignment_id"], tabs))
    assert len(leased) == 1
    with app.state.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Assignment)) == 1


def test_a_second_server_on_the_same_sqlite_file_refuses_to_start(tmp_path):
    db = str(tmp_path / "team.db")
    with served(db):
        second = subprocess.run(
            [RLHF, "annotate", "serve", "--db", db, "--port", str(free_port())],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert second.returncode == 2 and "another rlhf annotate serve" in second.stderr


# --- 6. and 7. bodies: a size limit before parsing, and no server errors from odd input ---


def test_big_bodies_are_refused_before_they_are_read(app):
    anon = TestClient(app)
    big = b"x" * (16 * 2**20)
    res = anon.post("/api/v1/login", content=big, headers={"content-type": "application/json"})
    assert res.status_code == 413
    chunks = (b"x" * 2**20 for _ in range(16))  # no Content-Length: counted while read
    res = anon.post("/login", content=chunks, headers={"content-type": "application/x-www-form-urlencoded"})
    assert res.status_code == 413


def test_a_lone_surrogate_is_a_client_error(app, admin, make_user):
    pid = project_with(admin, [{"prompt": "q", "responses": ["a", "b"]}])
    ada = login(app, "ada", raise_server_exceptions=False)
    raw = {"content-type": "application/json"}
    for path, body in [
        ("/api/v1/users", '{"name": "x\\ud800", "password": "a long password"}'),
        ("/api/v1/users", '{"name": "mallory", "password": "\\ud800 long password"}'),
        ("/api/v1/projects", '{"name": "p\\udfff"}'),
        (f"/api/v1/projects/{pid}/items", '{"records": [{"prompt": "\\ud800", "responses": ["a", "b"]}]}'),
        ("/api/v1/login", '{"name": "ada", "password": "\\ud800"}'),
    ]:
        res = ada.post(path, content=body, headers=raw)
        assert res.status_code == 422, (path, res.status_code, res.text)
    make_user("bob")
    bob = login(app, "bob", raise_server_exceptions=False)
    aid = bob.post(f"/api/v1/projects/{pid}/next").json()["assignment_id"]
    res = bob.post(f"/api/v1/assignments/{aid}/submit", content='{"label": "a", "reason": "\\ud800"}', headers=raw)
    assert res.status_code == 422


def test_a_file_in_a_form_field_is_a_client_error(app, admin, make_user):
    pid = project_with(admin, [{"prompt": "q", "responses": ["x", "y", "z"]}])
    make_user("bob")
    bob = login(app, "bob", raise_server_exceptions=False)
    aid = bob.post(f"/api/v1/projects/{pid}/next").json()["assignment_id"]
    res = bob.post(f"/assignments/{aid}", data={"action": "submit"}, files={"rank_0": ("r.txt", b"1")})
    assert 400 <= res.status_code < 500, res.status_code
    token = bob.headers.pop("X-CSRF-Token")  # the token in the form instead, as pages send it
    res = bob.post(f"/assignments/{aid}", data={"csrf_token": token}, files={"rank_1": ("r.txt", b"1")})
    assert 400 <= res.status_code < 500, res.status_code


# --- 8. the form routes have the API's limits ---


def test_form_routes_apply_the_api_limits(app, admin, make_user):
    pid = project_with(admin, [{"prompt": "q", "responses": ["a", "b"]}])
    make_user("bob")
    bob = login(app, "bob")
    aid = bob.post(f"/api/v1/projects/{pid}/next").json()["assignment_id"]
    res = bob.post(f"/assignments/{aid}", data={"action": "submit", "label": "a", "flags": ["unsafe"] * 900})
    assert 400 <= res.status_code < 500
    res = bob.post(f"/api/v1/assignments/{aid}/submit", json={"label": "a", "flags": ["unsafe", "unsafe"]})
    assert res.status_code in (400, 422)  # each flag once
    assert admin.get(f"/api/v1/projects/{pid}/export?format=comparisons").json() == []
    res = admin.post("/admin/projects", data={"name": "p" * 10_000}, follow_redirects=False)
    assert 400 <= res.status_code < 500
    res = admin.post("/admin/users", data={"name": "n" * 5000, "password": "a long password"}, follow_redirects=False)
    assert 400 <= res.status_code < 500
    assert [p["name"] for p in admin.get("/api/v1/projects").json()] == ["p"]


# --- 9. flags and message lists survive export ---


def test_flags_are_exported_and_flagged_rows_can_be_left_out(app, admin, make_user, db_url, tmp_path):
    pid = project_with(admin, [{"prompt": f"q{i}", "responses": [f"a{i}", f"b{i}"]} for i in range(2)])
    make_user("bob")
    bob = login(app, "bob")
    flags = [["unsafe", "private_data"], []]
    for f in flags:
        aid = bob.post(f"/api/v1/projects/{pid}/next").json()["assignment_id"]
        assert bob.post(f"/api/v1/assignments/{aid}/submit", json={"label": "a", "flags": f}).status_code == 201
    rows = admin.get(f"/api/v1/projects/{pid}/export?format=comparisons").json()
    assert sorted(r["flags"] for r in rows) == [[], ["unsafe", "private_data"]]
    assert len(admin.get(f"/api/v1/projects/{pid}/export?format=pairs").json()) == 2
    clean = admin.get(f"/api/v1/projects/{pid}/export?format=pairs&exclude_flagged=true").json()
    assert len(clean) == 1 and clean[0]["flags"] == []
    from rlhfkit.cli import app as cli

    out = tmp_path / "clean.jsonl"
    args = ["annotate", "export", "--db", db_url, "--format", "comparisons", "--exclude-flagged", str(out)]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert [json.loads(line)["flags"] for line in out.read_text().splitlines()] == [[]]


def test_responses_given_as_messages_stay_messages(app, admin, make_user, tmp_path):
    responses = [
        [{"role": "assistant", "content": "Hi"}],
        [{"role": "assistant", "content": "Hello <b>there</b>"}, {"role": "user", "content": "and?"}],
    ]
    pid = project_with(admin, [{"prompt": "q", "responses": responses}])
    make_user("bob")
    bob = login(app, "bob")
    page = bob.post(f"/projects/{pid}/work")
    assert "Hello &lt;b&gt;there&lt;/b&gt;" in page.text and "{&#39;role&#39;" not in page.text
    task = bob.post(f"/api/v1/projects/{pid}/next").json()
    assert sorted(map(json.dumps, task["responses"])) == sorted(map(json.dumps, responses))
    assert bob.post(f"/api/v1/assignments/{task['assignment_id']}/submit", json={"label": "a"}).status_code == 201
    (row,) = admin.get(f"/api/v1/projects/{pid}/export?format=comparisons").json()
    assert [row["response_a"], row["response_b"]] == responses
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(row) + "\n")
    assert read_records(path).records[0].response_b == responses[1]


# --- 10. GET changes nothing; names; private files ---


def test_opening_the_work_page_leases_nothing(app, admin, make_user):
    pid = project_with(admin, [{"prompt": "q", "responses": ["a", "b"]}])
    make_user("bob")
    bob = login(app, "bob")
    assert bob.get(f"/projects/{pid}/work").status_code == 200  # e.g. an <img src> on another site
    with app.state.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Assignment)) == 0
    page = bob.post(f"/projects/{pid}/work")  # the Start button
    assert page.status_code == 200 and 'name="label"' in page.text
    with app.state.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Assignment)) == 1


def test_names_are_normalised_and_unsafe_characters_refused(app, admin):
    new = {"password": PASSWORD, "role": "annotator"}
    assert admin.post("/api/v1/users", json={"name": "bob", **new}).status_code == 201
    for look_alike in ("Bob", "BOB", "ｂｏｂ", " bob "):
        assert admin.post("/api/v1/users", json={"name": look_alike, **new}).status_code == 409, look_alike
    for bad in ("bob\u202e", "b\u0007ob", "\u2066x", "a\u200fb", "a\nb"):
        res = admin.post("/api/v1/users", json={"name": bad, **new})
        assert res.status_code == 400 and "character" in res.json()["detail"], bad
    assert admin.post("/api/v1/projects", json={"name": "Prefs"}).status_code == 201
    assert admin.post("/api/v1/projects", json={"name": "PREFS"}).status_code == 409
    assert admin.post("/api/v1/projects", json={"name": "x\u202eevil"}).status_code == 400
    login(admin.app, "BOB")  # a person logs in under any spelling of their name


def test_the_sqlite_file_is_private(tmp_path):
    db = tmp_path / "new.db"
    create_app(str(db))
    assert os.stat(db).st_mode & 0o777 == 0o600
    assert not (tmp_path / "new.secret").exists()  # the signing key is in the database, nowhere else


# --- 11. passwords ---


def test_weak_passwords_are_refused_with_the_rule(app, admin):
    for name, password in [("carol-smith", "carol-smith"), ("dan", "password123"), ("erin", "12345678")]:
        res = admin.post("/api/v1/users", json={"name": name, "password": password})
        assert res.status_code == 400, name
        assert "at least 8 characters, not your name and not a common password" in res.json()["detail"]
    assert admin.post("/api/v1/users", json={"name": "fay", "password": "Fay's own long phrase"}).status_code == 201
