"""Failed-login backoff that slows an attacker down without letting them lock anyone out."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable

from cachetools import TTLCache


class LoginLimiter:
    """Failed logins per key. The first `free` failures cost nothing; after that each attempt waits twice as long as
    the one before (base_delay, 2x, 4x, ... at most max_delay), so an attacker slows down but cannot lock a key
    forever. A key is forgotten `forget` seconds after its last failure, and at most `max_keys` are kept (the least
    recently used go first), so memory is bounded whatever names are tried."""

    def __init__(
        self,
        *,
        free: int = 5,
        base_delay: float = 1.0,
        max_delay: float = 900.0,
        forget: float = 24 * 3600.0,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.free, self.base_delay, self.max_delay, self.clock = free, base_delay, max_delay, clock
        self._failures: TTLCache = TTLCache(maxsize=max_keys, ttl=forget, timer=clock)  # key -> (count, last time)
        self._lock = threading.Lock()

    def wait(self, key: Hashable) -> float:
        """Seconds until `key` may try again (0: now)."""
        with self._lock:
            count, last = self._failures.get(key, (0, 0.0))
        if count < self.free:
            return 0.0
        delay = min(self.base_delay * 2 ** (count - self.free), self.max_delay)
        return max(0.0, last + delay - self.clock())

    def fail(self, key: Hashable) -> None:
        with self._lock:
            count, _ = self._failures.get(key, (0, 0.0))
            self._failures[key] = (count + 1, self.clock())

    def succeed(self, key: Hashable) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._failures)
