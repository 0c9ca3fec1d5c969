"""The arena's leaderboard: Bradley-Terry strengths from blind A/B votes, on the Elo scale, with bootstrap intervals.

A vote for A is a win of the model shown as A; a tie and "both bad" count half a win to each side (as Chatbot Arena
counts them). Strengths are fitted by Hunter's MM algorithm (Hunter 2004, "MM algorithms for generalized
Bradley-Terry models", eq. 3): p_i <- W_i / sum_j N_ij / (p_i + p_j), with W_i the wins of i and N_ij the games of
i and j. A rating is 1000 + 400 log10(p_i / geometric mean of p): 400 points is a factor of 10 in the odds of
winning, as in Elo. `prior` adds that many virtual tied games between every two models, so that a model that won
(or lost) every game still has a finite rating and models that never met are still comparable.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

SCALE = 400.0 / math.log(10.0)  # rating points per unit of log strength
WIN = {"a": (1.0, 0.0), "b": (0.0, 1.0), "tie": (0.5, 0.5), "both_bad": (0.5, 0.5)}


def _strongly_connected(wins: np.ndarray) -> bool:
    """Whether every model beat, directly or through others, every other model (Hunter's condition for a finite
    maximum-likelihood estimate without a prior)."""
    n = len(wins)

    def reaches_all(adj: np.ndarray) -> bool:
        seen, stack = {0}, [0]
        while stack:
            i = stack.pop()
            for j in np.nonzero(adj[i] > 0)[0]:
                if int(j) not in seen:
                    seen.add(int(j))
                    stack.append(int(j))
        return len(seen) == n

    return reaches_all(wins) and reaches_all(wins.T)


def _fit(wins: np.ndarray, *, tol: float, max_iter: int) -> np.ndarray:
    """Log strengths (mean 0) from a matrix of wins[i, j] = wins of i over j."""
    games = wins + wins.T
    total = wins.sum(axis=1)
    p = np.ones(len(wins))
    for _ in range(max_iter):
        denom = (games / (p[:, None] + p[None, :])).sum(axis=1)
        new = total / denom
        new /= math.exp(np.log(new).mean())
        done = np.max(np.abs(new - p) / p) < tol
        p = new
        if done:
            break
    log_p = np.log(p)
    return log_p - log_p.mean()


def _arrays(battles: list[tuple[int, int, str]]) -> tuple[np.ndarray, ...]:
    """The battles as arrays: the index of A, of B, and the wins each gets (1, 0, or 0.5 each)."""
    i = np.array([a for a, _, _ in battles], dtype=np.int64)
    j = np.array([b for _, b, _ in battles], dtype=np.int64)
    win_i, win_j = np.array([WIN[label] for _, _, label in battles], dtype=float).reshape(-1, 2).T
    return i, j, win_i, win_j


def _wins(arrays: tuple[np.ndarray, ...], counts: np.ndarray, n_models: int, prior: float) -> np.ndarray:
    """wins[i, j]: the wins of i over j, each battle counted `counts` times, plus half of `prior` each way."""
    i, j, win_i, win_j = arrays
    wins = np.full((n_models, n_models), prior / 2.0)
    np.fill_diagonal(wins, 0.0)
    cells = n_models * n_models
    wins += np.bincount(i * n_models + j, weights=counts * win_i, minlength=cells).reshape(n_models, n_models)
    wins += np.bincount(j * n_models + i, weights=counts * win_j, minlength=cells).reshape(n_models, n_models)
    return wins


def bradley_terry(
    battles: Iterable[tuple[str, str, str]], *, prior: float = 1.0, tol: float = 1e-12, max_iter: int = 100_000
) -> dict[str, float]:
    """Elo-scale ratings (mean 1000) of the models in `battles`, each (model shown as A, model shown as B, label)
    with label a | b | tie | both_bad. With prior=0 every model must have beaten, through others, every other."""
    models, indexed = _index(battles)
    if not models:
        return {}
    wins = _wins(_arrays(indexed), np.ones(len(indexed)), len(models), prior)
    if prior <= 0 and not _strongly_connected(wins):
        raise ValueError("without a prior, every model must win and lose against the others (else a rating is inf)")
    ratings = 1000.0 + SCALE * _fit(wins, tol=tol, max_iter=max_iter)
    return dict(zip(models, ratings.tolist()))


def _index(battles: Iterable[tuple[str, str, str]]) -> tuple[list[str], list[tuple[int, int, str]]]:
    battles = list(battles)
    for a, b, label in battles:
        if label not in WIN:
            raise ValueError(f"label {label!r} is not one of {', '.join(WIN)}")
        if a == b:
            raise ValueError(f"a model cannot battle itself ({a!r})")
    models = sorted({m for a, b, _ in battles for m in (a, b)})
    at = {m: i for i, m in enumerate(models)}
    return models, [(at[a], at[b], label) for a, b, label in battles]


def leaderboard(
    battles: Iterable[tuple[str, str, str]],
    *,
    rounds: int = 200,
    seed: int = 0,
    prior: float = 1.0,
    confidence: float = 0.95,
) -> list[dict]:
    """One row per model, best first: its rating, a bootstrap interval (`rounds` resamples of the battles with
    replacement, the (1 - confidence)/2 and (1 + confidence)/2 percentiles), and its battles, wins, losses and ties
    (both bad included). The prior must be positive: a resample may hold only one model's wins."""
    if prior <= 0:
        raise ValueError("the bootstrap needs prior > 0")
    battles = list(battles)
    models, indexed = _index(battles)
    if not models:
        return []
    n = len(indexed)
    point = bradley_terry(battles, prior=prior)
    rng = np.random.default_rng(seed)
    arrays = _arrays(indexed)
    samples = np.empty((rounds, len(models)))
    for r in range(rounds):
        counts = np.bincount(rng.integers(0, n, n), minlength=n)
        samples[r] = 1000.0 + SCALE * _fit(_wins(arrays, counts, len(models), prior), tol=1e-9, max_iter=10_000)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(samples, [tail, 100.0 - tail], axis=0)
    rows = []
    for i, m in enumerate(models):
        record = {"battles": 0, "wins": 0, "losses": 0, "ties": 0}
        for a, b, label in indexed:
            if i not in (a, b):
                continue
            record["battles"] += 1
            if label in ("tie", "both_bad"):
                record["ties"] += 1
            elif (label == "a") == (i == a):
                record["wins"] += 1
            else:
                record["losses"] += 1
        rows.append({"model": m, "rating": point[m], "low": float(low[i]), "high": float(high[i]), **record})
    return sorted(rows, key=lambda row: -row["rating"])
