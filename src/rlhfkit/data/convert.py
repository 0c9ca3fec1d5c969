"""Conversions between formats, for `rlhf data convert` and the trainers.

Only what a format can say survives: ties and both-bad judgements have no pair, so `to_pairs` drops them and
counts them; `not_rankable` rankings are skipped and counted. `to_ratings` reads a preference as "the winner is
good, the loser bad" (as KTO's authors did with paired data): a both-bad judgement gives two bad answers, a tie none.
"""

from __future__ import annotations

from collections import Counter
from itertools import combinations

from rlhfkit.data.schema import Comparison, Generations, PreferencePair, Ranking, Rating, Record, SFTRecord

TARGETS = ("pairs", "sft", "comparisons", "ratings")


def ranking_pairs(r: Ranking) -> list[tuple[int, int]]:
    """(better, worse) index pairs of a ranking with distinct ranks; equal ranks are ties and give no pair."""
    return [
        (i, j) if r.ranks[i] < r.ranks[j] else (j, i)
        for i, j in combinations(range(len(r.ranks)), 2)
        if r.ranks[i] != r.ranks[j]
    ]


def to_pairs(records: list[Record]) -> tuple[list[PreferencePair], Counter]:
    out: list[PreferencePair] = []
    skipped: Counter = Counter()
    for r in records:
        if isinstance(r, PreferencePair):
            out.append(r)
        elif isinstance(r, Comparison):
            if r.label in ("tie", "both_bad"):
                skipped[r.label] += 1
                continue
            win, lose = (r.response_a, r.response_b) if r.label == "a" else (r.response_b, r.response_a)
            out.append(PreferencePair(r.prompt, win, lose, annotator=r.annotator))
        elif isinstance(r, Ranking):
            if r.not_rankable:
                skipped["not_rankable"] += 1
                continue
            pairs = ranking_pairs(r)
            if not pairs:
                skipped["all_tied"] += 1
            out.extend(
                PreferencePair(r.prompt, r.responses[i], r.responses[j], annotator=r.annotator) for i, j in pairs
            )
        else:
            raise TypeError(f"cannot make preference pairs from {type(r).__name__} records")
    return out, skipped


def to_comparisons(records: list[Record]) -> tuple[list[Comparison], Counter]:
    out: list[Comparison] = []
    skipped: Counter = Counter()
    for r in records:
        if isinstance(r, Comparison):
            out.append(r)
        elif isinstance(r, PreferencePair):
            out.append(Comparison(r.prompt, r.chosen, r.rejected, "a", r.annotator))
        elif isinstance(r, Ranking):
            if r.not_rankable:
                skipped["not_rankable"] += 1
                continue
            for i, j in combinations(range(len(r.responses)), 2):
                label = "tie" if r.ranks[i] == r.ranks[j] else ("a" if r.ranks[i] < r.ranks[j] else "b")
                out.append(Comparison(r.prompt, r.responses[i], r.responses[j], label, r.annotator))
        else:
            raise TypeError(f"cannot make comparisons from {type(r).__name__} records")
    return out, skipped


def to_sft(records: list[Record]) -> tuple[list[SFTRecord], Counter]:
    """Demonstrations: the completion itself, the chosen answer, the A/B winner, or the single best-ranked answer."""
    out: list[SFTRecord] = []
    skipped: Counter = Counter()
    for r in records:
        if isinstance(r, SFTRecord):
            out.append(r)
        elif isinstance(r, PreferencePair) and isinstance(r.chosen, str):
            out.append(SFTRecord(r.prompt, r.chosen))
        elif isinstance(r, Comparison) and r.label in ("a", "b") and isinstance(r.response_a, str):
            out.append(SFTRecord(r.prompt, r.response_a if r.label == "a" else r.response_b))
        elif isinstance(r, Ranking) and not r.not_rankable and r.ranks.count(min(r.ranks)) == 1:
            best = r.responses[r.ranks.index(min(r.ranks))]
            if isinstance(best, str):
                out.append(SFTRecord(r.prompt, best))
            else:
                skipped["message_response"] += 1
        elif isinstance(r, Generations):
            raise TypeError("prompt/generation records carry no target answer to fine-tune on")
        else:
            skipped[getattr(r, "label", None) or "no_single_best"] += 1
    return out, skipped


def to_ratings(records: list[Record]) -> tuple[list[Rating], Counter]:
    """Thumbs up/down: ratings as they are; a pair's chosen good and rejected bad (the majority of its votes
    decides, a tied vote gives none); an A/B winner good and loser bad, both_bad two bad, a tie none; a ranking's
    best-ranked answers good and worst-ranked bad."""
    out: list[Rating] = []
    skipped: Counter = Counter()

    def add(prompt, good, bad, annotator) -> None:
        out.extend(Rating(prompt, g, "good", annotator) for g in good)
        out.extend(Rating(prompt, b, "bad", annotator) for b in bad)

    for r in records:
        if isinstance(r, Rating):
            out.append(r)
        elif isinstance(r, PreferencePair):
            votes = r.votes or {"chosen": 1}
            lead = votes.get("chosen", 0) - votes.get("rejected", 0)
            if lead == 0:
                skipped["tied_votes"] += 1
            else:
                win, lose = (r.chosen, r.rejected) if lead > 0 else (r.rejected, r.chosen)
                add(r.prompt, [win], [lose], r.annotator)
        elif isinstance(r, Comparison):
            if r.label == "tie":
                skipped["tie"] += 1
            elif r.label == "both_bad":
                add(r.prompt, [], [r.response_a, r.response_b], r.annotator)
            else:
                win, lose = (r.response_a, r.response_b) if r.label == "a" else (r.response_b, r.response_a)
                add(r.prompt, [win], [lose], r.annotator)
        elif isinstance(r, Ranking):
            best, worst = min(r.ranks), max(r.ranks)
            if r.not_rankable or best == worst:
                skipped["not_rankable" if r.not_rankable else "all_tied"] += 1
                continue
            good = [x for x, k in zip(r.responses, r.ranks) if k == best]
            bad = [x for x, k in zip(r.responses, r.ranks) if k == worst]
            add(r.prompt, good, bad, r.annotator)
        else:
            raise TypeError(f"cannot make ratings from {type(r).__name__} records")
    return out, skipped


def convert(records: list[Record], to: str) -> tuple[list[Record], Counter]:
    if to not in TARGETS:
        raise ValueError(f"unknown target format {to!r} (one of {', '.join(TARGETS)})")
    return {"pairs": to_pairs, "sft": to_sft, "comparisons": to_comparisons, "ratings": to_ratings}[to](records)
