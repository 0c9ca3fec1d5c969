"""Property-based calls to every operation in /openapi.json (schemathesis), as a logged-in admin: no server errors."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from tests.app.conftest import login  # noqa: E402


@pytest.mark.slow
def test_openapi_operations_give_no_server_errors(app, admin, make_user):
    from hypothesis import HealthCheck, given, settings

    pid = admin.post("/api/v1/projects", json={"name": "fuzz", "overlap": 2}).json()["id"]
    admin.post(f"/api/v1/projects/{pid}/items", json={"records": [{"prompt": "q", "responses": ["a", "b", "c"]}]})
    make_user("fuzzer", "admin")
    client = login(app, "fuzzer")
    headers = {
        "X-CSRF-Token": client.headers["X-CSRF-Token"],
        "Cookie": "; ".join(f"{k}={v}" for k, v in client.cookies.items()),
    }
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures, calls = [], 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in ("/api/v1/login", "/api/v1/logout"):
            continue  # they would replace or end the session the other calls use

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def call(case):
            nonlocal calls
            response = case.call(headers=headers)
            calls += 1
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}")

        call()
    assert calls > 200 and failures == []
