"""The chat page and the arena, apart from HTTP: the models a project chats with (admins only), conversations,
thumbs and corrections, blind arena battles and votes, their exports and the leaderboard.

What the model answered is what the server received from it: the browser sends only the person's words and the id
of an answer of theirs to continue from or to rate, so nobody can put words in a model's mouth.
"""

from __future__ import annotations

import random
import unicodedata
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rlhfkit.annotate.leaderboard import leaderboard
from rlhfkit.annotate.service import LABELS, ServiceError, plain
from rlhfkit.annotate.store import ArenaBattle, ChatModel, ChatTurn, Project, User, utcnow
from rlhfkit.annotate.upstream import Endpoint
from rlhfkit.data.convert import to_ratings
from rlhfkit.data.schema import Comparison

MAX_MESSAGE_CHARS = 8000  # one question
MAX_CORRECTION_CHARS = 10_000
MAX_MESSAGES = 40  # a conversation: 20 questions and answers
MAX_CONVERSATION_CHARS = 100_000
RATINGS = ("good", "bad")
_rng = random.SystemRandom()


# --- the models (admins only) ---


def _check_text(value: str, *, what: str, max_length: int) -> str:
    value = value.strip()
    if not 1 <= len(value) <= max_length:
        raise ServiceError(f"{what} must be 1-{max_length} characters")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in value):
        raise ServiceError(f"{what} must not hold control or invisible formatting characters")
    return value


def check_base_url(url: str) -> str:
    """An http(s) URL with a host and no credentials, query or fragment, without a trailing slash (and without
    /chat/completions, which is added to it)."""
    url = url.strip()
    if not 1 <= len(url) <= 500 or any(c.isspace() or not c.isprintable() for c in url):
        raise ServiceError("the base URL must be 1-500 characters without spaces")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ServiceError(
            "the base URL must start with http:// or https:// and name a host, e.g. http://10.0.0.7:8001/v1"
        )
    if parts.username is not None or parts.password is not None:
        raise ServiceError("put the API key in its own field, not in the URL (admins see the URL)")
    if parts.query or parts.fragment:
        raise ServiceError("the base URL must not have a query or a fragment")
    url = url.rstrip("/")
    return url.removesuffix("/chat/completions")


def check_api_key(key: str) -> str:
    key = key.strip()
    if not 1 <= len(key) <= 500 or any(not 33 <= ord(c) <= 126 for c in key):
        raise ServiceError("an API key is 1-500 printable ASCII characters without spaces")
    return key


def key_hint(key: str | None) -> str | None:
    """What admins see of a key: its last 4 characters when it has 16 or more, else only that there is one."""
    if not key:
        return None
    return "…" + key[-4:] if len(key) >= 16 else "set"


def add_model(
    db: Session,
    project: Project,
    *,
    name: str | None,
    base_url: str,
    model: str,
    api_key: str | None = None,
    max_tokens: int = 512,
) -> ChatModel:
    model = _check_text(model, what="model", max_length=200)
    row = ChatModel(
        project_id=project.id,
        name=_check_text(name or model, what="name", max_length=200),
        base_url=check_base_url(base_url),
        model=model,
        api_key=check_api_key(api_key) if api_key else None,
        max_tokens=_check_tokens(max_tokens),
    )
    db.add(row)
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
        raise ServiceError(f"this project already has a model named {row.name!r}", 409) from None
    return row


def _check_tokens(max_tokens: int) -> int:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= 32768:
        raise ServiceError("max_tokens must be 1-32768")
    return max_tokens


def update_model(
    db: Session,
    row: ChatModel,
    *,
    base_url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    clear_api_key: bool = False,
    max_tokens: int | None = None,
) -> ChatModel:
    """Change what is given; the key is kept unless a new one is given or `clear_api_key`."""
    if base_url is not None:
        row.base_url = check_base_url(base_url)
    if model is not None:
        row.model = _check_text(model, what="model", max_length=200)
    if api_key:
        row.api_key = check_api_key(api_key)
    elif clear_api_key:
        row.api_key = None
    if max_tokens is not None:
        row.max_tokens = _check_tokens(max_tokens)
    db.commit()
    return row


def delete_model(db: Session, row: ChatModel) -> None:
    """Answers and votes keep the model's name."""
    db.delete(row)
    db.commit()


def models(db: Session, project: Project) -> list[ChatModel]:
    return list(db.scalars(select(ChatModel).where(ChatModel.project_id == project.id).order_by(ChatModel.id)))


