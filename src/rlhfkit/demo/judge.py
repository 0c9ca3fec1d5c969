"""The hidden rubric behind the simulated annotators and the "gold" judge of the demo.

A good help-desk answer is readable text, states the right fact (or, when the handbook does not say, says "I don't
know" and who can help), invents nothing, and then is courteous, complete and concise. The rubric grades an answer
in that order: a level for what it says, then style, which only decides between answers that are equally right.
It knows the company's facts (company.py); the models never see it, they only see rankings made with it (plus
noise).

Levels, highest first (an answerable question / one the handbook does not answer):
  4  the right fact, nothing invented             / "I don't know", nothing stated
  3  "I don't know" (a wrongful abstention)      / -
  2  wrong, but no other fact's value            / no abstention, nothing specific
  1  another fact's value (a wrong fact)         / a specific value (a hallucination)
  0  broken text: repeated words, non-words, or cut off before the end of a sentence
So broken text loses to everything, a wrong fact never beats "I don't know", an invented answer to an unanswerable
question is worse than a plain wrong one, and politeness never rescues a wrong answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from rlhfkit.demo.company import COURTEOUS_CLOSINGS, COURTEOUS_OPENINGS, Fact, all_answer_keys, facts, handbook

COURTESY_MARKERS = (
    "happy to help",
    "thanks for asking",
    "good question",
    "of course",
    "let me know",
    "i hope that helps",
    "have a great day",
    "feel free to ask",
)
ABSTENTION_MARKERS = ("i don't have that information", "i don't know", "i do not know", "i'm not sure")
MAX_CONCISE_WORDS = 30
STYLE = {"courteous": 1.0, "complete": 0.5, "concise": 0.5}
LEVEL_WEIGHT = 3.0  # a level is worth more than every style point together (2.0)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _specific(key: str) -> bool:
    """Keys that name a specific value (a floor, a building, a number): saying a wrong one is inventing a fact."""
    return any(c.isdigit() for c in key) or any(w in key for w in ("floor", "Building", "Wing", "basement"))


INVENTABLE = tuple(sorted(k for k in all_answer_keys() if _specific(k)))


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@cache
def demo_vocabulary() -> frozenset[str]:
    """Every word the demo's texts use (handbook, questions, experts' answers, courtesy phrases). The tiny model's
    tokenizer is trained on these texts, so a word outside them is pieces glued together ("Fetkk"), not English. For
    a real model, whose vocabulary is all of English, the judge is given no vocabulary and skips that check."""
    texts = [handbook(), *COURTEOUS_OPENINGS, *COURTEOUS_CLOSINGS, *COURTESY_MARKERS, *ABSTENTION_MARKERS]
    for f in facts():
        texts += [f.sentence, f.terse, *f.wordings]
    return frozenset(w for t in texts for w in words(t))


def degenerate(answer: str, vocabulary: frozenset[str] | None) -> str | None:
    """Why an answer is broken text, or None: a word pair said twice ("the of the of"), the same word twice in a row,
    a word that is not a word, or an answer cut off before the end of its sentence."""
    ws = words(answer)
    if not ws:
        return "empty"
    if any(a == b for a, b in zip(ws, ws[1:])):
        return "repeated words"
    pairs = list(zip(ws, ws[1:]))
    if len(set(pairs)) < len(pairs):
        return "repeated words"
    if vocabulary is not None and any(w not in vocabulary for w in ws):
        return "non-words"
    if not answer.rstrip().endswith((".", "!", "?")):
        return "cut off"
    return None


@dataclass(frozen=True)
class Assessment:
    answerable: bool  # the handbook answers the question
    correct: bool  # answerable: every key string of the fact is in the answer; else: it abstains, stating nothing
    abstains: bool  # says it does not know
    invented: tuple[str, ...]  # specific values stated that the question's fact does not have
    broken: str | None  # why it is broken text (degenerate), or None
    courteous: bool  # a friendly opening or closing
    complete: bool  # a full sentence, not a fragment
    concise: bool  # at most MAX_CONCISE_WORDS words

    @property
    def level(self) -> int:
        if self.broken:
            return 0
        if self.invented:
            return 1
        if self.correct:
            return 4
        return 3 if self.abstains and self.answerable else 2

    @property
    def style(self) -> float:
        return STYLE["courteous"] * self.courteous + STYLE["complete"] * self.complete + STYLE["concise"] * self.concise

    @property
    def score(self) -> float:
        """One number for the simulated annotators: the level first, style within it."""
        return LEVEL_WEIGHT * self.level + self.style


def assess(answer: str, fact: Fact, *, vocabulary: frozenset[str] | None = None) -> Assessment:
    text = answer.lower()
    ws = answer.split()
    own = [k.lower() for k in fact.answer_keys]
    abstains = any(m in text for m in ABSTENTION_MARKERS)
    # a value of another fact, unless the right answer says it too ("within 30 days" of starting, for benefits)
    mine = [*own, fact.sentence.lower()]
    invented = tuple(k for k in INVENTABLE if k.lower() in text and not any(k.lower() in o for o in mine))
    if not fact.answerable and not invented and any(c.isdigit() for c in answer):
        invented = ("a number",)  # the handbook says nothing about it: any number is made up
    correct = all(k in text for k in own) if fact.answerable else abstains
    return Assessment(
        answerable=fact.answerable,
        correct=correct and not invented,
        abstains=abstains,
        invented=invented,
        broken=degenerate(answer, vocabulary),
        courteous=any(m in text for m in COURTESY_MARKERS),
        complete=len(ws) >= 6 and answer.rstrip().endswith((".", "!")),
        concise=len(ws) <= MAX_CONCISE_WORDS,
    )


def judge(answer_a: str, answer_b: str, fact: Fact, *, vocabulary: frozenset[str] | None = None) -> str:
    """ "a", "b" or "tie": the higher level wins; at the same level style decides only between right answers (the
    right fact, or an abstention), so of two wrong answers the politer one does not win."""
    a, b = assess(answer_a, fact, vocabulary=vocabulary), assess(answer_b, fact, vocabulary=vocabulary)
    if a.level != b.level:
        return "a" if a.level > b.level else "b"
    if a.level >= 3 and a.style != b.style:
        return "a" if a.style > b.style else "b"
    return "tie"
