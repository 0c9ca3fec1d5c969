"""Inter-annotator agreement on nominal labels (A/B comparisons): percent agreement, Cohen's kappa (two raters),
Fleiss' kappa (several raters, Fleiss 1971) and Krippendorff's alpha (nominal, missing data allowed).

`units` maps an item to the labels it received, one per annotator: {item: {annotator: label}}.
"""

from __future__ import annotations

from collections import Counter
from itertools import combinations


def percent_agreement(units: dict) -> float:
    """Share of agreeing annotator pairs, over all pairs that labelled the same item."""
    agree = total = 0
    for labels in units.values():
        for x, y in combinations(labels.values(), 2):
            agree += x == y
            total += 1
    return agree / total if total else float("nan")


def cohens_kappa(units: dict, rater_a: str, rater_b: str) -> float:
    """(p_o - p_e) / (1 - p_e) on the items both raters labelled (Cohen 1960)."""
    pairs = [(u[rater_a], u[rater_b]) for u in units.values() if rater_a in u and rater_b in u]
    if not pairs:
        return float("nan")
    n = len(pairs)
    p_o = sum(x == y for x, y in pairs) / n
    ca, cb = Counter(x for x, _ in pairs), Counter(y for _, y in pairs)
    p_e = sum(ca[k] * cb[k] for k in ca) / n**2
    return (p_o - p_e) / (1 - p_e) if p_e < 1 else 1.0


def fleiss_kappa(units: dict) -> float:
    """Fleiss' kappa over items with the same number (>= 2) of ratings: the most common count is used."""
    sizes = Counter(len(v) for v in units.values() if len(v) >= 2)
    if not sizes:
        return float("nan")
    n = sizes.most_common(1)[0][0]
    rows = [Counter(v.values()) for v in units.values() if len(v) == n]
    categories = set().union(*rows)
    big_n = len(rows)
    p_j = {c: sum(r[c] for r in rows) / (big_n * n) for c in categories}
    p_i = [(sum(r[c] ** 2 for c in categories) - n) / (n * (n - 1)) for r in rows]
    p_bar = sum(p_i) / big_n
    p_e = sum(p**2 for p in p_j.values())
    return (p_bar - p_e) / (1 - p_e) if p_e < 1 else 1.0


def krippendorff_alpha(units: dict) -> float:
    """Nominal alpha = 1 - D_o / D_e from the coincidence matrix; items with one label are not pairable."""
    coincidence: Counter = Counter()
    for labels in units.values():
        values = list(labels.values())
        m = len(values)
        if m < 2:
            continue
        for i, j in ((i, j) for i in range(m) for j in range(m) if i != j):
            coincidence[(values[i], values[j])] += 1 / (m - 1)
    n_c: Counter = Counter()
    for (c, _), w in coincidence.items():
        n_c[c] += w
    n = sum(n_c.values())
    if n <= 1:
        return float("nan")
    d_o = sum(w for (c, k), w in coincidence.items() if c != k) / n
    d_e = sum(n_c[c] * n_c[k] for c in n_c for k in n_c if c != k) / (n * (n - 1))
    return 1 - d_o / d_e if d_e > 0 else 1.0


def agreement_report(units: dict) -> dict:
    raters = Counter(r for u in units.values() for r in u)
    top = [r for r, _ in raters.most_common(2)]
    return {
        "items_with_two_or_more_labels": sum(len(u) >= 2 for u in units.values()),
        "percent_agreement": percent_agreement(units),
        "cohens_kappa_top_two": cohens_kappa(units, *top) if len(top) == 2 else float("nan"),
        "fleiss_kappa": fleiss_kappa(units),
        "krippendorff_alpha": krippendorff_alpha(units),
    }