def get_model(db: Session, project: Project, model_id: int) -> ChatModel:
    row = db.get(ChatModel, model_id)
    if row is None or row.project_id != project.id:
        raise ServiceError("no such model in this project", 404)
    return row


def model_view(row: ChatModel) -> dict[str, Any]:
    """For admins: everything but the key, of which only a hint."""
    return {
        "id": row.id,
        "name": row.name,
        "base_url": row.base_url,
        "model": row.model,
        "max_tokens": row.max_tokens,
        "api_key": key_hint(row.api_key),
    }


def endpoint(row: ChatModel) -> Endpoint:
    return Endpoint(base_url=row.base_url, model=row.model, api_key=row.api_key, max_tokens=row.max_tokens)


def chat_model(db: Session, project: Project) -> ChatModel:
    """The model people chat with: the project's first."""
    rows = models(db, project)
    if not rows:
        raise ServiceError("no model is set up for this project yet (an admin adds one on the admin page)", 409)
    return rows[0]


def arena_pair(db: Session, project: Project) -> tuple[ChatModel, ChatModel]:
    """Two different models of the project at random, in random order: the first is shown as A."""
    rows = models(db, project)
    if len(rows) < 2:
        raise ServiceError("the arena needs two models in this project (an admin adds them on the admin page)", 409)
    a, b = _rng.sample(rows, 2)
    return a, b


# --- conversations and feedback ---


def check_message(text: str, *, what: str = "a question", max_length: int = MAX_MESSAGE_CHARS) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ServiceError(f"{what} must not be empty")
    if len(text) > max_length:
        raise ServiceError(f"{what} has at most {max_length} characters")
    if "\x00" in text:
        raise ServiceError(f"{what} must not hold NUL characters")
    return text.strip()


def own_turn(db: Session, user: User, turn_id: int) -> ChatTurn:
    turn = db.get(ChatTurn, turn_id)
    if turn is None or turn.user_id != user.id:
        raise ServiceError("no such answer", 404)
    return turn


def conversation(db: Session, project: Project, user: User, message: str, parent_id: int | None) -> list[dict]:
    """The messages to send: the conversation of the person's answer `parent_id` (as the model said it), then the
    new question."""
    messages: list[dict] = []
    if parent_id is not None:
        parent = own_turn(db, user, parent_id)
        if parent.project_id != project.id:
            raise ServiceError("no such answer", 404)
        messages = plain(parent.messages) + [{"role": "assistant", "content": parent.answer}]
    messages.append({"role": "user", "content": check_message(message)})
    if len(messages) > MAX_MESSAGES or sum(len(m["content"]) for m in messages) > MAX_CONVERSATION_CHARS:
        raise ServiceError("this conversation is too long for the model: start a new one")
    return messages


def save_turn(
    db: Session, project_id: int, user_id: int, model: str, messages: list[dict], answer: str, truncated: bool
) -> ChatTurn:
    turn = ChatTurn(
        project_id=project_id, user_id=user_id, model=model, messages=messages, answer=answer, truncated=truncated
    )
    db.add(turn)
    db.commit()
    return turn


def rate(db: Session, turn: ChatTurn, label: str, correction: str | None = None) -> ChatTurn:
    """Thumbs up or down, once per answer, with an optional correction (what the answer should have been)."""
    if label not in RATINGS:
        raise ServiceError(f"label must be one of {', '.join(RATINGS)}")
    if correction is not None and not correction.strip():
        correction = None
    if correction is not None:
        correction = check_message(correction, what="the correction", max_length=MAX_CORRECTION_CHARS)
        if correction == turn.answer.strip():
            raise ServiceError("the correction is the answer itself: change it, or leave it empty")
    # one rating per answer, even for two requests at once: only the first update finds label still empty
    done = db.execute(
        update(ChatTurn)
        .where(ChatTurn.id == turn.id, ChatTurn.label.is_(None))
        .values(label=label, correction=correction, rated_at=utcnow())
    )
    db.commit()
    if done.rowcount != 1:
        raise ServiceError("you have rated this answer already", 409)
    db.refresh(turn)
    return turn


def save_battle(
    db: Session, project_id: int, user_id: int, messages: list[dict], models: tuple[str, str], answers: tuple[str, str]
) -> ArenaBattle:
    battle = ArenaBattle(
        project_id=project_id,
        user_id=user_id,
        messages=messages,
        model_a=models[0],
        model_b=models[1],
        answer_a=answers[0],
        answer_b=answers[1],
    )
    db.add(battle)
    db.commit()
    return battle


