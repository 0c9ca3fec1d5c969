"""`rlhf serve` as people run it: a process serving two names, the API key read from a file (never argv), and
bad arguments ending with `error: ...` (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import openai
from typer.testing import CliRunner

from rlhfkit.cli import app
from tests.conftest import ROOT
from tests.serve.conftest import free_port

runner = CliRunner()


def rlhf(*args: str, **kw) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(x for x in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if x),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "rlhfkit.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def test_rlhf_serve_process_with_two_models_and_a_key_file(tiny_lm, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("k3y-from-a-file-0123\n")
    key_file.chmod(0o600)
    port = free_port()
    proc = rlhf(
        "serve",
        str(tiny_lm),
        "--name",
        "helpdesk",
        "--model",
        f"copy={tiny_lm}",
        "--port",
        str(port),
        "--api-key-file",
        str(key_file),
        "--threads",
        "1",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "rlhf serve did not start in 120 s"
            time.sleep(0.2)
        assert "k3y-from-a-file" not in " ".join(proc.args)
        with openai.OpenAI(base_url=url + "/v1", api_key="k3y-from-a-file-0123", max_retries=0) as c:
            assert sorted(m.id for m in c.models.list().data) == ["copy", "helpdesk"]
            kw = dict(messages=[{"role": "user", "content": "When is payday?"}], max_tokens=12, temperature=0)
            a = c.chat.completions.create(model="helpdesk", **kw).choices[0].message.content
            b = c.chat.completions.create(model="copy", **kw).choices[0].message.content
            assert a == b and a
        with openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0) as c:
            try:
                c.models.list()
                raise AssertionError("a wrong key was accepted")
            except openai.AuthenticationError as e:
                assert e.status_code == 401
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_bad_arguments_end_with_an_error_message(tiny_lm, tmp_path):
    short = tmp_path / "short"
    short.write_text("abc\n")
    cases = [
        (["serve", str(tmp_path / "missing")], "no such model directory"),
        (["serve", str(tiny_lm), "--model", "nameonly"], "--model takes NAME=DIR"),
        (["serve", str(tiny_lm), "--name", "a", "--model", f"a={tiny_lm}"], "two models are named 'a'"),
        (["serve", str(tiny_lm), "--api-key-file", str(tmp_path / "nokey")], "no such API key file"),
        (["serve", str(tiny_lm), "--api-key-file", str(short)], "at least 8 characters"),
    ]
    for args, message in cases:
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and "error: " in res.output and message in res.output, (args, res.output)
