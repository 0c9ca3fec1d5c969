"""Preference records -> reward-model training items.

An item is one prompt with K >= 2 responses and the comparisons people made between them. Each comparison
carries outcome shares (p_a, p_b, p_tie) that sum to 1: one person's label is one-hot; when several annotators
judged the same pair their votes are pooled into shares (a soft target) instead of duplicated pairs. A K-way
ranking is one item holding all C(K, 2) pairs, so they share one batch element (InstructGPT).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import combinations

from rlhfkit.data.schema import Comparison, PreferencePair, Ranking, Record, Text


@dataclass(frozen=True)
class Judgement:
    a: int  # response index
    b: int
    p_a: float
    p_b: float
    p_tie: float
    votes: int  # annotators behind the shares
    margin: float = 0.0

    @property
    def agreement(self) -> float:
        """Share of annotators who gave the most common outcome (1.0 when everyone agreed)."""
        return max(self.p_a, self.p_b, self.p_tie)


@dataclass(frozen=True)
class PreferenceItem:
    prompt: Text
    responses: tuple[Text, ...]
    judgements: tuple[Judgement, ...]
    ranks: tuple[int, ...] | None = None  # set when the item is exactly one person's ranking (Plackett-Luce)


def response_text(response: Text) -> str:
    """The text a reward model scores: a string as is; for a message list, its assistant turns."""
    if isinstance(response, str):
        return response
    return "\n".join(m["content"] for m in response if m["role"] == "assistant") or response[-1]["content"]


def _key(x: Text) -> str:
    return x if isinstance(x, str) else json.dumps(x, sort_keys=True)


@dataclass
class _Draft:
    prompt: Text
    responses: list[Text] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    counts: dict[tuple[int, int], Counter] = field(default_factory=lambda: defaultdict(Counter))
    margins: dict[tuple[int, int], list[float]] = field(default_factory=lambda: defaultdict(list))
    rankings: list[tuple[int, ...]] = field(default_factory=list)

    def idx(self, response: Text) -> int:
        k = _key(response)
        if k not in self.index:
            self.index[k] = len(self.responses)
            self.responses.append(response)
        return self.index[k]

    def add(self, x: Text, y: Text, outcome: str, n: int = 1) -> None:
        """outcome: "x", "y" or "tie"; pairs are stored with the smaller index first."""
        i, j = self.idx(x), self.idx(y)
        if i > j:
            i, j = j, i
            outcome = {"x": "y", "y": "x"}.get(outcome, outcome)
        self.counts[(i, j)][{"x": "a", "y": "b", "tie": "tie"}[outcome]] += n

    def add_margin(self, x: Text, y: Text, margin: float) -> None:
        """A pair's margin says how much better x (chosen) is than y, whatever each vote said; it is stored in
        favour of the response with the smaller index."""
        i, j = self.idx(x), self.idx(y)
        self.margins[(min(i, j), max(i, j))].append(margin if i < j else -margin)


def build_items(
    records: list[Record], *, tie_model: str = "davidson", both_bad: str = "tie"
) -> tuple[list[PreferenceItem], Counter]:
    """Pool the judgements per prompt and response set. Returns the items and counts of what was skipped.

    Judgements of the same prompt and responses pool: pairs and comparisons of the same two responses become one
    judgement, rankings of the same response set one item, with vote shares. An item that is exactly one ranking
    keeps its ranks for Plackett-Luce. With tie_model="none", judgements that are only ties are dropped, and tie
    votes are left out of mixed shares. both_bad="tie" counts a both-bad verdict as a tie, "drop" skips it.
    """
    drafts: dict[tuple[str, frozenset[str]], _Draft] = {}
    skipped: Counter = Counter()
    for r in records:
        if isinstance(r, Ranking):
            if r.not_rankable:
                skipped["not_rankable"] += 1
                continue
            if len({_key(x) for x in r.responses}) != len(r.responses):
                skipped["duplicate_responses"] += 1
                continue
            # several annotators ranking the same answers pool into one item
            d = drafts.setdefault((_key(r.prompt), frozenset(map(_key, r.responses))), _Draft(r.prompt))
            for i, j in combinations(range(len(r.responses)), 2):
                ri, rj = r.ranks[i], r.ranks[j]
                d.add(r.responses[i], r.responses[j], "x" if ri < rj else "y" if rj < ri else "tie")
            d.rankings.append(tuple(r.ranks[r.responses.index(x)] for x in d.responses))  # in the item's order
            continue
        if isinstance(r, PreferencePair):
            x, y = r.chosen, r.rejected
        elif isinstance(r, Comparison):
            x, y = r.response_a, r.response_b
        else:
            raise TypeError(f"{type(r).__name__} records hold no preferences (need pairs, comparisons or rankings)")
        if _key(x) == _key(y):
            skipped["identical_responses"] += 1
            continue
        d = drafts.setdefault((_key(r.prompt), frozenset((_key(x), _key(y)))), _Draft(r.prompt))
        if isinstance(r, PreferencePair):
            if r.votes:
                for outcome, n in (
                    ("x", r.votes.get("chosen", 0)),
                    ("y", r.votes.get("rejected", 0)),
                    ("tie", r.votes.get("tie", 0)),
                ):
                    if n:
                        d.add(x, y, outcome, n)
            else:
                d.add(x, y, "x")
            if r.margin is not None:
                d.add_margin(x, y, r.margin)
        elif r.label == "both_bad" and both_bad == "drop":
            skipped["both_bad"] += 1
        else:
            d.add(x, y, {"a": "x", "b": "y", "tie": "tie", "both_bad": "tie"}[r.label])

    items = []
    for d in drafts.values():
        judgements = []
        for (i, j), c in sorted(d.counts.items()):
            wins_a, wins_b, ties = c["a"], c["b"], c["tie"]
            if tie_model == "none":
                if wins_a + wins_b == 0:
                    skipped["tie"] += 1
                    continue
                ties = 0
            total = wins_a + wins_b + ties
            if total == 0:
                continue
            margins = d.margins.get((i, j))
            judgements.append(
                Judgement(
                    i,
                    j,
                    wins_a / total,
                    wins_b / total,
                    ties / total,
                    total,
                    sum(margins) / len(margins) if margins else 0.0,
                )
            )
        if judgements:
            ranks = d.rankings[0] if len(d.rankings) == 1 else None
            items.append(PreferenceItem(d.prompt, tuple(d.responses), tuple(judgements), ranks))
    return items, skipped
