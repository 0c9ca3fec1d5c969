"""A real headless Chromium on the chat page, against a fake OpenAI-compatible model server: an employee asks, sees
the answer arrive piece by piece (as text, HTML and script included), gives it a thumbs down with a correction, then
votes in the arena; the exports hold exactly that and validate. Screenshots go to RLHFKIT_SCREENSHOTS."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.e2e.test_browser import CHROMIUM, PASSWORD, require_chromium

ANSWER = (
    'Payday is the <b>last</b> working day of the month.<script>window.pwned = 1</script> <img src=x onerror="window.'
    'pwned = 2">'
)
CORRECTION = "Payday is the last working day of the month; if it falls on a holiday, the day before."


@pytest.fixture
def chat_server(tmp_path):
    require_chromium()
    from rlhfkit.annotate import chat, service
    from rlhfkit.annotate.app import create_app
    from tests.app.conftest import serving
    from tests.app.fake_openai import KEY, FakeOpenAI, Reply

    fake = FakeOpenAI(api_key=KEY)
    fake.replies["policy"] = Reply(ANSWER, delay=0.15)  # about 2 s, piece by piece
    fake.replies["baseline"] = Reply("Ask HR.", delay=0.05)
    db = str(tmp_path / "e2e.db")
    app = create_app(db, secret_key="e2e-secret")
    with fake.running() as model_url, serving(app) as url:
        with app.state.sessions() as s:
            service.create_user(s, "alice", PASSWORD, "annotator")
            p = service.create_project(s, "help desk")
            for name in ("policy", "baseline"):
                chat.add_model(s, p, name=name, base_url=model_url, model=name, api_key=KEY)
        yield url, app, db, fake


def test_chat_stream_thumbs_down_with_correction_then_arena_vote(chat_server, tmp_path):
    from playwright.sync_api import sync_playwright

    url, app, db, fake = chat_server
    shots = Path(os.environ.get("RLHFKIT_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1200, "height": 1000})
        page.goto(url + "/login")
        page.fill("input[name=name]", "alice")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(url + "/")
        page.click("text=Chat")
        page.wait_for_selector("#ask textarea")
        assert "policy" not in page.content() and "baseline" not in page.content()  # no model is named

        # ask; the answer shows while it is still arriving
        page.fill("#ask textarea", "When is payday?")
        page.click("#ask button[type=submit]")
        partial = page.wait_for_function(
            "() => { const t = document.querySelector('.turn.assistant.streaming .text');"
            " return t && t.textContent.length > 0 && t.textContent; }"
        ).json_value()
        assert ANSWER.startswith(partial) and len(partial) < len(ANSWER)
        page.screenshot(path=str(shots / "chat-1-streaming.png"))
        page.wait_for_selector(".turn.assistant .feedback")
        shown = page.inner_text(".turn.assistant .text")
        assert shown == ANSWER  # the model's HTML is shown as text
        assert page.locator(".turn.assistant .text *").count() == 0  # and made no element
        assert page.evaluate("window.pwned") is None

        # thumbs down, with a correction
        page.click("button[aria-label='thumbs down']")
        page.fill("textarea[name=correction]", CORRECTION)
        page.screenshot(path=str(shots / "chat-2-correction.png"))
        page.click("text=Send feedback")
        page.wait_for_selector("text=Thanks! Your correction was saved.")
        assert page.is_disabled("button[aria-label='thumbs up']")

        # the arena: two answers side by side, blind; B is better
        page.fill("#arena-ask textarea", "Where is HR?")
        page.click("#arena-ask button[type=submit]")
        page.wait_for_selector("#arena-vote button[data-label=b]", state="visible")
        shown_a, shown_b = page.inner_text("#arena-a"), page.inner_text("#arena-b")
        assert {shown_a, shown_b} == {"Ask HR.", ANSWER}
        assert page.locator("#arena-answers .text *").count() == 0
        page.screenshot(path=str(shots / "chat-3-arena.png"), full_page=True)
        page.click("#arena-vote button[data-label=b]")
        page.wait_for_selector("text=Vote recorded")
        page.screenshot(path=str(shots / "chat-4-voted.png"))
        browser.close()

    # what was stored is what the page showed, and the exports validate
    from rlhfkit.cli import app as cli

    prompt = [{"role": "user", "content": "When is payday?"}]
    rows = {}
    for fmt in ("ratings", "sft", "comparisons"):
        out = tmp_path / f"{fmt}.jsonl"
        res = CliRunner().invoke(cli, ["annotate", "export", "--db", db, "--format", fmt, str(out)])
        assert res.exit_code == 0, res.output
        res = CliRunner().invoke(cli, ["data", "validate", str(out)])
        assert res.exit_code == 0 and f"format {fmt}" in res.output, res.output
        rows[fmt] = [json.loads(line) for line in out.read_text().splitlines()]
    chat_rating, *arena_ratings = rows["ratings"]
    assert (chat_rating["prompt"], chat_rating["response"], chat_rating["label"]) == (prompt, ANSWER, "bad")
    assert [(r["response"], r["label"]) for r in arena_ratings] == [(shown_b, "good"), (shown_a, "bad")]
    assert [(r["prompt"], r["completion"]) for r in rows["sft"]] == [(prompt, CORRECTION)]
    correction, vote = rows["comparisons"]
    assert (correction["response_a"], correction["response_b"], correction["label"]) == (CORRECTION, ANSWER, "a")
    assert (vote["prompt"], vote["response_a"], vote["response_b"], vote["label"]) == (
        [{"role": "user", "content": "Where is HR?"}],
        shown_a,
        shown_b,
        "b",
    )
    assert {vote["model_a"], vote["model_b"]} == {"policy", "baseline"}
    assert vote["response_b"] == {"policy": ANSWER, "baseline": "Ask HR."}[vote["model_b"]]
