"""Failed-login backoff that slows an attacker down without letting them lock anyone out; per-person limits on
chat answers (a rate, and streams open at once)."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Hashable

from cachetools import TTLCache


class LoginLimiter:
    """Login attempts per key. The first `free` failures cost nothing; after that each attempt waits twice as long as
    the one before (base_delay, 2x, 4x, ... at most max_delay), so an attacker slows down but cannot lock a key
    forever. A key is forgotten `forget` seconds after its last attempt, and at most `max_keys` are kept (the least
    recently used go first) under a fixed-size digest, so memory is bounded whatever names are tried.

    An attempt is counted when it is reserved, before the password is checked: checking first and counting after
    would let a burst of concurrent logins all pass the check before the first failure is counted."""

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
        self._attempts: TTLCache = TTLCache(maxsize=max_keys, ttl=forget, timer=clock)  # key -> (count, last time)
        self._lock = threading.Lock()

    @staticmethod
    def _key(key: Hashable) -> bytes:
        # 16 bytes whatever the key: a 100-character name can normalise to 1800 characters, times max_keys
        return hashlib.blake2b(repr(key).encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def _wait(self, count: int, last: float) -> float:
        if count < self.free:
            return 0.0
        delay = min(self.base_delay * 2 ** (count - self.free), self.max_delay)
        return max(0.0, last + delay - self.clock())

    def wait(self, key: Hashable) -> float:
        """Seconds until `key` may try again (0: now)."""
        with self._lock:
            return self._wait(*self._attempts.get(self._key(key), (0, 0.0)))

    def reserve(self, key: Hashable) -> float:
        """Count an attempt for `key` and return 0, or, while `key` backs off, count nothing and return the seconds to
        wait. Check and count happen under one lock, so concurrent attempts cannot all see a count below the limit."""
        key = self._key(key)
        with self._lock:
            count, last = self._attempts.get(key, (0, 0.0))
            wait = self._wait(count, last)
            if wait > 0:
                return wait
            self._attempts[key] = (count + 1, self.clock())
            return 0.0

    def release(self, key: Hashable) -> None:
        """Give back one reserved attempt: the password was never checked, or it was right (an address keeps its
        failures when one of its people logs in, so a sprayer cannot reset its budget with an account of its own)."""
        key = self._key(key)
        with self._lock:
            count, last = self._attempts.get(key, (0, 0.0))
            if count <= 1:
                self._attempts.pop(key, None)
            else:
                self._attempts[key] = (count - 1, last)

    def succeed(self, key: Hashable) -> None:
        """The right password for this key: it starts afresh."""
        with self._lock:
            self._attempts.pop(self._key(key), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._attempts)


class RateLimiter:
    """At most `limit` units per key in any `window` seconds (a sliding log of when each unit was taken). Keys are
    forgotten a window after their last use and at most `max_keys` are kept, so memory is bounded."""

    def __init__(
        self,
        *,
        limit: int,
        window: float = 60.0,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.limit, self.window, self.clock = limit, window, clock
        self._taken: TTLCache = TTLCache(maxsize=max_keys, ttl=window, timer=clock)  # key -> [times]
        self._lock = threading.Lock()

    def take(self, key: Hashable, cost: int = 1) -> float:
        """Take `cost` units for `key` and return 0, or take none and return the seconds until they would fit."""
        with self._lock:
            now = self.clock()
            times = [t for t in self._taken.get(key, []) if t > now - self.window]
            if len(times) + cost > self.limit:
                if cost > self.limit:
                    return self.window
                return times[len(times) + cost - self.limit - 1] + self.window - now
            self._taken[key] = times + [now] * cost
            return 0.0


class StreamSlots:
    """At most `per_key` open streams per key. A slot not given back within `stale` seconds (a stream whose
    cleanup never ran) no longer counts."""

    def __init__(self, *, per_key: int, stale: float = 900.0, clock: Callable[[], float] = time.monotonic):
        self.per_key, self.stale, self.clock = per_key, stale, clock
        self._open: dict[Hashable, dict[int, float]] = {}
        self._next = 0
        self._lock = threading.Lock()

    def acquire(self, key: Hashable) -> int | None:
        """A slot's number, or None when `key` has `per_key` open."""
        with self._lock:
            now = self.clock()
            slots = {n: t for n, t in self._open.get(key, {}).items() if now - t < self.stale}
            if len(slots) >= self.per_key:
                self._open[key] = slots
                return None
            self._next += 1
            slots[self._next] = now
            self._open[key] = slots
            return self._next

    def release(self, key: Hashable, slot: int) -> None:
        with self._lock:
            slots = self._open.get(key, {})
            slots.pop(slot, None)
            if not slots:
                self._open.pop(key, None)
