"""What the app does, apart from HTTP: people, projects, the work queue, import and export."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import secrets
import threading
import unicodedata
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from datetime import timedelta
from functools import cache
from typing import Any

import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rlhfkit.annotate import names
from rlhfkit.annotate.agreement import agreement_report
from rlhfkit.annotate.store import (
    KINDS,
    ROLES,
    Annotation,
    Assignment,
    AuthSession,
    Instance,
    Item,
    Project,
    User,
    utcnow,
)
from rlhfkit.data.convert import to_ratings
from rlhfkit.data.schema import Comparison, Ranking, Rating

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("not a password")
# argon2 takes 64 MiB and a core per hash: hashes run on their own few threads, and a login waits for one without
# holding a worker thread of the app (a flood of logins would otherwise stall every route). At most HASH_QUEUE
# logins wait; more are refused at once (503, Retry-After).
HASH_SLOTS = 4
HASH_QUEUE = 32
_hash_threads = ThreadPoolExecutor(HASH_SLOTS, thread_name_prefix="rlhfkit-argon2")
_hash_admission = threading.BoundedSemaphore(HASH_SLOTS + HASH_QUEUE)  # hashing or waiting to
_sqlite_queue_lock = threading.Lock()  # SQLite has no row locks; one lease decision at a time
LABELS = ("a", "b", "tie", "both_bad")
FLAGS = ("incorrect", "unsafe", "private_data")
SESSION_LIFETIME = timedelta(hours=12)
PURGE_BATCH = 1000  # dead sessions deleted per login
PASSWORD_RULE = (
    "a password needs at least 8 characters, not your name and not a common password, and must be hard to guess "
    "(zxcvbn strength 3 of 4, e.g. three or four unrelated words)"
)
MIN_PASSWORD_SCORE = 3  # zxcvbn: about 10^8 guesses or more
# control, format (bidirectional overrides, zero-width), surrogate, private-use, unassigned, line/paragraph separators
_UNSAFE_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


class ServiceError(ValueError):
    """A request that cannot be done, with an HTTP-like status (and headers for the response, e.g. Retry-After)."""

    def __init__(self, message: str, status: int = 400, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers


# --- people ---


def _add_unique(db: Session, row, conflict: str) -> None:
    """Add and commit `row`; a unique-constraint violation becomes a 409 with `conflict` as the message."""
    db.add(row)
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
        raise ServiceError(conflict, 409) from None


def name_key(name: str) -> str:
    """What makes two names the same name: compatibility forms, case and look-alike letters (names.skeleton)."""
    return names.skeleton(name)


def clean_name(name: str, *, what: str, max_length: int) -> str:
    """A name as stored (NFKC, trimmed), or a 400 for an empty, long or deceptive one."""
    name = unicodedata.normalize("NFKC", name).strip()
    if not 1 <= len(name) <= max_length:
        raise ServiceError(f"{what} must be 1-{max_length} characters")
    bad = next((c for c in name if unicodedata.category(c) in _UNSAFE_CATEGORIES), None)
    if bad is not None:
        raise ServiceError(f"{what} must not hold control or bidirectional-override characters (U+{ord(bad):04X})")
    bad = names.invisible_character(name)
    if bad is not None:
        raise ServiceError(f"{what} must not hold invisible characters or unusual spaces (U+{ord(bad):04X})")
    return name


@cache
def _common_passwords() -> frozenset[str]:
    # zxcvbn ships the most common passwords of public breaches, most frequent first
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(p for p in FREQUENCY_LISTS["passwords"][:10000] if len(p) >= 8)


def check_password(name: str, password: str) -> None:
    if (
        not 8 <= len(password) <= 1000
        or not password.strip()
        or name_key(password) == name_key(name)
        or password.casefold() in _common_passwords()
    ):
        raise ServiceError(PASSWORD_RULE)
    from zxcvbn import zxcvbn

    # zxcvbn takes at most 72 characters (its time grows fast with length); 72 it cannot guess are plenty
    result = zxcvbn(password[:72], user_inputs=[name])
    if result["score"] < MIN_PASSWORD_SCORE:
        hint = result["feedback"]["warning"]
        raise ServiceError(f"{PASSWORD_RULE}{f': {hint}' if hint else ''}")


def create_user(db: Session, name: str, password: str, role: str) -> User:
    if role not in ROLES:
        raise ServiceError(f"role must be one of {', '.join(ROLES)}")
    name = clean_name(name, what="name", max_length=100)
    check_password(name, password)
    user = User(name=name, name_key=name_key(name), password_hash=_hasher.hash(password), role=role)
    _add_unique(db, user, f"user {name!r} exists")
    return user


def find_user(db: Session, name: str) -> User | None:
    """By exact name first (a look-alike kept from before names were normalised), then by normalised name."""
    return db.scalar(select(User).where(User.name == name)) or db.scalar(
        select(User).where(User.name_key == name_key(name))
    )


def get_user(db: Session, user_id: int) -> User:
    user = db.get(User, user_id)
    if user is None:
        raise ServiceError("no such user", 404)
    return user


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def verify_password(password_hash: str, password: str) -> bool:
    """Check a password on the hashing threads; the caller waits without holding a thread. A 503 (Retry-After: 1)
    when HASH_QUEUE logins are already waiting."""
    if not _hash_admission.acquire(blocking=False):
        raise ServiceError("the server is busy checking other logins; try again in a second", 503, {"Retry-After": "1"})
    future = _hash_threads.submit(_verify, password_hash, password)
    future.add_done_callback(lambda _: _hash_admission.release())  # also when cancelled before it ran
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        future.cancel()  # the client went away: leave the queue if the hash has not started
        raise


def _login_candidate(db: Session, name: str) -> tuple[User | None, str]:
    user = find_user(db, name)
    db.commit()  # the connection goes back to the pool while the hash is computed (the objects stay loaded)
    return user, user.password_hash if user else _DUMMY_HASH


async def authenticate(db: Session, name: str, password: str) -> User | None:
    """The enabled person with this name and password, or None; the same work whether or not the person exists."""
    user, password_hash = await anyio.to_thread.run_sync(_login_candidate, db, name)
    ok = await verify_password(password_hash, password)
    return user if ok and user is not None and not user.disabled else None


def set_disabled(db: Session, user: User, *, disabled: bool) -> None:
    """A disabled person cannot log in; disabling ends their sessions and hands their leases back."""
    user.disabled = disabled
    if disabled:
        now = utcnow()
        db.execute(
            update(AuthSession)
            .where(AuthSession.user_id == user.id, AuthSession.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        db.execute(
            update(Assignment)
            .where(Assignment.user_id == user.id, Assignment.status == "leased", Assignment.expires_at > now)
            .values(expires_at=now)
        )
    db.commit()


# --- sessions ---


def instance(db: Session) -> Instance:
    """This database's id and cookie key (made by migration 0002)."""
    return db.get(Instance, 1)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(db: Session, user: User) -> str:
    """A new session for `user`; the returned token goes into the (signed) cookie. Ended and expired sessions are
    deleted on the way, a batch at a time (no lookup needs them: a missing session is no session)."""
    stale = (
        select(AuthSession.id)
        .where(or_(AuthSession.revoked_at.is_not(None), AuthSession.created_at < utcnow() - SESSION_LIFETIME))
        .limit(PURGE_BATCH)
    )
    db.execute(delete(AuthSession).where(AuthSession.id.in_(stale)))
    token = secrets.token_urlsafe(32)
    db.add(AuthSession(id=_digest(token), user_id=user.id))
    db.commit()
    return token


