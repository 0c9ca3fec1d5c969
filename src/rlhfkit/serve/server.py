"""`rlhf serve`: load each model directory once, start its worker, run the API with uvicorn."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from rlhfkit.config import ConfigError
from rlhfkit.serve.api import Limits, create_app
from rlhfkit.serve.engine import Engine

log = logging.getLogger("rlhfkit.serve")


def parse_models(model_dir: str, name: str | None, extra: list[str]) -> dict[str, str]:
    """Model name -> directory: MODEL_DIR under --name (default: the directory's name), then each NAME=DIR."""
    models = {name or Path(model_dir).resolve().name: model_dir}
    for item in extra:
        key, sep, path = item.partition("=")
        if not sep or not key or not path:
            raise ConfigError(f"--model takes NAME=DIR, got {item!r}")
        if key in models:
            raise ConfigError(f"two models are named {key!r}")
        models[key] = path
    for key, path in models.items():
        if not Path(path).is_dir():
            raise ConfigError(f"{path}: no such model directory (model {key!r})")
    return models


def read_api_key(path: str | os.PathLike) -> str:
    """The key is the file's first line. A file others can read is accepted with a warning."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such API key file")
    text = p.read_text(encoding="utf-8").strip()
    key = text.splitlines()[0].strip() if text else ""
    if len(key) < 8:
        raise ConfigError(f"{p}: the API key must hold at least 8 characters")
    if p.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(f"{p} can be read by other users: chmod 600 {p}")
    return key


def load_engine(
    model_dir: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    max_batch: int = 32,
    max_queue: int = 256,
    threads: int | None = None,
    batch_wait: float = 0.02,
) -> Engine:
    from rlhfkit.models.load import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(model_dir, padding_side="left")
    model = load_causal_lm(model_dir, device=device, dtype=dtype)
    return Engine(model, tokenizer, max_batch=max_batch, max_queue=max_queue, threads=threads, batch_wait=batch_wait)


def serve(
    models: dict[str, str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    max_batch: int = 32,
    max_queue: int = 256,
    threads: int | None = None,
    batch_wait: float = 0.02,
    limits: Limits = Limits(),
) -> None:
    import uvicorn

    if api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(f"serving on {host} without an API key: anyone who reaches the port can use the models")
    engines = {
        name: load_engine(
            path,
            device=device,
            dtype=dtype,
            max_batch=max_batch,
            max_queue=max_queue,
            threads=threads,
            batch_wait=batch_wait,
        )
        for name, path in models.items()
    }
    try:
        uvicorn.run(create_app(engines, api_key=api_key, limits=limits), host=host, port=port, log_level="info")
    finally:
        for engine in engines.values():
            engine.stop()
