"""`rlhf serve` under load: aggregate completion tokens/s of N concurrent streaming requests (batched by the server)
against the same N requests sent one at a time to the same server process; also checks that both give every request
the same text (seeded requests do not depend on their batch).

usage: python bench/serve.py [--model tiny|smollm2] [--requests 32] [--max-tokens 64] [--threads N]
tiny: the Llama of bench/tiny_models.py (hidden 256, 6 layers, vocabulary 1024); smollm2: SmolLM2-135M-Instruct.
Each request: a different help-desk question, temperature 1.0, its own seed, max_tokens as given, streamed with
stream_options.include_usage (tokens are the server's usage counts). The server is a separate `rlhf serve` process
(fp32 on the CPU, default settings); the client is the official `openai` package (AsyncOpenAI). One warm-up request
first. Target: batched >= 3x one-at-a-time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import WORDS, smollm2_dir  # noqa: E402

ROOT = Path(__file__).parents[1]


def questions(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 16))) + "?" for _ in range(n)]


def start_server(model: Path, port: int, threads: int) -> subprocess.Popen:
    import httpx

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(x for x in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if x),
    }
    cmd = [sys.executable, "-m", "rlhfkit.cli", "serve", str(model), "--name", "m", "--port", str(port)]
    cmd += ["--threads", str(threads)] if threads else []
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None:
            sys.exit(f"rlhf serve exited: {proc.stderr.read()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            sys.exit("rlhf serve did not start in 300 s")
        time.sleep(0.2)


async def one(client, question: str, seed: int, max_tokens: int) -> tuple[str, int, float]:
    """(text, completion tokens, seconds to the first content) of one streamed request."""
    start, first, text, tokens = time.perf_counter(), None, "", 0
    stream = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": question}],
        temperature=1.0,
        seed=seed,
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                first = first or time.perf_counter()
                text += choice.delta.content
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return text, tokens, (first or time.perf_counter()) - start


async def measure(port: int, prompts: list[str], max_tokens: int, *, concurrent: bool):
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-", max_retries=0, timeout=3600) as c:
        await one(c, "warm up", 0, 4)
        start = time.perf_counter()
        if concurrent:
            results = await asyncio.gather(*(one(c, q, i, max_tokens) for i, q in enumerate(prompts)))
        else:
            results = [await one(c, q, i, max_tokens) for i, q in enumerate(prompts)]
        return results, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="rlhf serve --threads (0: torch's default)")
    a = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if a.model == "tiny":
            from tiny_models import build

            model = build(Path(tmp), hidden=256, layers=6, vocab=1024) / "policy"
        else:
            model = smollm2_dir()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = start_server(model, port, a.threads)
        try:
            prompts = questions(a.requests)
            batched, batched_s = asyncio.run(measure(port, prompts, a.max_tokens, concurrent=True))
            serial, serial_s = asyncio.run(measure(port, prompts, a.max_tokens, concurrent=False))
        finally:
            server.terminate()
            server.wait(30)

    same = sum(b[0] == s[0] for b, s in zip(batched, serial))
    threads = a.threads or "default"
    print(
        f"model {a.model}, {a.requests} streaming requests, max_tokens {a.max_tokens}, temperature 1.0, seeded, "
        f"server threads {threads}"
    )
    print(f"{'mode':<22}{'tokens':>8}{'seconds':>10}{'tokens/s':>10}{'median TTFT s':>15}")
    rows = ((f"{a.requests} concurrent", batched, batched_s), ("one at a time", serial, serial_s))
    for name, results, seconds in rows:
        tokens = sum(r[1] for r in results)
        ttft = statistics.median(r[2] for r in results)
        print(f"{name:<22}{tokens:>8}{seconds:>10.2f}{tokens / seconds:>10.1f}{ttft:>15.3f}")
    ratio = (sum(r[1] for r in batched) / batched_s) / (sum(r[1] for r in serial) / serial_s)
    print(f"batched / one at a time: {ratio:.2f}x (target >= 3x); same text for {same} of {a.requests} requests")
    if same != a.requests:
        sys.exit("a seeded request's text depended on its batch")


if __name__ == "__main__":
    main()
