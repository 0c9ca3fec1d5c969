"""A database made before migration 0002 upgrades in place: people, projects and their work survive, look-alike
names that already exist keep working, and ids are not reused afterwards."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

from rlhfkit.annotate import service, store
from rlhfkit.annotate.app import create_app
from rlhfkit.annotate.migrations import __file__ as _  # noqa: F401  (the package must ship its migrations)
from rlhfkit.annotate.store import normalize_url, open_db
from tests.app.conftest import PASSWORD, login


def test_a_0001_database_upgrades(db_url):
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(store.__file__).with_name("migrations")))
    cfg.set_main_option("sqlalchemy.url", normalize_url(db_url).replace("%", "%%"))
    command.upgrade(cfg, "0001")
    engine = create_engine(normalize_url(db_url))
    hashed = service._hasher.hash(PASSWORD)
    with engine.begin() as c:
        for name, role in [("ada", "admin"), ("bob", "annotator"), ("Bob", "annotator")]:
            c.execute(
                text(
                    "INSERT INTO users (name, password_hash, role, pseudonym, created_at) "
                    "VALUES (:n, :h, :r, :p, CURRENT_TIMESTAMP)"
                ),
                {"n": name, "h": hashed, "r": role, "p": f"ann-{name}"},
            )
        c.execute(
            text(
                "INSERT INTO projects (name, overlap, lease_seconds, created_at) "
                "VALUES ('Prefs', 1, 1800, CURRENT_TIMESTAMP)"
            )
        )
    engine.dispose()

    app = create_app(db_url)  # applies 0002
    assert login(app, "Bob").get("/api/v1/me").json() == {"name": "Bob", "role": "annotator"}  # exact name
    assert login(app, "bob").get("/api/v1/me").json() == {"name": "bob", "role": "annotator"}
    ada = login(app, "ada")
    assert [p["name"] for p in ada.get("/api/v1/projects").json()] == ["Prefs"]
    assert ada.post("/api/v1/projects", json={"name": "prefs"}).status_code == 409
    with open_db(db_url)() as s:
        eve = service.create_user(s, "eve", PASSWORD, "annotator")
        assert service.instance(s).database_id
    with open_db(db_url)() as s:  # the newest person removed: SQLite gave their id again before AUTOINCREMENT
        s.execute(text("DELETE FROM users WHERE name = 'eve'"))
        s.commit()
        assert service.create_user(s, "fay", PASSWORD, "annotator").id > eve.id


def test_a_0003_database_gets_the_chat_tables_as_the_models_describe_them(db_url):
    """Migration 0004 on a database with people and projects: the chat and arena tables are there, exactly as the
    models in store.py describe them (Alembic finds nothing to change), and they take a turn, a battle and a model."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(store.__file__).with_name("migrations")))
    cfg.set_main_option("sqlalchemy.url", normalize_url(db_url).replace("%", "%%"))
    command.upgrade(cfg, "0003")
    sessions = open_db(db_url)  # applies 0004
    engine = create_engine(normalize_url(db_url))
    with engine.connect() as c:
        assert compare_metadata(MigrationContext.configure(c), store.Base.metadata) == []
    engine.dispose()
    with sessions() as s:
        user = service.create_user(s, "ada", PASSWORD, "admin")
        project = service.create_project(s, "p")
        s.add(store.ChatModel(project_id=project.id, name="m", base_url="http://h/v1", model="m"))
        s.add(store.ChatTurn(project_id=project.id, user_id=user.id, model="m", messages=[], answer="a"))
        s.add(
            store.ArenaBattle(
                project_id=project.id,
                user_id=user.id,
                messages=[],
                model_a="m",
                model_b="n",
                answer_a="a",
                answer_b="b",
            )
        )
        s.commit()
    command.downgrade(cfg, "0003")
    command.upgrade(cfg, "head")
