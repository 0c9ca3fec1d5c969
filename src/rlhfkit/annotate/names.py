"""What makes two names the same name, and which characters a name may not hold.

A name's key (unique per table) is a confusable skeleton in the manner of Unicode's UTS #39: compatibility forms
(NFKC), case (case folding) and look-alike letters of Latin, Greek and Cyrillic map to one form, so "alice", "ALICE",
"ａｌｉｃｅ" and "аlice" (Cyrillic а) are one name. No maintained Python package computes UTS #39 skeletons without
compiling ICU, so the look-alikes are a small table: every Latin, Greek and Cyrillic letter that Unicode's
confusables.txt (Unicode 15) maps to a single ASCII letter or digit, plus the ASCII confusables 0/O, 1/l, |/l and
m/rn. Changing the key needs a migration that recomputes the stored keys (see migration 0003).
"""

from __future__ import annotations

import re
import unicodedata

# Default_Ignorable_Code_Point (Unicode DerivedCoreProperties: soft hyphen, joiners, Hangul fillers, variation
# selectors, tags...) and the braille blank: they draw nothing, so "alice" and "alice" + one of them look the same.
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


def skeleton(name: str) -> str:
    """The key of a name: two names with the same key look alike. Not for display."""
    s = INVISIBLE.sub("", name)
    s = unicodedata.normalize("NFD", s).translate(_LOOKALIKES)  # before NFKC, which turns some look-alikes Greek
    s = unicodedata.normalize("NFKC", s).casefold()
    # again: NFKC and case folding make letters of their own (Greek capital sigma folds to small sigma, like o)
    s = unicodedata.normalize("NFD", s).translate(_LOOKALIKES).translate(_ASCII_LOOKALIKES)
    return _SPACES.sub(" ", unicodedata.normalize("NFC", s)).strip()


def invisible_character(name: str) -> str | None:
    """The first character of `name` that draws nothing (or is a space other than U+0020), or None."""
    return next((c for c in name if INVISIBLE.match(c) or (c.isspace() and c != " ")), None)