def session_user(db: Session, token: str) -> User | None:
    """The live, enabled person of a live session, or None."""
    row = db.get(AuthSession, _digest(token))
    now = utcnow()
    if row is None or row.revoked_at is not None or now - row.created_at > SESSION_LIFETIME or row.user.disabled:
        return None
    if now - row.last_seen_at > timedelta(minutes=1):  # not a write on every request
        row.last_seen_at = now
        db.commit()
    return row.user


def end_session(db: Session, token: str) -> None:
    row = db.get(AuthSession, _digest(token))
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
        db.commit()


# --- projects and items ---


def create_project(db: Session, name: str, *, overlap: int = 1, lease_seconds: int = 1800) -> Project:
    name = clean_name(name, what="project name", max_length=200)
    if not 1 <= overlap <= 50 or not 30 <= lease_seconds <= 7 * 24 * 3600:
        raise ServiceError("overlap must be 1-50 and lease_seconds 30-604800")
    project = Project(name=name, name_key=name_key(name), overlap=overlap, lease_seconds=lease_seconds)
    _add_unique(db, project, f"project {name!r} exists")
    return project


def find_project(db: Session, name: str) -> Project | None:
    return db.scalar(select(Project).where(Project.name == name)) or db.scalar(
        select(Project).where(Project.name_key == name_key(name))
    )


