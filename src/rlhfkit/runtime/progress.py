"""A Rich progress bar on the main process; silent elsewhere."""

from __future__ import annotations

from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextmanager
def progress_bar(description: str, *, total: int, completed: int = 0, enabled: bool = True):
    """Yields update(advance=1, **fields); `status` is shown after the bar."""
    if not enabled:
        yield lambda advance=1, **fields: None
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with progress:
        task = progress.add_task(description, total=total, completed=completed, status="")
        yield lambda advance=1, **fields: progress.update(task, advance=advance, **fields)
