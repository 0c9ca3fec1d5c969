"""name keys become confusable skeletons: look-alike Latin, Greek and Cyrillic letters, invisible characters

Revision ID: 0003
Revises: 0002
"""

import re
import unicodedata
import uuid

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# as rlhfkit.annotate.names at the time of this migration (a migration never imports code that may change later)
INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u2800\u3164"
    "\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]"
)

# Look-alike letter -> the ASCII it is confused with, case kept (Greek capital Nu is N, small nu is v).
_LATIN = (
    "\u0131\u017f\u0184\u018d\u0196\u01a6\u01a7\u01b7\u01bc\u01bd\u01c0\u021c\u0222\u0223\u0251\u0261\u0263\u0269"
    "\u026a\u026f\u028b\u028f\u1d04\u1d0f\u1d11\u1d1c\u1d20\u1d21\u1d22\u1d26\u1e9d\u1eff",
    "ifbgIR235sl388agyiiwuycoouvwzrfy",
)
_GREEK = (
    "\u037a\u037f\u0391\u0392\u0395\u0396\u0397\u0399\u039a\u039c\u039d\u039f\u03a1\u03a4\u03a5\u03a7\u03b1\u03b3"
    "\u03b9\u03bd\u03bf\u03c1\u03c3\u03c5\u03d2\u03dc\u03e8\u03f1\u03f2\u03f3\u03f9\u03fa\u1fbe",
    "iJABEZHIKMNOPTYXayivopouYF2pcjCMi",
)
_CYRILLIC = (
    "\u0405\u0406\u0408\u0410\u0412\u0415\u0417\u041a\u041c\u041d\u041e\u0420\u0421\u0422\u0423\u0425\u042c\u0430"
    "\u0431\u0433\u0435\u043e\u0440\u0441\u0443\u0445\u0455\u0456\u0458\u0461\u0474\u0475\u04ae\u04af\u04bb\u04bd"
    "\u04c0\u04cf\u04e0\u0501\u050c\u051b\u051c\u051d",
    "SIJABE3KMHOPCTYXba6reopcyxsijwVvYyheIi3dGqWw",
)
_LOOKALIKES = str.maketrans(_LATIN[0] + _GREEK[0] + _CYRILLIC[0], _LATIN[1] + _GREEK[1] + _CYRILLIC[1])
# After case folding: ASCII characters confused with others
_ASCII_LOOKALIKES = str.maketrans({"0": "o", "1": "l", "|": "l", "m": "rn"})
_SPACES = re.compile(r"\s+")


def _skeleton(name: str) -> str:
    s = INVISIBLE.sub("", name)
    s = unicodedata.normalize("NFD", s).translate(_LOOKALIKES)
    s = unicodedata.normalize("NFKC", s).casefold()
    s = unicodedata.normalize("NFD", s).translate(_LOOKALIKES).translate(_ASCII_LOOKALIKES)
    return _SPACES.sub(" ", unicodedata.normalize("NFC", s)).strip()


def _0002_key(name: str) -> str:
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name.strip()).casefold())


def _rekey(key) -> None:
    """Every name_key again by `key`; of names that now share a key the oldest keeps it and the others get their id
    appended (they log in under their exact name, as migration 0002's look-alikes do)."""
    conn = op.get_bind()
    for table in ("users", "projects"):
        rows = conn.execute(sa.text(f"SELECT id, name FROM {table} ORDER BY id")).all()
        # placeholders first, so that no row takes a key another row still holds
        for row_id, _ in rows:
            placeholder = f"0003-{row_id}-{uuid.uuid4().hex}"
            conn.execute(sa.text(f"UPDATE {table} SET name_key = :k WHERE id = :id"), {"k": placeholder, "id": row_id})
        seen: set[str] = set()
        for row_id, name in rows:
            k = key(name)
            if k in seen:
                k = f"{k}#{row_id}"
            seen.add(k)
            conn.execute(sa.text(f"UPDATE {table} SET name_key = :k WHERE id = :id"), {"k": k, "id": row_id})


def upgrade() -> None:
    _rekey(_skeleton)


def downgrade() -> None:
    _rekey(_0002_key)