def projects(db: Session) -> list[Project]:
    return list(db.scalars(select(Project).order_by(Project.id)))


def users(db: Session) -> list[User]:
    return list(db.scalars(select(User).order_by(User.name)))


def get_project(db: Session, project_id: int) -> Project:
    project = db.get(Project, project_id)
    if project is None:
        raise ServiceError("no such project", 404)
    return project


def plain(text: Any) -> Any:
    """A text as stored and shown: a string, or messages with only their role and content. The data layer keeps
    messages as given; any other key (of any depth) would reach every annotator's page and every export."""
    if isinstance(text, list):
        return [{"role": m["role"], "content": m["content"]} for m in text]
    return text


def import_records(db: Session, project: Project, records: list, *, leftover: list | None = None) -> Counter:
    """Questions become gold-answer tasks (a prompt with one answer: a draft to edit); a prompt with 2 distinct
    answers a comparison, with more a ranking task. Samples that were several but are all the same text are not
    imported (counted as "one_answer"; with `leftover`, their prompts are appended to it): a gold task would waste
    a judgement the samples were meant for, so they are to be sampled again. `records` are data-layer records
    (validated by rlhfkit.data)."""
    from rlhfkit.data.schema import Generations, Ranking, SFTRecord

    made: Counter = Counter()
    for r in records:
        if isinstance(r, SFTRecord):  # a question with a draft answer to edit
            db.add(Item(project_id=project.id, kind="gold", prompt=plain(r.prompt), responses=[r.completion]))
            made["gold"] += 1
        elif isinstance(r, (Generations, Ranking)):
            # duplicates dropped; a response given as a message list stays one
            responses = list({json.dumps(x, sort_keys=True): x for x in map(plain, r.responses)}.values())
            if len(responses) == 1 and len(r.responses) > 1:
                made["one_answer"] += 1
                if leftover is not None:
                    leftover.append(r.prompt)
                continue
            kind = "gold" if len(responses) < 2 else "compare" if len(responses) == 2 else "rank"
            db.add(Item(project_id=project.id, kind=kind, prompt=plain(r.prompt), responses=responses))
            made[kind] += 1
        else:
            raise ServiceError(f"cannot import {type(r).__name__} records: give questions or prompts with answers")
    db.commit()
    return made


# --- the queue ---


def current_assignment(db: Session, project: Project, user: User) -> Assignment | None:
    """The person's live lease in this project, if any (reads only)."""
    return db.scalar(
        select(Assignment)
        .join(Item)
        .where(
            Item.project_id == project.id,
            Assignment.user_id == user.id,
            Assignment.status == "leased",
            Assignment.expires_at > utcnow(),
        )
    )


