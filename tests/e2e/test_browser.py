"""A real headless Chromium (Debian's package, driven by Playwright) logs in, writes a gold answer, compares a pair
by keyboard and ranks three answers. Screenshots go to RLHFKIT_SCREENSHOTS (default: the test's temp dir)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Only this test catches a page that maps what a person clicked to the wrong answer: in CI (and under `make test`)
# a missing browser is a failure, not a skip.
BROWSER_REQUIRED = bool(os.environ.get("CI") or os.environ.get("RLHFKIT_REQUIRE_BROWSER"))
PASSWORD = "correct horse battery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_chromium() -> None:
    """Skip without Debian's chromium, or fail when the browser tests are required (CI, make test)."""
    if CHROMIUM is None:
        message = "Debian's chromium is not installed (make chromium installs it)"
        if BROWSER_REQUIRED:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def server(tmp_path):
    require_chromium()
    import uvicorn

    from rlhfkit.annotate import service
    from rlhfkit.annotate.app import create_app
    from rlhfkit.data.schema import Generations, SFTRecord

    app = create_app(str(tmp_path / "e2e.db"), secret_key="e2e-secret")
    with app.state.sessions() as s:
        service.create_user(s, "alice", PASSWORD, "annotator")
        p = service.create_project(s, "help desk")
        service.import_records(
            s,
            p,
            [
                SFTRecord("Where is HR in Boston?", "HR is somewhere"),
                Generations("When is payday?", ["The last working day of the month.", "<b>Friday</b>"]),
                Generations(
                    [
                        {"role": "user", "content": "hi"},
                        {"role": "assistant", "content": "Hello! How can I help?"},
                        {"role": "user", "content": "Where do I park?"},
                    ],
                    ["The garage under Building B.", "Somewhere.", "Ugh, figure it out."],
                ),
            ],
        )
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(100):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", app
    srv.should_exit = True
    thread.join(5)


def test_login_gold_compare_rank_by_keyboard(server, tmp_path):
    from playwright.sync_api import sync_playwright

    url, app = server
    shots = Path(os.environ.get("RLHFKIT_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(url + "/")
        assert page.url.endswith("/login")
        page.fill("input[name=name]", "alice")
        page.fill("input[name=password]", PASSWORD)
        page.screenshot(path=str(shots / "1-login.png"))
        page.click("button[type=submit]")
        page.wait_for_url(url + "/")
        assert page.locator(".card").filter(has_text="0 of 3 items complete").count() == 1
        page.click("text=Start")

        # gold answer: edit the draft, submit with Ctrl+Enter
        page.wait_for_selector("textarea[name=answer]")
        assert page.input_value("textarea[name=answer]") == "HR is somewhere"
        page.fill("textarea[name=answer]", "HR is on the 3rd floor of Building A.")
        page.screenshot(path=str(shots / "2-gold.png"))
        page.keyboard.press("Control+Enter")

        # compare: keyboard 2 chooses B, Ctrl+Enter submits; model HTML is shown as text
        page.wait_for_selector(".pair")
        assert "1 / 3 complete" in page.inner_text(".crumbs")
        assert page.locator(".pair .text").filter(has_text="<b>Friday</b>").count() == 1
        assert page.locator(".pair b").count() == 0
        page.keyboard.press("2")
        assert page.is_checked("input[name=label][value=b]")
        page.screenshot(path=str(shots / "3-compare.png"))
        shown_b = page.locator(".pair .text").nth(1).inner_text()
        page.keyboard.press("Control+Enter")

        # rank: number keys rank the highlighted answer and move on; the conversation is shown turn by turn
        page.wait_for_selector(".rankable")
        assert page.locator(".turn").count() == 3
        texts = [page.locator(".rankable .text").nth(i).inner_text() for i in range(3)]
        for text in texts:
            page.keyboard.press(
                {"The garage under Building B.": "1", "Somewhere.": "2", "Ugh, figure it out.": "3"}[text]
            )
        page.screenshot(path=str(shots / "4-rank.png"), full_page=True)
        page.keyboard.press("Control+Enter")
        page.wait_for_selector("text=All done")
        page.screenshot(path=str(shots / "5-done.png"))
        browser.close()

    from rlhfkit.annotate import service

    with app.state.sessions() as s:
        gold = service.export(s, None, "sft")
        comparison = service.export(s, None, "comparisons")
        ranking = service.export(s, None, "rankings")
    assert gold[0]["completion"] == "HR is on the 3rd floor of Building A."
    preferred = comparison[0]["response_b"] if comparison[0]["label"] == "b" else comparison[0]["response_a"]
    assert preferred == shown_b
    ranks = dict(zip(ranking[0]["responses"], ranking[0]["ranks"]))
    assert ranks == {"The garage under Building B.": 1, "Somewhere.": 2, "Ugh, figure it out.": 3}
