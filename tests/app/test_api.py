"""The JSON API: who may do what, CSRF, escaping, the queue, and exports that rlhfkit reads back."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient

from rlhfkit.data.io import read_records
from tests.app.conftest import PASSWORD, login

XSS = ['<script>alert("x")</script>', '<img src=x onerror="alert(1)">']


def project_with(admin, records, *, overlap=1, name="p") -> int:
    pid = admin.post("/api/v1/projects", json={"name": name, "overlap": overlap}).json()["id"]
    res = admin.post(f"/api/v1/projects/{pid}/items", json={"records": records})
    assert res.status_code == 201, res.text
    return pid


def test_every_route_needs_a_session_and_the_right_role(app, admin, make_user):
    pid = project_with(admin, [{"prompt": "q", "responses": ["a", "b"]}])
    anon = TestClient(app)
    token = anon.get("/api/v1/csrf").json()["csrf_token"]
    anon.headers["X-CSRF-Token"] = token
    routes = [
        ("get", "/api/v1/me"),
        ("get", "/api/v1/projects"),
        ("post", "/api/v1/projects"),
        ("post", f"/api/v1/projects/{pid}/items"),
        ("get", f"/api/v1/projects/{pid}/progress"),
        ("get", f"/api/v1/projects/{pid}/stats"),
        ("get", f"/api/v1/projects/{pid}/export?format=pairs"),
        ("post", f"/api/v1/projects/{pid}/next"),
        ("post", "/api/v1/assignments/1/submit"),
        ("post", "/api/v1/assignments/1/skip"),
        ("post", "/api/v1/users"),
        ("post", "/api/v1/logout"),
    ]
    bodies = {
        "/api/v1/projects": {"name": "x"},
        f"/api/v1/projects/{pid}/items": {"records": []},
        "/api/v1/assignments/1/submit": {"label": "a"},
        "/api/v1/users": {"name": "x", "password": "12345678"},
    }
    for method, path in routes:
        res = getattr(anon, method)(path, **({"json": bodies[path]} if method == "post" and path in bodies else {}))
        assert res.status_code == 401, (method, path, res.status_code)
    # pages send people to the login form
    for page in ("/", "/admin", f"/projects/{pid}/work"):
        res = anon.get(page, headers={"Accept": "text/html"}, follow_redirects=False)
        assert res.status_code == 303 and res.headers["location"] == "/login"

    make_user("bob")
    bob = login(app, "bob")
    for method, path in [
        ("post", "/api/v1/projects"),
        ("post", f"/api/v1/projects/{pid}/items"),
        ("get", f"/api/v1/projects/{pid}/stats"),
        ("get", f"/api/v1/projects/{pid}/export?format=pairs"),
        ("post", "/api/v1/users"),
        ("get", "/admin"),
    ]:
        res = getattr(bob, method)(path, **({"json": bodies[path]} if method == "post" and path in bodies else {}))
        assert res.status_code == 403, (method, path, res.status_code)
    assert bob.get("/api/v1/me").json() == {"name": "bob", "role": "annotator"}
    assert anon.get("/healthz").json() == {"status": "ok"}


def test_posts_without_the_csrf_token_are_refused(app, admin, make_user):
    make_user("bob")
    bob = login(app, "bob")
    pid = project_with(admin, [{"prompt": "q", "responses": ["a", "b"]}])
    token = bob.headers.pop("X-CSRF-Token")
    assert bob.post(f"/api/v1/projects/{pid}/next").status_code == 403
    assert bob.post(f"/api/v1/projects/{pid}/next", headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert bob.post(f"/api/v1/projects/{pid}/next", headers={"X-CSRF-Token": token}).status_code == 200
    # form posts too, and login itself
    assert bob.post("/logout", data={}).status_code == 403
    fresh = TestClient(app)
    assert fresh.post("/api/v1/login", json={"name": "bob", "password": "x"}).status_code == 403


def test_model_text_comes_back_escaped_and_hidden_details_stay_hidden(app, admin, make_user):
    make_user("bob")
    bob = login(app, "bob")
    pid = project_with(admin, [{"prompt": "Where is <b>HR</b>?", "responses": XSS}])
    page = bob.post(f"/projects/{pid}/work")  # the Start button: leases an item, then shows it
    assert page.status_code == 200
    html = page.text
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html and "Where is &lt;b&gt;HR&lt;/b&gt;?" in html
    assert "script-src 'self'" in page.headers["content-security-policy"]
    task = bob.post(f"/api/v1/projects/{pid}/next").json()
    assert set(task) == {"assignment_id", "kind", "prompt", "responses", "draft", "expires_at"}  # no source, no ids


def test_login_is_rate_limited(app, make_user):
    make_user("bob")
    client = TestClient(app)
    client.headers["X-CSRF-Token"] = client.get("/api/v1/csrf").json()["csrf_token"]
    codes = [
        client.post("/api/v1/login", json={"name": "bob", "password": "wrong password"}).status_code for _ in range(6)
    ]
    assert codes == [401] * 5 + [429]
    # even the right password waits now
    assert client.post("/api/v1/login", json={"name": "bob", "password": "correct horse battery"}).status_code == 429


def test_order_is_randomized_per_annotator_and_labels_map_back(app, admin, make_user):
    pid = project_with(
        admin, [{"prompt": f"q{i}", "responses": [f"first {i}", f"second {i}"]} for i in range(12)], overlap=2
    )
    for name in ("bob", "cy"):
        make_user(name)
    orders = {}
    for name in ("bob", "cy"):
        client = login(app, name)
        while (task := client.post(f"/api/v1/projects/{pid}/next").json())["assignment_id"]:
            shown_first = task["responses"][0]
            orders[(name, task["prompt"])] = shown_first
            # always prefer the response shown as A: the export must say which response that really was
            assert (
                client.post(f"/api/v1/assignments/{task['assignment_id']}/submit", json={"label": "a"}).status_code
                == 201
            )
    assert len(orders) == 24
    assert len({v.split()[0] for v in orders.values()}) == 2  # both orders occurred
    exported = admin.get(f"/api/v1/projects/{pid}/export?format=comparisons").json()
    for row in exported:
        name = "bob" if row["annotator"] == exported[0]["annotator"] else None
        shown = [v for (n, q), v in orders.items() if q == row["prompt"]]
        assert row["label"] in ("a", "b")
        preferred = row["response_a"] if row["label"] == "a" else row["response_b"]
        assert preferred in shown
        del name


def test_queue_leases_overlap_skip_and_no_repeats(app, admin, make_user):
    from datetime import timedelta

    from rlhfkit.annotate.store import Assignment, utcnow

    pid = project_with(admin, [{"prompt": "only", "responses": ["x", "y", "z"]}], overlap=2)
    for name in ("bob", "cy", "dee"):
        make_user(name)
    bob, cy, dee = (login(app, n) for n in ("bob", "cy", "dee"))
    t1 = bob.post(f"/api/v1/projects/{pid}/next").json()
    assert t1["kind"] == "rank" and bob.post(f"/api/v1/projects/{pid}/next").json() == t1  # same lease again
    t2 = cy.post(f"/api/v1/projects/{pid}/next").json()
    assert t2["assignment_id"] and dee.post(f"/api/v1/projects/{pid}/next").json()["assignment_id"] is None  # full
    assert cy.post(f"/api/v1/assignments/{t2['assignment_id']}/skip").json() == {"status": "skipped"}
    t3 = dee.post(f"/api/v1/projects/{pid}/next").json()  # the skipped slot went back
    assert t3["assignment_id"] and cy.post(f"/api/v1/projects/{pid}/next").json()["assignment_id"] is None
    # bob's lease expires: the item returns to the queue, and bob cannot submit on someone else's slot
    with app.state.sessions() as s:
        a = s.get(Assignment, t1["assignment_id"])
        a.expires_at = utcnow() - timedelta(seconds=1)
        s.commit()
    assert dee.post(f"/api/v1/assignments/{t3['assignment_id']}/submit", json={"ranks": [1, 2, 2]}).status_code == 201
    assert dee.post(f"/api/v1/assignments/{t3['assignment_id']}/submit", json={"ranks": [1, 2, 2]}).status_code == 409
    t4 = bob.post(f"/api/v1/projects/{pid}/next").json()  # re-leased to bob, who never annotated it
    assert t4["assignment_id"] == t1["assignment_id"]
    assert bob.post(f"/api/v1/assignments/{t4['assignment_id']}/submit", json={"ranks": [1, 2]}).status_code == 400
    assert bob.post(f"/api/v1/assignments/{t4['assignment_id']}/submit", json={"ranks": [3, 1, 2]}).status_code == 201
    assert dee.post(f"/api/v1/assignments/{t4['assignment_id']}/submit", json={"ranks": [1, 2, 3]}).status_code == 404
    prog = admin.get(f"/api/v1/projects/{pid}/progress").json()
    assert prog["complete_items"] == 1 and prog["per_person"] == {"bob": 1, "dee": 1}
    assert bob.get(f"/api/v1/projects/{pid}/progress").json()["per_person"] == {"bob": 1}  # others' counts hidden


def test_twenty_concurrent_annotators_lose_and_duplicate_nothing(app, admin, make_user):
    n_people, per_person, overlap = 20, 50, 2
    pid = project_with(
        admin,
        [{"prompt": f"question {i}", "responses": [f"a{i}", f"b{i}"]} for i in range(n_people * per_person // overlap)],
        overlap=overlap,
    )
    names = [f"ann{i:02d}" for i in range(n_people)]
    for name in names:
        make_user(name)
    clients = {name: login(app, name) for name in names}

    def work(name: str) -> list[int]:
        client, done = clients[name], []
        while True:
            task = client.post(f"/api/v1/projects/{pid}/next").json()
            if not task["assignment_id"]:
                return done
            res = client.post(f"/api/v1/assignments/{task['assignment_id']}/submit", json={"label": "tie"})
            assert res.status_code == 201, res.text
            done.append(task["assignment_id"])

    with ThreadPoolExecutor(n_people) as pool:
        results = dict(zip(names, pool.map(work, names)))
    total = sum(len(v) for v in results.values())
    assert total == n_people * per_person  # every item got exactly `overlap` judgements, none lost
    prog = admin.get(f"/api/v1/projects/{pid}/progress").json()
    assert prog["annotations"] == total and prog["complete_items"] == prog["items"] == total // overlap
    rows = admin.get(f"/api/v1/projects/{pid}/export?format=comparisons").json()
    assert len(rows) == total and len({(r["prompt"], r["annotator"]) for r in rows}) == total  # no duplicates
    stats = admin.get(f"/api/v1/projects/{pid}/stats").json()
    assert stats["percent_agreement"] == 1.0 and stats["items_with_two_or_more_labels"] == total // overlap


def test_exports_round_trip_into_rlhf_data_validate(app, admin, make_user, tmp_path):
    records = [
        {"prompt": "Where is HR?", "completion": "3rd floor"},
        {
            "prompt": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "HR?"},
            ],
            "responses": ["A", "B"],
        },
        {"prompt": "rank me", "responses": ["r1", "r2", "r3"]},
    ]
    pid = project_with(admin, records)
    make_user("bob")
    bob = login(app, "bob")
    answers = {
        "gold": {"answer": "HR is on the 3rd floor of Building A."},
        "compare": {"label": "b"},
        "rank": {"ranks": [2, 1, 2], "flags": ["unsafe"], "reason": "the first is rude"},
    }
    shown = {}
    while (task := bob.post(f"/api/v1/projects/{pid}/next").json())["assignment_id"]:
        shown[task["kind"]] = task["responses"]
        assert (
            bob.post(f"/api/v1/assignments/{task['assignment_id']}/submit", json=answers[task["kind"]]).status_code
            == 201
        )
    expected = {
        "sft": ("sft", 1),
        "comparisons": ("comparisons", 1),
        "rankings": ("rankings", 1),
        "pairs": ("pairs", 3),
        "ratings": ("ratings", 5),  # A/B: the winner good, the loser bad; ranking: best good, the two worst bad
    }
    for fmt, (data_format, count) in expected.items():
        rows = admin.get(f"/api/v1/projects/{pid}/export?format={fmt}").json()
        path = tmp_path / f"{fmt}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        data = read_records(path)
        assert (data.format, len(data)) == (data_format, count), fmt
        assert all(r["annotator"].startswith("ann-") for r in rows)  # pseudonyms, not names
    (rank,) = admin.get(f"/api/v1/projects/{pid}/export?format=rankings").json()
    # each response keeps the rank bob gave it where he saw it
    assert dict(zip(rank["responses"], rank["ranks"])) == dict(zip(shown["rank"], answers["rank"]["ranks"]))
    assert len(rank["ranks"]) == 3 and sorted(rank["ranks"]) == [1, 2, 2]
    ratings = admin.get(f"/api/v1/projects/{pid}/export?format=ratings").json()
    best = shown["rank"][answers["rank"]["ranks"].index(1)]
    assert sorted((r["response"], r["label"]) for r in ratings if r["prompt"] == "rank me") == sorted(
        (x, "good" if x == best else "bad") for x in shown["rank"]
    )
    (ab,) = admin.get(f"/api/v1/projects/{pid}/export?format=comparisons").json()
    win, lose = (ab["response_a"], ab["response_b"]) if ab["label"] == "a" else (ab["response_b"], ab["response_a"])
    assert {(r["response"], r["label"]) for r in ratings if r["prompt"] != "rank me"} == {(win, "good"), (lose, "bad")}


def test_bad_submissions_are_refused(app, admin, make_user):
    pid = project_with(admin, [{"prompt": "q", "responses": ["a", "b"]}])
    make_user("bob")
    bob = login(app, "bob")
    aid = bob.post(f"/api/v1/projects/{pid}/next").json()["assignment_id"]
    assert bob.post(f"/api/v1/assignments/{aid}/submit", json={"label": "maybe"}).status_code == 422
    assert bob.post(f"/api/v1/assignments/{aid}/submit", json={"answer": "text"}).status_code == 400
    assert bob.post(f"/api/v1/assignments/{aid}/submit", json={"label": "a", "flags": ["nope"]}).status_code == 422
    bad = admin.post(f"/api/v1/projects/{pid}/items", json={"records": [{"prompt": 5, "responses": ["a", "b"]}]})
    assert bad.status_code == 400 and "records[1]" in bad.json()["detail"]


def test_text_the_database_cannot_store_is_a_client_error(app, admin, db_url):
    """PostgreSQL text cannot hold NUL (SQLite can): refused with 422 there, never a server error."""
    pid = project_with(admin, [{"prompt": "q", "completion": "draft"}])
    aid = admin.post(f"/api/v1/projects/{pid}/next").json()["assignment_id"]
    res = admin.post(f"/api/v1/assignments/{aid}/submit", json={"answer": "an answer", "reason": "nul\x00reason"})
    assert res.status_code == (201 if "postgresql" not in db_url else 422), res.text
    # in a name NUL is a control character, refused on every database (issue 12)
    res = admin.post("/api/v1/users", json={"name": "nul\x00name", "password": "long enough", "role": "annotator"})
    assert res.status_code == 400, res.text
    bad_login = TestClient(app)
    token = bad_login.get("/api/v1/csrf").json()["csrf_token"]
    res = bad_login.post("/api/v1/login", json={"name": "a\x00", "password": "x"}, headers={"X-CSRF-Token": token})
    assert res.status_code == (401 if "postgresql" not in db_url else 422), res.text
    assert admin.get("/api/v1/projects").status_code == 200  # the failed request left the database usable


def test_each_persons_ranks_and_labels_map_back_through_the_order_they_saw(app, admin, make_user):
    """Three people rank and compare by the text they see, each in their own shuffled order: every exported rank and
    label must belong to the response it was given to."""
    records = []
    for i in range(4):
        records.append(
            {"prompt": f"rank {i}", "responses": [f"r{i}-{c} rank {r}" for c, r in zip("abcd", (1, 2, 2, 3))]}
        )
        records.append({"prompt": f"pair {i}", "responses": [f"p{i} good", f"p{i} bad"]})
    items = {r["prompt"]: r["responses"] for r in records}
    pid = project_with(admin, records, overlap=3)

    def deserved(text: str) -> int:
        return int(text.rsplit(" ", 1)[1])

    shuffled = {}
    for name in ("bob", "cy", "dee"):
        make_user(name)
        client = login(app, name)
        shuffled[name] = set()
        while (task := client.post(f"/api/v1/projects/{pid}/next").json())["assignment_id"]:
            seen = task["responses"]
            assert sorted(seen) == sorted(items[task["prompt"]])
            if seen != items[task["prompt"]]:
                shuffled[name].add(task["kind"])
            if task["kind"] == "rank":
                answer = {"ranks": [deserved(t) for t in seen]}
            else:
                answer = {"label": "a" if seen[0].endswith("good") else "b"}
            assert client.post(f"/api/v1/assignments/{task['assignment_id']}/submit", json=answer).status_code == 201
    assert all(kinds == {"rank", "compare"} for kinds in shuffled.values()), shuffled  # everyone saw shuffles

    rankings = admin.get(f"/api/v1/projects/{pid}/export?format=rankings").json()
    assert len(rankings) == 12 and len({r["annotator"] for r in rankings}) == 3
    for row in rankings:
        assert row["ranks"] == [deserved(t) for t in row["responses"]], row
    comparisons = admin.get(f"/api/v1/projects/{pid}/export?format=comparisons").json()
    assert len(comparisons) == 12
    for row in comparisons:
        assert row[{"a": "response_a", "b": "response_b"}[row["label"]]].endswith("good"), row
    pairs = admin.get(f"/api/v1/projects/{pid}/export?format=pairs").json()
    assert len(pairs) == 12 * 5 + 12  # per ranking: 1>2, 1>2, 1>3, 2>3, 2>3; per comparison: one pair
    for row in pairs:
        if row["prompt"].startswith("rank"):
            assert deserved(row["chosen"]) < deserved(row["rejected"]), row
        else:
            assert row["chosen"].endswith("good") and row["rejected"].endswith("bad"), row


def test_the_csrf_token_rotates_at_login(app, make_user):
    make_user("bob")
    client = TestClient(app)
    before = client.get("/api/v1/csrf").json()["csrf_token"]
    res = client.post("/api/v1/login", json={"name": "bob", "password": PASSWORD}, headers={"X-CSRF-Token": before})
    after = res.json()["csrf_token"]
    assert res.status_code == 200 and after != before
    assert client.get("/api/v1/csrf").json()["csrf_token"] == after
    assert client.post("/api/v1/logout", headers={"X-CSRF-Token": before}).status_code == 403  # the old one is dead
    # the login form too
    page = TestClient(app)
    before = page.get("/api/v1/csrf").json()["csrf_token"]
    res = page.post("/login", data={"csrf_token": before, "name": "bob", "password": PASSWORD}, follow_redirects=False)
    assert res.status_code == 303
    after = page.get("/api/v1/csrf").json()["csrf_token"]
    assert after != before
    assert page.post("/logout", data={"csrf_token": before}).status_code == 403
