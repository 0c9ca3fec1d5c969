"""Read any supported data file into validated records; every problem is reported as `path:line: field: problem`.

Sources: JSONL (`.jsonl`, `.json` with one object a line), CSV (`.csv`, same column names; list-valued cells hold
JSON), either gzipped (`.gz`), and Hugging Face `datasets` saved with `save_to_disk` (a directory; the "line" is the
row number, 1-based). A name that is neither a file nor a directory is tried as a hub dataset where the network
allows.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfkit.data.schema import FORMATS, MIXABLE, FieldError, Record, detect_format, parse_record

MAX_REPORTED_ERRORS = 50
_JSON_CELLS = ("prompt", "chosen", "rejected", "response_a", "response_b", "responses", "ranks", "messages", "votes")


class DataError(Exception):
    """A data file could not be used. `errors` holds one `path:line: field: problem` string per problem."""

    def __init__(self, errors: list[str], *, total: int | None = None):
        self.errors = errors
        self.total = total if total is not None else len(errors)
        more = f"\n... and {self.total - len(errors)} more" if self.total > len(errors) else ""
        super().__init__("\n".join(errors) + more)


@dataclass
class DataFile:
    path: str
    format: str
    records: list[Record]

    def __len__(self) -> int:
        return len(self.records)


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _csv_cell(key: str, value: str) -> Any:
    if key in _JSON_CELLS and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if key == "margin":
        try:
            return float(value) if value != "" else None
        except ValueError:
            return value
    if key == "not_rankable":
        return {"true": True, "false": False, "1": True, "0": False, "": False}.get(value.strip().lower(), value)
    return value


def iter_raw(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed object) for each record; a line that does not parse yields a FieldError."""
    p = Path(path)
    if p.is_dir():
        from datasets import load_from_disk

        ds = load_from_disk(str(p))
        if hasattr(ds, "keys"):  # a DatasetDict: use the train split, or the only one
            ds = ds["train"] if "train" in ds else ds[next(iter(ds.keys()))]
        for i, row in enumerate(ds, start=1):
            yield i, row
        return
    if not p.exists():
        if "/" in str(path) and not str(path).startswith((".", "/")) and p.suffix == "":
            from datasets import load_dataset  # hub dataset name; needs the network

            for i, row in enumerate(load_dataset(str(path), split="train"), start=1):
                yield i, row
            return
        raise DataError([f"{path}: no such file or directory"])
    name = p.name[:-3] if p.suffix == ".gz" else p.name
    with _open_text(p) as f:
        if name.endswith(".csv"):
            reader = csv.DictReader(f)
            for row in reader:
                yield reader.line_num, {k: _csv_cell(k, v) for k, v in row.items() if k is not None and v is not None}
            return
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as e:
                yield line_no, FieldError("json", f"invalid JSON ({e.msg} at column {e.colno})")


def read_records(path: str | os.PathLike, *, fmt: str | None = None, expect: tuple[str, ...] | None = None) -> DataFile:
    """Read and validate every record of `path`.

    fmt: force a format (else detected from the first record that matches one). A file whose lines are pairs,
    comparisons and rankings mixed is detected as "preferences" (each line read by its own keys); forced, a format
    other than "preferences" reads every line as that format.
    expect: the formats the caller can use; another detected format is an error naming the file. Raises DataError
    listing every bad record.
    """
    if fmt is not None and fmt not in FORMATS and fmt != "preferences":
        raise DataError([f"{path}: unknown format {fmt!r} (one of {', '.join([*FORMATS, 'preferences'])})"])
    forced = fmt is not None
    errors: list[str] = []
    total_errors = 0
    records: list[Record] = []
    for line_no, obj in iter_raw(path):
        if isinstance(obj, FieldError):
            problem: FieldError | None = obj
        else:
            if fmt is None:
                fmt = detect_format(obj) if isinstance(obj, dict) else None
                if fmt is None:
                    keys = ", ".join(obj) if isinstance(obj, dict) else type(obj).__name__
                    formats = "; ".join(f"{n}: {', '.join(k)}" for n, (k, _) in FORMATS.items())
                    problem = FieldError("record", f"no known format has these keys ({keys}); formats are {formats}")
                    errors.append(f"{path}:{line_no}: {problem}")
                    raise DataError(errors)
            own = detect_format(obj) if isinstance(obj, dict) else None
            if not forced and fmt in MIXABLE and own in MIXABLE and own != fmt:
                fmt = "preferences"  # a second kind of judgement: every line is read by its own keys
            line_fmt = fmt
            if fmt == "preferences":
                line_fmt = own if own in MIXABLE else "preferences"
            try:
                if line_fmt == "preferences":
                    raise FieldError("record", f"not a judgement: a preferences line is one of {', '.join(MIXABLE)}")
                records.append(parse_record(line_fmt, obj))
                problem = None
            except FieldError as e:
                problem = e
        if problem is not None:
            total_errors += 1
            if len(errors) < MAX_REPORTED_ERRORS:
                errors.append(f"{path}:{line_no}: {problem}")
    if total_errors:
        raise DataError(errors, total=total_errors)
    if fmt is None or not records:
        raise DataError([f"{path}: no records"])
    if expect is not None and fmt not in expect:
        raise DataError([f"{path}: holds {fmt} records, but this command needs one of: {', '.join(expect)}"])
    return DataFile(str(path), fmt, records)
