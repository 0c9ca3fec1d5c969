"""Property-based calls to every operation in /openapi.json (schemathesis), as a logged-in admin: no server errors,
and every operation reached with real ids (not only 404s), so the bodies of items, next, submit and skip are fuzzed
too, and the chat page's and arena's (against a fake model server)."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

schemathesis = pytest.importorskip("schemathesis")

from tests.app.conftest import login  # noqa: E402


@pytest.mark.slow
def test_openapi_operations_give_no_server_errors(app, admin, make_user, fake):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from rlhfkit.annotate.upstream import Bounds
    from tests.app.fake_openai import KEY

    pid = admin.post("/api/v1/projects", json={"name": "fuzz", "overlap": 2}).json()["id"]
    records = [{"prompt": f"q{i}", "responses": ["a", "b", "c"]} for i in range(20)]
    admin.post(f"/api/v1/projects/{pid}/items", json={"records": records})
    for model in ("policy", "baseline"):  # the chat page's and the arena's models: the fake server
        admin.post(f"/api/v1/projects/{pid}/models", json={"base_url": fake.url, "model": model, "api_key": KEY})
    app.state.upstream_bounds = Bounds(connect_seconds=2, chunk_seconds=5, total_seconds=10)  # a fuzzed endpoint
    victim = make_user("victim")
    make_user("fuzzer", "admin")
    client = login(app, "fuzzer")
    chat = client.post(f"/api/v1/projects/{pid}/chat", json={"message": "q"}).text
    arena = client.post(f"/api/v1/projects/{pid}/arena", json={"message": "q"}).text
    real_ids = {
        "project_id": pid,
        "assignment_id": client.post(f"/api/v1/projects/{pid}/next").json()["assignment_id"],
        "user_id": victim.id,
        "model_id": admin.get(f"/api/v1/projects/{pid}/models").json()[1]["id"],
        "turn_id": json.loads(chat.strip().rsplit("data: ", 1)[1])["turn_id"],
        "battle_id": json.loads(arena.strip().rsplit("data: ", 1)[1])["battle_id"],
    }
    headers = {
        "X-CSRF-Token": client.headers["X-CSRF-Token"],
        "Cookie": "; ".join(f"{k}={v}" for k, v in client.cookies.items()),
    }
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures, calls = [], 0
    answers: dict[str, set[int]] = defaultdict(set)
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in ("/api/v1/login", "/api/v1/logout"):
            continue  # they would replace or end the session the other calls use

        @given(case=operation.as_strategy(), real=st.booleans())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def call(case, real):
            nonlocal calls
            if real and case.path_parameters:  # half the cases on ids that exist
                case.path_parameters = {k: real_ids.get(k, v) for k, v in case.path_parameters.items()}
            response = case.call(headers=headers)
            calls += 1
            answers[f"{case.method} {case.path}"].add(response.status_code)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}")

        call()
    assert calls > 200 and failures == []
    only_404 = [op for op, codes in answers.items() if codes <= {404}]
    assert only_404 == [] and len(answers) >= 24, answers
