"""The annotation app under test: a temp SQLite file, and the same tests against PostgreSQL when
RLHFKIT_TEST_DATABASE_URL is set (a fresh schema per test run)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rlhfkit.annotate import service
from rlhfkit.annotate.app import create_app
from tests.conftest import serving  # noqa: F401 (the app tests import it from here)

PASSWORD = "correct horse battery"
BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("RLHFKIT_TEST_DATABASE_URL") else [])


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield str(tmp_path / "annotate.db")
        return
    import sqlalchemy

    base = os.environ["RLHFKIT_TEST_DATABASE_URL"]
    name = f"rlhfkit_test_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(
        base.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield base.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as c:
        c.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture
def app(db_url):
    return create_app(db_url, secret_key="test-secret-" + uuid.uuid4().hex)


@pytest.fixture
def make_user(app, db_url):
    sessions = app.state.sessions

    def make(name: str, role: str = "annotator"):
        with sessions() as s:
            return service.create_user(s, name, PASSWORD, role)

    return make


def login(app, name: str, **client_options) -> TestClient:
    """A client logged in as `name`, sending its CSRF token on every request. `client_options` go to TestClient
    (e.g. raise_server_exceptions=False to see a 500 as a response, client=(address, port))."""
    client = TestClient(app, **client_options)
    token = client.get("/api/v1/csrf").json()["csrf_token"]
    res = client.post("/api/v1/login", json={"name": name, "password": PASSWORD}, headers={"X-CSRF-Token": token})
    assert res.status_code == 200, res.text
    client.headers["X-CSRF-Token"] = res.json()["csrf_token"]
    return client


@pytest.fixture
def admin(app, make_user):
    make_user("ada", "admin")
    return login(app, "ada")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RLHF = str(Path(sys.executable).with_name("rlhf"))


@contextmanager
def served(db: str, *options: str):
    """`rlhf annotate serve` in its own process, as people run it; yields its base URL."""
    import httpx

    port = free_port()
    proc = subprocess.Popen(
        [RLHF, "annotate", "serve", "--db", db, "--port", str(port), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the server exited with {proc.returncode}: {proc.stdout.read()}")
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start in 60 s"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def fake_server():
    """A fake OpenAI-compatible chat server (tests/app/fake_openai.py) for this module's tests; `.url` is its base
    URL and it wants fake_openai.KEY."""
    from tests.app.fake_openai import KEY, FakeOpenAI

    server = FakeOpenAI(api_key=KEY)
    with server.running() as url:
        server.url = url
        yield server


@pytest.fixture
def fake(fake_server):
    """The module's fake chat server with its default replies and no requests yet."""
    fake_server.replies.clear()
    fake_server.requests.clear()
    fake_server.gate.clear()
    return fake_server
