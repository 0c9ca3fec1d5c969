"""The hidden rubric behind the simulated annotators and the "gold" judge of the demo.

A good help-desk answer states the right fact, is courteous and complete, is concise, and invents nothing. The
rubric scores those four things; the judge compares two answers by that score. It knows the company's facts
(company.py); the models never see it, they only see rankings made with it (plus noise).
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhfkit.demo.company import Fact, all_answer_keys

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
MAX_CONCISE_WORDS = 30
WEIGHTS = {"correct": 3.0, "courteous": 1.0, "complete": 0.5, "concise": 0.5, "invented": -2.0}


def _specific(key: str) -> bool:
    """Keys that name a specific value (a floor, a building, a number): saying a wrong one is inventing a fact."""
    return any(c.isdigit() for c in key) or any(w in key for w in ("floor", "Building", "Wing", "basement"))


INVENTABLE = tuple(sorted(k for k in all_answer_keys() if _specific(k)))


@dataclass(frozen=True)
class Assessment:
    correct: bool  # every key string of the fact is in the answer
    courteous: bool  # a friendly opening or closing
    complete: bool  # a full sentence, not a fragment
    concise: bool  # at most MAX_CONCISE_WORDS words
    invented: tuple[str, ...]  # specific values stated that belong to other facts

    @property
    def score(self) -> float:
        return (
            WEIGHTS["correct"] * self.correct
            + WEIGHTS["courteous"] * self.courteous
            + WEIGHTS["complete"] * self.complete
            + WEIGHTS["concise"] * self.concise
            + WEIGHTS["invented"] * bool(self.invented)
        )


def assess(answer: str, fact: Fact) -> Assessment:
    text = answer.lower()
    words = answer.split()
    own = [k.lower() for k in fact.answer_keys]
    return Assessment(
        correct=all(k in text for k in own),
        courteous=any(m in text for m in COURTESY_MARKERS),
        complete=len(words) >= 6 and answer.rstrip().endswith((".", "!")),
        concise=len(words) <= MAX_CONCISE_WORDS,
        invented=tuple(k for k in INVENTABLE if k.lower() in text and not any(k.lower() in o for o in own)),
    )


def judge(answer_a: str, answer_b: str, fact: Fact) -> str:
    """ "a", "b" or "tie" by rubric score."""
    sa, sb = assess(answer_a, fact).score, assess(answer_b, fact).score
    return "a" if sa > sb else "b" if sb > sa else "tie"


def win_rate(answers: list[str], baseline: list[str], facts: list[Fact]) -> float:
    """Share of comparisons `answers` wins against `baseline`, ties counting half."""
    verdicts = [judge(a, b, f) for a, b, f in zip(answers, baseline, facts)]
    return (verdicts.count("a") + 0.5 * verdicts.count("tie")) / max(len(verdicts), 1)