def _open_items(project: Project, user: User, now, excluded: list[int]):
    """Items of the project that still need annotators and that the person has not done or skipped, the closest to
    done first (so finished labels accumulate)."""
    done = select(func.count()).select_from(Annotation).where(Annotation.item_id == Item.id).scalar_subquery()
    leased = (
        select(func.count())
        .select_from(Assignment)
        .where(Assignment.item_id == Item.id, Assignment.status == "leased", Assignment.expires_at > now)
        .scalar_subquery()
    )
    mine = select(Assignment.item_id).where(Assignment.user_id == user.id, Assignment.status.in_(("done", "skipped")))
    return (
        select(Item)
        .where(
            Item.project_id == project.id,
            done + leased < project.overlap,
            Item.id.not_in(mine),
            Item.id.not_in(excluded),
        )
        .order_by(done.desc(), Item.id)
    )


def has_work(db: Session, project: Project, user: User) -> bool:
    """Whether `next_assignment` would find something now (reads only)."""
    return db.scalar(_open_items(project, user, utcnow(), []).limit(1)) is not None


def next_assignment(db: Session, project: Project, user: User) -> Assignment | None:
    """The person's live lease in this project, or a new one: one live lease per person and project, decided under
    the same lock as the lease itself (the SQLite lock, or the person's row locked in PostgreSQL), so concurrent
    calls from one person cannot hoard items."""
    postgresql = db.get_bind().dialect.name == "postgresql"
    with nullcontext() if postgresql else _sqlite_queue_lock:
        if postgresql:
            db.execute(select(User.id).where(User.id == user.id).with_for_update())
        current = current_assignment(db, project, user)
        if current is not None:
            db.commit()  # ends the transaction, and so the row lock
            return current
        now = utcnow()
        excluded: list[int] = []
        while True:
            query = _open_items(project, user, now, excluded).limit(1)
            if postgresql:
                query = query.with_for_update(skip_locked=True, of=Item)
            item = db.scalar(query)
            if item is None:
                db.rollback()
                return None
            # The capacity test above may have read counts from before a concurrent lease committed; with the item
            # row now locked, count again.
            taken = db.scalar(
                select(func.count()).select_from(Annotation).where(Annotation.item_id == item.id)
            ) + db.scalar(
                select(func.count())
                .select_from(Assignment)
                .where(Assignment.item_id == item.id, Assignment.status == "leased", Assignment.expires_at > now)
            )
            if taken < project.overlap:
                break
            excluded.append(item.id)
        order = list(range(len(item.responses)))
        if item.kind in ("compare", "rank"):
            random.Random(f"{user.id}:{item.id}").shuffle(order)  # each person sees their own order
        expires = now + timedelta(seconds=project.lease_seconds)
        existing = db.scalar(select(Assignment).where(Assignment.item_id == item.id, Assignment.user_id == user.id))
        if existing is not None:  # an expired lease of theirs: lease it again
            existing.status, existing.leased_at, existing.expires_at, existing.order = "leased", now, expires, order
            assignment = existing
        else:
            assignment = Assignment(item_id=item.id, user_id=user.id, order=order, leased_at=now, expires_at=expires)
            db.add(assignment)
        db.commit()
        return assignment


def own_assignment(db: Session, assignment_id: int, user: User) -> Assignment:
    a = db.get(Assignment, assignment_id)
    if a is None or a.user_id != user.id:
        raise ServiceError("no such assignment", 404)
    return a


