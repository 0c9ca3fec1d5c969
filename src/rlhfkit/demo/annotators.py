"""Simulated annotators: stand-ins for the people who rank answers in the annotation app. Clearly not people.

Each one scores answers with the hidden rubric, weighs courtesy and brevity a little differently, adds noise, and
ranks the K answers to a prompt (near-equal utilities become ties). Several annotators see each prompt, so they
disagree as real ones do. They write the rankings format the annotation app exports (one record per annotator).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from rlhfkit.demo.company import Fact
from rlhfkit.demo.judge import STYLE, assess


@dataclass(frozen=True)
class SimulatedAnnotator:
    name: str
    courtesy_weight: float = 1.0  # multiplies the rubric's courtesy weight
    noise: float = 0.3  # std of Gaussian noise on each utility
    tie_within: float = 0.25  # utilities closer than this are ranked equal

    def utility(self, answer: str, fact: Fact, rng: random.Random, *, vocabulary=None) -> float:
        a = assess(answer, fact, vocabulary=vocabulary)
        extra = (self.courtesy_weight - 1.0) * STYLE["courteous"] * a.courteous
        return a.score + extra + rng.gauss(0.0, self.noise)

    def rank(self, answers: list[str], fact: Fact, rng: random.Random, *, vocabulary=None) -> list[int]:
        """Ranks (1 = best) with ties: answers are sorted by utility, and one whose utility is within tie_within of
        the previous one shares its rank. `vocabulary`: the words they know (broken text is seen as broken)."""
        utilities = [self.utility(a, fact, rng, vocabulary=vocabulary) for a in answers]
        order = sorted(range(len(answers)), key=lambda i: -utilities[i])
        ranks = [0] * len(answers)
        rank = 0
        for pos, i in enumerate(order):
            if pos == 0 or utilities[order[pos - 1]] - utilities[i] >= self.tie_within:
                rank += 1
            ranks[i] = rank
        return ranks


PANEL = (
    SimulatedAnnotator("sim-annotator-1", courtesy_weight=1.0, noise=0.3),
    SimulatedAnnotator("sim-annotator-2", courtesy_weight=1.5, noise=0.4),
    SimulatedAnnotator("sim-annotator-3", courtesy_weight=0.6, noise=0.5),
)


def simulate_rankings(
    generations: list[dict],
    facts_by_prompt: dict[str, Fact],
    *,
    overlap: int = 2,
    seed: int = 0,
    vocabulary: frozenset[str] | None = None,
) -> list[dict]:
    """Rankings records for `rlhf generate` output: each prompt's distinct answers, ranked by `overlap` annotators."""
    rng = random.Random(seed)
    rows = []
    for g in generations:
        answers = list(dict.fromkeys(r for r in g["responses"] if r.strip()))  # distinct, in order
        if len(answers) < 2:
            continue  # nothing to compare
        fact = facts_by_prompt[g["prompt"]]
        for annotator in rng.sample(PANEL, overlap):
            rows.append(
                {
                    "prompt": g["prompt"],
                    "responses": answers,
                    "ranks": annotator.rank(answers, fact, rng, vocabulary=vocabulary),
                    "annotator": annotator.name,
                }
            )
    return rows
