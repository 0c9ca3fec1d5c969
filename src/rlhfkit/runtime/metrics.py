"""metrics.jsonl (one JSON object per logged step) and metrics.json (the final summary), written by rank 0."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rlhfkit.runtime.files import atomic_open, write_json


def _clean(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf; keep the fact visible
    return v


class MetricsLog:
    def __init__(self, output_dir: str | Path, *, enabled: bool = True, resume_from_step: int | None = None):
        self.path = Path(output_dir) / "metrics.jsonl"
        self.enabled = enabled
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_from_step is None:
            self.path.write_text("")
        elif self.path.exists():
            # Rows logged after the checkpoint we resume from will be logged again: drop them.
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_from_step
            ]
            with atomic_open(self.path) as f:
                f.writelines(line + "\n" for line in kept)

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")

    def read(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def summary(self, summary: dict[str, Any]) -> None:
        if self.enabled:
            write_json(self.path.with_name("metrics.json"), {k: _clean(v) for k, v in summary.items()})


def check_finite(row: dict[str, Any], *, what: str, advice: str, ignore: tuple[str, ...] = ()) -> None:
    """Stop a diverged run with a message naming what became NaN/inf, where, and what to try."""
    bad = [k for k, v in row.items() if k not in ignore and isinstance(v, (int, float)) and not math.isfinite(float(v))]
    if bad:
        raise FloatingPointError(f"{', '.join(bad)} became NaN/inf {what}; stopping. {advice}")


def mean_of_tenths(rows: list[dict[str, Any]], **keys: str) -> dict[str, float]:
    """{name_first_tenth, name_last_tenth} for each name=key: the mean of `key` over the first and the last tenth
    of the rows (at least one row each), the usual way to say whether a run learned."""
    tenth = max(1, len(rows) // 10)
    out = {}
    for name, key in keys.items():
        out[f"{name}_first_tenth"] = sum(r[key] for r in rows[:tenth]) / tenth
        out[f"{name}_last_tenth"] = sum(r[key] for r in rows[-tenth:]) / tenth
    return out
