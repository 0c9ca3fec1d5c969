"""The chat page against the project's own `rlhf serve` (not the fake server the other chat tests use): the two
speak the OpenAI chat-completions protocol to each other, the answer streams through both and is stored as served."""

from __future__ import annotations

import json

from rlhfkit.annotate.store import ChatTurn
from tests.app.conftest import login
from tests.serve.conftest import serving


def test_the_chat_page_asks_rlhf_serve_and_stores_what_it_served(app, admin, make_user, tiny_lm):
    from rlhfkit.models.load import load_causal_lm, load_tokenizer
    from rlhfkit.serve.api import create_app
    from rlhfkit.serve.engine import Engine

    engine = Engine(load_causal_lm(str(tiny_lm), device="cpu"), load_tokenizer(str(tiny_lm), padding_side="left"))
    engine.start()
    try:
        with serving(create_app({"helpdesk": engine})) as url:
            pid = admin.post("/api/v1/projects", json={"name": "help desk"}).json()["id"]
            res = admin.post(
                f"/api/v1/projects/{pid}/models", json={"base_url": url + "/v1", "model": "helpdesk", "max_tokens": 24}
            )
            assert res.status_code == 201, res.text
            make_user("bob")
            bob = login(app, "bob")
            res = bob.post(f"/api/v1/projects/{pid}/chat", json={"message": "Where is the HR department in Boston?"})
            assert res.status_code == 200, res.text
            events = [json.loads(x[6:]) for x in res.text.split("\n") if x.startswith("data: ")]
            assert events[0]["type"] == "start" and events[-1]["type"] == "done", events[-3:]
            answer = "".join(e["text"] for e in events if e["type"] == "delta")
            assert answer.strip()  # the tiny model said something, through rlhf serve's stream
            with app.state.sessions() as s:
                turn = s.get(ChatTurn, events[-1]["turn_id"])
                assert (turn.model, turn.answer) == ("helpdesk", answer)
            assert bob.post(f"/api/v1/chat/{turn.id}/feedback", json={"label": "good"}).status_code == 200
    finally:
        engine.stop()
