"""Shared fixtures: tiny offline models and small data files."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

# Eight help-desk questions with gold answers; the SFT integration test must reproduce every answer exactly.
QA = [
    ("Where is the HR department in Boston?", "3rd floor, Building A"),
    ("Where is the IT desk in London?", "Ground floor, Thames House"),
    ("How many vacation days do I get?", "25 days a year"),
    ("When is payday?", "The last working day of the month"),
    ("How do I reset my password?", "Use the password portal with your badge number"),
    ("Where can I park in Austin?", "The free lot behind the building"),
    ("When is the cafe open?", "8 am to 3 pm on weekdays"),
    ("Who approves travel?", "Your manager, in the travel portal"),
]


ROOT = Path(__file__).parents[1]


def metric_rows(out: Path, key: str | None = None) -> list:
    """A run's metrics.jsonl rows, or just their `key` values."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return rows if key is None else [r[key] for r in rows]


def losses(out: Path) -> list[float]:
    return metric_rows(out, "loss")


def torchrun(*cli_args: str, port: int) -> None:
    """`rlhf CLI_ARGS` under torchrun with two processes of one thread each; fails the test with their output."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]
    path = os.pathsep.join(x for x in (str(ROOT), os.environ.get("PYTHONPATH", "")) if x)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    proc = subprocess.run([*cmd, "-m", "rlhfkit.cli", *cli_args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def assert_sharded_in_halves(one: Path, two: Path) -> None:
    """`two` (an fsdp run on 2 processes) held about half of the parameters `one` (a 1-process run) held, in each
    process: the shards' sizes from metrics.json, which also reports each process's peak memory."""
    held_one = json.loads((one / "metrics.json").read_text())["parameters_per_process"]
    metrics = json.loads((two / "metrics.json").read_text())
    held_two = metrics["parameters_per_process"]
    assert len(held_one) == 1 and len(held_two) == 2 and metrics["distributed"] == "fsdp"
    assert sum(held_two) == held_one[0]
    assert all(0.4 * held_one[0] < n <= 0.6 * held_one[0] for n in held_two), (held_two, held_one)
    assert all(g > 0 for g in metrics["peak_memory_gib_per_process"])


@contextmanager
def serving(app, **config):
    """`app` under a real uvicorn server in a thread of this process (so monkeypatches apply and the app's objects
    can be inspected); yields its base URL. The socket is bound before the server starts, so no other process can
    take the port in between. `config` goes to uvicorn."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def qa_file(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "qa.jsonl", [{"prompt": q, "completion": a} for q, a in QA])


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    """A 2-layer, hidden-64 Llama with a BPE tokenizer trained on the QA text (seconds, offline)."""
    from rlhfkit.models.tiny import build_tiny_causal_lm

    texts = [t for qa in QA for t in qa] * 8
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "lm", texts, vocab_size=300, hidden=64, layers=2)
