"""What the app does, apart from HTTP: people, projects, the work queue, import and export."""

from __future__ import annotations

import random
import threading
from collections import Counter
from datetime import timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rlhfkit.annotate.store import KINDS, ROLES, Annotation, Assignment, Item, Project, User, utcnow

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("not a password")
_sqlite_queue_lock = threading.Lock()  # SQLite has no row locks; one lease decision at a time
LABELS = ("a", "b", "tie", "both_bad")
FLAGS = ("incorrect", "unsafe", "private_data")


class ServiceError(ValueError):
    """A request that cannot be done, with an HTTP-like status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# --- people ---


def _add_unique(db: Session, row, conflict: str) -> None:
    """Add and commit `row`; a unique-constraint violation becomes a 409 with `conflict` as the message."""
    db.add(row)
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
        raise ServiceError(conflict, 409) from None


def create_user(db: Session, name: str, password: str, role: str) -> User:
    if role not in ROLES:
        raise ServiceError(f"role must be one of {', '.join(ROLES)}")
    if not name.strip() or len(name) > 100:
        raise ServiceError("name must be 1-100 characters")
    if len(password) < 8:
        raise ServiceError("password must be at least 8 characters")
    user = User(name=name.strip(), password_hash=_hasher.hash(password), role=role)
    _add_unique(db, user, f"user {name!r} exists")
    return user


def authenticate(db: Session, name: str, password: str) -> User | None:
    user = db.scalar(select(User).where(User.name == name))
    try:
        _hasher.verify(
            user.password_hash if user else _DUMMY_HASH, password
        )  # same work whether or not the user exists
    except (VerificationError, InvalidHashError):
        return None
    return user


# --- projects and items ---


def create_project(db: Session, name: str, *, overlap: int = 1, lease_seconds: int = 1800) -> Project:
    if not name.strip():
        raise ServiceError("project name is required")
    if not 1 <= overlap <= 50 or not 30 <= lease_seconds <= 7 * 24 * 3600:
        raise ServiceError("overlap must be 1-50 and lease_seconds 30-604800")
    project = Project(name=name.strip(), overlap=overlap, lease_seconds=lease_seconds)
    _add_unique(db, project, f"project {name!r} exists")
    return project


def get_project(db: Session, project_id: int) -> Project:
    project = db.get(Project, project_id)
    if project is None:
        raise ServiceError("no such project", 404)
    return project


def import_records(db: Session, project: Project, records: list) -> Counter:
    """Questions become gold-answer tasks; a prompt with 2 answers a comparison, with more a ranking task.
    `records` are data-layer records (validated by rlhfkit.data)."""
    from rlhfkit.data.schema import Generations, Ranking, SFTRecord

    made: Counter = Counter()
    for r in records:
        if isinstance(r, SFTRecord):  # a question with a draft answer to edit
            db.add(Item(project_id=project.id, kind="gold", prompt=r.prompt, responses=[r.completion]))
            made["gold"] += 1
        elif isinstance(r, (Generations, Ranking)):
            responses = list(dict.fromkeys(x if isinstance(x, str) else str(x) for x in r.responses))
            kind = "gold" if len(responses) < 2 else "compare" if len(responses) == 2 else "rank"
            db.add(
                Item(
                    project_id=project.id,
                    kind=kind,
                    prompt=r.prompt,
                    responses=responses[:1] if kind == "gold" else responses,
                )
            )
            made[kind] += 1
        else:
            raise ServiceError(f"cannot import {type(r).__name__} records: give questions or prompts with answers")
    db.commit()
    return made


# --- the queue ---


def _active(a: Assignment, now) -> bool:
    return a.status == "leased" and a.expires_at > now


def next_assignment(db: Session, project: Project, user: User) -> Assignment | None:
    """The person's current lease in this project, or a new one on an item that still needs annotators, that they
    have not done or skipped. Items closest to done come first, so finished labels accumulate."""
    now = utcnow()
    current = db.scalar(
        select(Assignment)
        .join(Item)
        .where(
            Item.project_id == project.id,
            Assignment.user_id == user.id,
            Assignment.status == "leased",
            Assignment.expires_at > now,
        )
    )
    if current is not None:
        return current
    lock = _sqlite_queue_lock if db.get_bind().dialect.name == "sqlite" else None
    if lock:
        lock.acquire()
    try:
        done = select(func.count()).select_from(Annotation).where(Annotation.item_id == Item.id).scalar_subquery()
        leased = (
            select(func.count())
            .select_from(Assignment)
            .where(Assignment.item_id == Item.id, Assignment.status == "leased", Assignment.expires_at > now)
            .scalar_subquery()
        )
        mine = select(Assignment.item_id).where(
            Assignment.user_id == user.id, Assignment.status.in_(("done", "skipped"))
        )
        excluded: list[int] = []
        while True:
            query = (
                select(Item)
                .where(
                    Item.project_id == project.id,
                    done + leased < project.overlap,
                    Item.id.not_in(mine),
                    Item.id.not_in(excluded),
                )
                .order_by(done.desc(), Item.id)
                .limit(1)
            )
            if db.get_bind().dialect.name == "postgresql":
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
    finally:
        if lock:
            lock.release()


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
    order = assignment.order
    flags = data.get("flags") or []
    if not isinstance(flags, list) or any(f not in FLAGS for f in flags):
        raise ServiceError(f"flags must be a list of {', '.join(FLAGS)}")
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
    item = assignment.item
    return {
        "assignment_id": assignment.id,
        "kind": item.kind,
        "prompt": item.prompt,
        "responses": [item.responses[i] for i in assignment.order] if item.kind != "gold" else [],
        "draft": item.responses[0] if item.kind == "gold" and item.responses else "",
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


def export(db: Session, project: Project | None, fmt: str) -> list[dict[str, Any]]:
    """Records in the formats of rlhfkit.data (one per person's judgement), with pseudonymous annotator ids."""
    query = select(Annotation).join(Item).order_by(Annotation.id)
    if project is not None:
        query = query.where(Item.project_id == project.id)
    rows: list[dict[str, Any]] = []
    for ann in db.scalars(query):
        item, who = ann.item, ann.user.pseudonym
        extra = {"annotator": who}
        if fmt == "sft" and ann.kind == "gold":
            rows.append({"prompt": item.prompt, "completion": ann.payload["answer"], **extra})
        elif fmt == "comparisons" and ann.kind == "compare":
            rows.append(
                {
                    "prompt": item.prompt,
                    "response_a": item.responses[0],
                    "response_b": item.responses[1],
                    "label": ann.payload["label"],
                    **extra,
                }
            )
        elif fmt == "rankings" and ann.kind == "rank":
            row = {"prompt": item.prompt, "responses": item.responses, "ranks": ann.payload["ranks"], **extra}
            if ann.payload.get("all_bad"):
                row["not_rankable"] = True
            rows.append(row)
        elif fmt == "pairs" and ann.kind in ("compare", "rank"):
            if ann.kind == "compare":
                label = ann.payload["label"]
                if label in ("a", "b"):
                    win, lose = (0, 1) if label == "a" else (1, 0)
                    rows.append(
                        {
                            "prompt": item.prompt,
                            "chosen": item.responses[win],
                            "rejected": item.responses[lose],
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
                                    "prompt": item.prompt,
                                    "chosen": item.responses[i],
                                    "rejected": item.responses[j],
                                    **extra,
                                }
                            )
    return rows


EXPORT_FORMATS = ("sft", "pairs", "comparisons", "rankings")
assert set(KINDS) == {"gold", "compare", "rank"}
