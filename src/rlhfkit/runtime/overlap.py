"""Two independent pieces of work side by side on a CPU: one on the calling thread, one on a helper thread, the
cores split between them.

At small sizes a matmul's work does not split well over many cores (thread start-up and synchronisation cost as
much as the arithmetic), so two independent models each on half the cores finish sooner than one after the other on
all of them. PyTorch releases the GIL inside its operators, and autograd may run backward passes from several
threads at once as long as their graphs are separate.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

import torch

A = TypeVar("A")
B = TypeVar("B")


class SideBySide:
    """`run(main, side)` returns (main(), side()). Enabled, side() runs on a helper thread at the same time and
    each gets half the intra-op threads (OpenMP's thread count is per calling thread); disabled, or with fewer
    than two threads, they run one after the other on the calling thread."""

    def __init__(self, enabled: bool):
        self.threads = torch.get_num_threads()
        on = enabled and self.threads >= 2
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rlhfkit-side") if on else None

    def run(self, main: Callable[[], A], side: Callable[[], B]) -> tuple[A, B]:
        if self._pool is None:
            return main(), side()
        half = self.threads // 2

        def on_helper() -> B:
            torch.set_num_threads(half)
            return side()

        future = self._pool.submit(on_helper)
        torch.set_num_threads(half)
        try:
            first = main()
        finally:
            wait([future])  # no work outlives the call; if main failed, its error is the one reported
            torch.set_num_threads(self.threads)
        return first, future.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> SideBySide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
