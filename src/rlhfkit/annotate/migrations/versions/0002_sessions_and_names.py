"""server-side sessions, a key per database, disabled people, normalised names, ids never reused

Revision ID: 0002
Revises: 0001
"""

import secrets
import unicodedata

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _name_key(name: str) -> str:
    # as service.name_key at the time of this migration (a migration never imports code that may change later)
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name.strip()).casefold())


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    instance = op.create_table(
        "instance",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("database_id", sa.String(length=64), nullable=False),
        sa.Column("secret_key", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(instance, [{"id": 1, "database_id": secrets.token_hex(16), "secret_key": secrets.token_urlsafe(48)}])

    with op.batch_alter_table("users") as batch_op:
        batch_op.add_column(sa.Column("name_key", sa.String(length=400), nullable=True))
        batch_op.add_column(sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("projects") as batch_op:
        batch_op.add_column(sa.Column("name_key", sa.String(length=800), nullable=True))
    conn = op.get_bind()
    for table in ("users", "projects"):
        seen: set[str] = set()
        for row_id, name in conn.execute(sa.text(f"SELECT id, name FROM {table} ORDER BY id")).all():
            key = _name_key(name)
            if key in seen:  # an existing look-alike keeps its row; it logs in under its exact name
                key = f"{key}#{row_id}"
            seen.add(key)
            conn.execute(sa.text(f"UPDATE {table} SET name_key = :key WHERE id = :id"), {"key": key, "id": row_id})
    # SQLite reuses the largest rowid after a delete unless the table is AUTOINCREMENT, which needs a rebuild
    with op.batch_alter_table(
        "users", recreate="always" if sqlite else "auto", table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.alter_column("name_key", existing_type=sa.String(length=400), nullable=False)
        batch_op.create_unique_constraint("uq_users_name_key", ["name_key"])
    with op.batch_alter_table("projects") as batch_op:
        batch_op.alter_column("name_key", existing_type=sa.String(length=800), nullable=False)
        batch_op.create_unique_constraint("uq_projects_name_key", ["name_key"])

    op.create_table(
        "auth_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("auth_sessions") as batch_op:
        batch_op.create_index(batch_op.f("ix_auth_sessions_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("auth_sessions") as batch_op:
        batch_op.drop_index(batch_op.f("ix_auth_sessions_user_id"))
    op.drop_table("auth_sessions")
    with op.batch_alter_table("projects") as batch_op:
        batch_op.drop_constraint("uq_projects_name_key", type_="unique")
        batch_op.drop_column("name_key")
    with op.batch_alter_table("users") as batch_op:
        batch_op.drop_constraint("uq_users_name_key", type_="unique")
        batch_op.drop_column("disabled")
        batch_op.drop_column("name_key")
    op.drop_table("instance")
