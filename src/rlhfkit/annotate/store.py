"""Database models (SQLAlchemy 2) and the engine. The schema is created and upgraded by Alembic migrations
(annotate/migrations), applied when the app or a command opens the database."""

from __future__ import annotations

import json
import logging
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

log = logging.getLogger("rlhfkit.annotate")
KINDS = ("gold", "compare", "rank")
ROLES = ("admin", "annotator")


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Instance(Base):
    """One row: this database's own id (named in every session cookie) and the key that signs its cookies, so two
    instances never accept each other's cookies. Both are made by the migration that adds the table."""

    __tablename__ = "instance"
    id: Mapped[int] = mapped_column(primary_key=True)
    database_id: Mapped[str] = mapped_column(String(64))
    secret_key: Mapped[str] = mapped_column(String(128))


class User(Base):
    __tablename__ = "users"
    __table_args__ = {"sqlite_autoincrement": True}  # a deleted person's id is never given to someone else
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    name_key: Mapped[str] = mapped_column(String(400), unique=True)  # NFKC, case-folded: "Bob" and "ｂｏｂ" are bob
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20))
    pseudonym: Mapped[str] = mapped_column(String(40), unique=True, default=lambda: f"ann-{secrets.token_hex(4)}")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class AuthSession(Base):
    """A login. The cookie holds a random token; only its SHA-256 is stored, so a copy of the database opens no
    session. Logout and disabling a person set revoked_at."""

    __tablename__ = "auth_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 hex of the cookie's token
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    user: Mapped[User] = relationship()


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    name_key: Mapped[str] = mapped_column(String(800), unique=True)
    overlap: Mapped[int] = mapped_column(Integer, default=1)  # annotators needed per item
    lease_seconds: Mapped[int] = mapped_column(Integer, default=1800)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    items: Mapped[list[Item]] = relationship(back_populates="project")


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    kind: Mapped[str] = mapped_column(String(10))  # gold | compare | rank
    prompt: Mapped[Any] = mapped_column(JSON)  # a string or a message list
    responses: Mapped[list] = mapped_column(JSON, default=list)  # candidate answers (gold: an optional draft)
    source: Mapped[Any] = mapped_column(JSON, nullable=True)  # where it came from (model names): admins only
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    project: Mapped[Project] = relationship(back_populates="items")


class Assignment(Base):
    """One person's lease on one item; the unique key means no one gets the same item twice."""

    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("item_id", "user_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    status: Mapped[str] = mapped_column(String(10), default="leased")  # leased | done | skipped
    order: Mapped[list] = mapped_column(JSON, default=list)  # response indices in the order shown
    leased_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    item: Mapped[Item] = relationship()


class Annotation(Base):
    __tablename__ = "annotations"
    __table_args__ = (UniqueConstraint("item_id", "user_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(String(10))
    # gold: {"answer"}; compare: {"label": a|b|tie|both_bad} about the item's response order; rank: {"ranks",
    # "all_bad"} in the item's response order
    payload: Mapped[dict] = mapped_column(JSON)
    shown_order: Mapped[list] = mapped_column(JSON, default=list)
    reason: Mapped[str] = mapped_column(Text, default="")
    flags: Mapped[list] = mapped_column(JSON, default=list)  # incorrect | unsafe | private_data
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    user: Mapped[User] = relationship()
    item: Mapped[Item] = relationship()


class ChatModel(Base):
    """A model people chat with in a project: an OpenAI-compatible endpoint (`rlhf serve`, vLLM, ...). Admins only:
    the browser never gets the base URL or the key. `name` is what feedback, arena votes and the leaderboard record;
    `model` is what the endpoint is asked for."""

    __tablename__ = "chat_models"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    base_url: Mapped[str] = mapped_column(String(500))
    model: Mapped[str] = mapped_column(String(200))
    api_key: Mapped[str | None] = mapped_column(String(500), nullable=True)
    max_tokens: Mapped[int] = mapped_column(Integer, default=512)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ChatTurn(Base):
    """One answer a model gave one person on the chat page, as the server received it (the browser never tells the
    server what the answer was), and that person's thumbs up/down and optional correction."""

    __tablename__ = "chat_turns"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    model: Mapped[str] = mapped_column(String(200))  # ChatModel.name at the time
    messages: Mapped[list] = mapped_column(JSON)  # the prompt: the conversation up to the person's question
    answer: Mapped[str] = mapped_column(Text)
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)  # cut at the size cap
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    label: Mapped[str | None] = mapped_column(String(10), nullable=True)  # good | bad
    correction: Mapped[str | None] = mapped_column(Text, nullable=True)
    rated_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    user: Mapped[User] = relationship()


class ArenaBattle(Base):
    """Two models' answers to one question, shown blind as A and B (model_a was on the left), and the vote."""

    __tablename__ = "arena_battles"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    messages: Mapped[list] = mapped_column(JSON)
    model_a: Mapped[str] = mapped_column(String(200))
    model_b: Mapped[str] = mapped_column(String(200))
    answer_a: Mapped[str] = mapped_column(Text)
    answer_b: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    label: Mapped[str | None] = mapped_column(String(10), nullable=True)  # a | b | tie | both_bad, as shown
    voted_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    user: Mapped[User] = relationship()


def normalize_url(url: str) -> str:
    """A path becomes a SQLite URL; postgresql:// uses psycopg 3."""
    if "://" not in url:
        return f"sqlite:///{Path(url).resolve()}"
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def make_engine(url: str):
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(conn, _):  # concurrent readers while one writes; enforce foreign keys
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def migrate(url: str) -> None:
    """Apply every Alembic migration (idempotent)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    command.upgrade(cfg, "head")


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite database, resolved (symlinks, `..`, the working directory), whatever the URL's driver
    (`sqlite://`, `sqlite+pysqlite://`, ...) or form (`file:` URIs); None for another database or SQLite in memory."""
    parsed = make_url(normalize_url(url))
    database = parsed.database
    if parsed.get_backend_name().lower() != "sqlite" or database in (None, "", ":memory:"):
        return None
    if parsed.query.get("uri") == "true" and database.startswith("file:"):
        uri = urlsplit(database)
        if parsed.query.get("mode") == "memory" or "mode=memory" in uri.query:
            return None
        database = unquote(uri.path)
    return Path(database).resolve()


def _make_private(path: Path) -> None:
    """Owner-only modes for an existing database and SQLite's -wal and -shm files: a file made before new ones were
    0600, or copied under a umask of 022, holds password hashes and (since migration 0002) the cookie key."""
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = p.stat().st_mode & 0o777
            if mode & 0o077:
                p.chmod(0o600)
                log.warning("%s was readable by others (mode %04o); it is now 0600", p, mode)
        except FileNotFoundError:
            pass
        except PermissionError:  # someone else's file: say so, and go on
            log.warning("%s is readable by others and is not ours to chmod: make it 0600", p)


def open_db(url: str):
    """Migrate, then return a session factory. A new SQLite file is created readable by its owner only (it holds
    password hashes and the cookie key), and an existing one is made so; SQLite gives its -wal and -shm files the
    database's mode."""
    path = sqlite_path(url)
    if path is not None:
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        _make_private(path)
    migrate(url)
    return sessionmaker(make_engine(url), expire_on_commit=False)


def dumps(x: Any) -> str:
    return json.dumps(x, ensure_ascii=False)