def submit(db: Session, assignment: Assignment, data: dict[str, Any]) -> Annotation:
    """Validate and store one judgement. Labels and ranks arrive in the order shown and are stored in the item's
    order, with the order shown kept beside them."""
    item = assignment.item
    if assignment.status == "done":
        raise ServiceError("already submitted", 409)
    if assignment.status == "skipped":
        raise ServiceError("this item was skipped", 409)
    if assignment.expires_at <= utcnow():  # the item may have gone to someone else since
        raise ServiceError("your lease on this item expired, so your answer was not stored; take the next item", 409)
    order = assignment.order
    flags = data.get("flags") or []
    if not isinstance(flags, list) or any(f not in FLAGS for f in flags) or len(set(flags)) != len(flags):
        raise ServiceError(f"flags must be a list of distinct flags from {', '.join(FLAGS)}")
    reason = data.get("reason") or ""
    if not isinstance(reason, str) or len(reason) > 2000:
        raise ServiceError("reason must be text of at most 2000 characters")
    if item.kind == "gold":
        answer = data.get("answer")
        if not isinstance(answer, str) or not answer.strip() or len(answer) > 10000:
            raise ServiceError("answer must be non-empty text of at most 10000 characters")
        payload: dict[str, Any] = {"answer": answer.strip()}
    elif item.kind == "compare":
        label = data.get("label")
        if label not in LABELS:
            raise ServiceError(f"label must be one of {', '.join(LABELS)}")
        if label in ("a", "b"):  # shown A is item response order[0]
            shown = 0 if label == "a" else 1
            label = "a" if order[shown] == 0 else "b"
        payload = {"label": label}
    else:
        all_bad = bool(data.get("all_bad"))
        ranks = data.get("ranks")
        if all_bad and ranks is None:
            ranks = [1] * len(order)
        if (
            not isinstance(ranks, list)
            or len(ranks) != len(order)
            or any(isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= len(order) for r in ranks)
        ):
            raise ServiceError(f"ranks must be {len(order)} integers from 1 to {len(order)} (equal ranks are ties)")
        in_item_order = [0] * len(order)
        for shown, rank in enumerate(ranks):
            in_item_order[order[shown]] = rank
        payload = {"ranks": in_item_order, "all_bad": all_bad}
    annotation = Annotation(
        item_id=item.id,
        user_id=assignment.user_id,
        kind=item.kind,
        payload=payload,
        shown_order=order,
        reason=reason,
        flags=flags,
    )
    assignment.status = "done"
    _add_unique(db, annotation, "already submitted")
    return annotation


def skip(db: Session, assignment: Assignment) -> None:
    """The item goes back to the queue for others."""
    if assignment.status != "leased":
        raise ServiceError(f"cannot skip an assignment that is {assignment.status}", 409)
    assignment.status = "skipped"
    db.commit()


def view(assignment: Assignment) -> dict[str, Any]:
    """What the annotator sees: the prompt and the answers in their order; never a model name or others' work."""
    item = assignment.item  # plain(): items imported before import dropped other keys
    return {
        "assignment_id": assignment.id,
        "kind": item.kind,
        "prompt": plain(item.prompt),
        "responses": [plain(item.responses[i]) for i in assignment.order] if item.kind != "gold" else [],
        "draft": plain(item.responses[0]) if item.kind == "gold" and item.responses else "",
        "expires_at": assignment.expires_at.isoformat() + "Z",
    }


def progress(db: Session, project: Project) -> dict[str, Any]:
    items = db.scalar(select(func.count()).select_from(Item).where(Item.project_id == project.id)) or 0
    per_item = db.execute(
        select(Annotation.item_id, func.count())
        .join(Item)
        .where(Item.project_id == project.id)
        .group_by(Annotation.item_id)
    ).all()
    per_user = db.execute(
        select(User.name, func.count())
        .join(Annotation, Annotation.user_id == User.id)
        .join(Item)
        .where(Item.project_id == project.id)
        .group_by(User.name)
    ).all()
    complete = sum(1 for _, n in per_item if n >= project.overlap)
    return {
        "project": project.name,
        "items": items,
        "overlap": project.overlap,
        "complete_items": complete,
        "annotations": sum(n for _, n in per_item),
        "per_person": {name: n for name, n in per_user},
    }


# --- export ---