def own_battle(db: Session, user: User, battle_id: int) -> ArenaBattle:
    battle = db.get(ArenaBattle, battle_id)
    if battle is None or battle.user_id != user.id:
        raise ServiceError("no such arena question", 404)
    return battle


def vote(db: Session, battle: ArenaBattle, label: str) -> ArenaBattle:
    """A, B (as shown), tie or both bad; once per battle."""
    if label not in LABELS:
        raise ServiceError(f"label must be one of {', '.join(LABELS)}")
    done = db.execute(
        update(ArenaBattle)
        .where(ArenaBattle.id == battle.id, ArenaBattle.label.is_(None))
        .values(label=label, voted_at=utcnow())
    )
    db.commit()
    if done.rowcount != 1:
        raise ServiceError("you have voted on this question already", 409)
    db.refresh(battle)
    return battle


# --- what admins see ---


def arena_leaderboard(db: Session, project: Project, *, rounds: int = 200) -> list[dict]:
    rows = db.execute(
        select(ArenaBattle.model_a, ArenaBattle.model_b, ArenaBattle.label)
        .where(ArenaBattle.project_id == project.id, ArenaBattle.label.is_not(None))
        .order_by(ArenaBattle.id)
    ).all()
    return leaderboard([tuple(r) for r in rows], rounds=rounds)


def chat_stats(db: Session, project: Project) -> dict[str, int]:
    def count(model, *where) -> int:
        return db.scalar(select(func.count()).select_from(model).where(model.project_id == project.id, *where)) or 0

    return {
        "answers": count(ChatTurn),
        "good": count(ChatTurn, ChatTurn.label == "good"),
        "bad": count(ChatTurn, ChatTurn.label == "bad"),
        "corrections": count(ChatTurn, ChatTurn.correction.is_not(None)),
        "arena_questions": count(ArenaBattle),
        "arena_votes": count(ArenaBattle, ArenaBattle.label.is_not(None)),
    }


def export_rows(db: Session, project: Project | None, fmt: str) -> list[dict[str, Any]]:
    """Chat feedback and arena votes in the formats of rlhfkit.data: thumbs are ratings; a correction is an SFT
    example and a comparison (and a pair) in which the correction, as response_a, is preferred to the model's
    answer; an arena vote is a comparison (a pair when A or B won, two ratings like any comparison)."""
    rows: list[dict[str, Any]] = []
    turns = select(ChatTurn).where(ChatTurn.label.is_not(None)).order_by(ChatTurn.id)
    battles = select(ArenaBattle).where(ArenaBattle.label.is_not(None)).order_by(ArenaBattle.id)
    if project is not None:
        turns = turns.where(ChatTurn.project_id == project.id)
        battles = battles.where(ArenaBattle.project_id == project.id)
    for t in db.scalars(turns):
        prompt = plain(t.messages)
        extra = {"annotator": t.user.pseudonym, "flags": [], "source": "chat", "model": t.model}
        if fmt == "ratings":
            rows.append({"prompt": prompt, "response": t.answer, "label": t.label, **extra})
        elif t.correction and fmt == "sft":
            rows.append({"prompt": prompt, "completion": t.correction, **extra})
        elif t.correction and fmt in ("comparisons", "preferences"):
            rows.append({"prompt": prompt, "response_a": t.correction, "response_b": t.answer, "label": "a", **extra})
        elif t.correction and fmt == "pairs":
            rows.append({"prompt": prompt, "chosen": t.correction, "rejected": t.answer, **extra})
    for b in db.scalars(battles):
        prompt = plain(b.messages)
        extra = {"annotator": b.user.pseudonym, "flags": [], "source": "arena"}
        extra.update(model_a=b.model_a, model_b=b.model_b)
        if fmt in ("comparisons", "preferences"):
            row = {"prompt": prompt, "response_a": b.answer_a, "response_b": b.answer_b, "label": b.label}
            rows.append({**row, **extra})
        elif fmt == "pairs" and b.label in ("a", "b"):
            chosen, rejected = (b.answer_a, b.answer_b) if b.label == "a" else (b.answer_b, b.answer_a)
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, **extra})
        elif fmt == "ratings":
            ratings = to_ratings([Comparison(prompt, b.answer_a, b.answer_b, b.label)])[0]
            rows += [{**r.to_dict(), **extra} for r in ratings]
    return rows
