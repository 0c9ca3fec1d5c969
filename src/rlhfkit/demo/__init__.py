"""Bundled example data about a fictional company (Lumen & Pike) and the end-to-end demo."""

from importlib.resources import files


def data_path(name: str) -> str:
    """Path of a bundled data file, e.g. data_path("helpdesk_train.jsonl")."""
    return str(files("rlhfkit.demo") / "data" / name)