def export(db: Session, project: Project | None, fmt: str, *, exclude_flagged: bool = False) -> list[dict[str, Any]]:
    """Records in the formats of rlhfkit.data (one per person's judgement), with pseudonymous annotator ids and the
    person's flags; `exclude_flagged` leaves out every judgement with a flag. "preferences" is every A/B vote (as a
    comparison) and every ranking (as a ranking) in one file, so nothing a person judged is left out. The chat
    page's thumbs and corrections and the arena's votes follow the task judgements (chat.export_rows)."""
    from rlhfkit.annotate import chat  # chat builds on this module

    query = select(Annotation).join(Item).order_by(Annotation.id)
    if project is not None:
        query = query.where(Item.project_id == project.id)
    rows: list[dict[str, Any]] = []
    for ann in db.scalars(query):
        if exclude_flagged and ann.flags:
            continue
        item, who = ann.item, ann.user.pseudonym
        prompt, responses = plain(item.prompt), [plain(r) for r in item.responses]  # as view() shows them
        extra = {"annotator": who, "flags": list(ann.flags)}
        if fmt == "sft" and ann.kind == "gold":
            rows.append({"prompt": prompt, "completion": ann.payload["answer"], **extra})
        elif fmt in ("comparisons", "preferences") and ann.kind == "compare":
            rows.append(
                {
                    "prompt": prompt,
                    "response_a": responses[0],
                    "response_b": responses[1],
                    "label": ann.payload["label"],
                    **extra,
                }
            )
        elif fmt in ("rankings", "preferences") and ann.kind == "rank":
            row = {"prompt": prompt, "responses": responses, "ranks": ann.payload["ranks"], **extra}
            if ann.payload.get("all_bad"):
                row["not_rankable"] = True
            rows.append(row)
        elif fmt == "ratings" and ann.kind in ("compare", "rank"):  # thumbs up / down for KTO
            if ann.kind == "rank" and ann.payload.get("all_bad"):
                ratings = [Rating(prompt, r, "bad") for r in responses]
            elif ann.kind == "rank":
                ratings = to_ratings([Ranking(prompt, responses, ann.payload["ranks"])])[0]
            else:
                ratings = to_ratings([Comparison(prompt, responses[0], responses[1], ann.payload["label"])])[0]
            rows += [{**r.to_dict(), **extra} for r in ratings]
        elif fmt == "pairs" and ann.kind in ("compare", "rank"):
            if ann.kind == "compare":
                label = ann.payload["label"]
                if label in ("a", "b"):
                    win, lose = (0, 1) if label == "a" else (1, 0)
                    rows.append(
                        {
                            "prompt": prompt,
                            "chosen": responses[win],
                            "rejected": responses[lose],
                            **extra,
                        }
                    )
            elif not ann.payload.get("all_bad"):
                ranks = ann.payload["ranks"]
                for i in range(len(ranks)):
                    for j in range(len(ranks)):
                        if ranks[i] < ranks[j]:
                            rows.append(
                                {
                                    "prompt": prompt,
                                    "chosen": responses[i],
                                    "rejected": responses[j],
                                    **extra,
                                }
                            )
    return rows + chat.export_rows(db, project, fmt)


def project_stats(db: Session, project: Project) -> dict[str, Any]:
    """Agreement on the project's A/B comparisons, by item."""
    units: dict[int, dict[str, str]] = defaultdict(dict)
    rows = db.execute(
        select(Annotation.item_id, User.pseudonym, Annotation.payload)
        .join(User)
        .join(Item)
        .where(Item.project_id == project.id, Annotation.kind == "compare")
    )
    for item_id, who, payload in rows:
        units[item_id][who] = payload["label"]
    return agreement_report(units)


# preferences: every A/B and ranking judgement in the form it was given (comparisons and rankings in one file)
EXPORT_FORMATS = ("sft", "pairs", "comparisons", "rankings", "preferences", "ratings")
assert set(KINDS) == {"gold", "compare", "rank"}
