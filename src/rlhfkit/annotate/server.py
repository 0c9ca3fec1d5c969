"""`rlhf annotate serve`: one server process per SQLite file (a lock file says so), any number on PostgreSQL."""

from __future__ import annotations

import logging
import os

from filelock import FileLock, Timeout

from rlhfkit.annotate.service import ServiceError
from rlhfkit.annotate.store import sqlite_path

log = logging.getLogger("rlhfkit.annotate")


def serve(
    db: str,
    *,
    host: str,
    port: int,
    secure_cookies: bool = False,
    forwarded_allow_ips: str | None = None,
    chat_per_minute: int = 20,
) -> None:
    """Run the app with uvicorn. X-Forwarded-For is believed only from `forwarded_allow_ips` (a reverse proxy's
    addresses); otherwise the login limiter would take each client's word for its address."""
    import uvicorn

    from rlhfkit.annotate.app import create_app

    if os.environ.get("RLHFKIT_SECRET_KEY"):
        log.warning(
            "RLHFKIT_SECRET_KEY is set but no longer used: each database signs its cookies with its own key, kept in "
            "the database (unset it, and keep the database private)"
        )

    path = sqlite_path(db)  # resolved, so every spelling of the file's name shares the lock file
    if path is not None and path.exists() and path.stat().st_nlink > 1:
        # another name for the same file would have a lock file of its own
        raise ServiceError(
            f"{path} has {path.stat().st_nlink} hard links; serve a database file with one name (copy it instead)"
        )
    # SQLite's queue lock lives in one process: a second server on the same file would over-fill items
    lock = FileLock(f"{path}.lock", mode=0o600) if path is not None else None
    if lock is not None:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise ServiceError(
                f"another rlhf annotate serve uses {path}; SQLite takes one server process (use PostgreSQL for several)"
            ) from None
    try:
        app = create_app(
            db,
            secure_cookies=secure_cookies,
            forwarded_allow_ips=forwarded_allow_ips,
            chat_per_minute=chat_per_minute,
        )
        uvicorn.run(app, host=host, port=port, proxy_headers=False)  # the app reads X-Forwarded-For itself
    finally:
        if lock is not None:
            lock.release()
