"""How well reward-model scores agree with human judgements.

- accuracy: share of judgements with a majority for a or b (ties and even splits excluded) where the majority's
  response scores higher; also split by annotator agreement (the majority's share, e.g. 1.0 or 0.67);
- expected calibration error of the model's P(a wins | not a tie) (sigmoid(r_a - r_b) under Bradley-Terry and
  Davidson) against the share preferring a among decisive votes (both orientations of each pair are counted, so the
  orientation in the file does not matter; ties excluded);
- mean and std of all scores.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from rlhfkit.data.preferences import Judgement
from rlhfkit.losses import decisive_win_probability


def expected_calibration_error(predicted: torch.Tensor, target: torch.Tensor, *, bins: int = 10) -> float:
    """sum over equal-width bins of (share of pairs in bin) x |mean predicted - mean target|."""
    if predicted.numel() == 0:
        return 0.0
    which = torch.clamp((predicted * bins).long(), max=bins - 1)
    ece = torch.zeros((), dtype=torch.float64)
    for b in range(bins):
        sel = which == b
        if sel.any():
            ece += sel.double().mean() * (predicted[sel].double().mean() - target[sel].double().mean()).abs()
    return ece.item()


def preference_metrics(
    pairs: list[tuple[float, float, Judgement]],
    scores: list[float],
    *,
    tie_model: str = "davidson",
    tie_param: float = 0.0,
) -> dict[str, object]:
    """pairs: (score of a, score of b, judgement); scores: every scored response (for mean/std). Calibration
    compares the share preferring a among decisive votes with the model's P(a wins | not a tie) under tie_model."""
    correct, by_agreement = [], defaultdict(list)
    predicted, target = [], []
    for s_a, s_b, j in pairs:
        if j.p_a != j.p_b and max(j.p_a, j.p_b) >= j.p_tie:
            ok = float((s_a > s_b) == (j.p_a > j.p_b))
            correct.append(ok)
            by_agreement[f"{max(j.p_a, j.p_b) / (j.p_a + j.p_b + j.p_tie):.2f}"].append(ok)
        if j.p_a + j.p_b > 0:
            q = decisive_win_probability(
                torch.tensor(s_a), torch.tensor(s_b), tie_model=tie_model, tie_param=tie_param
            ).item()
            y = j.p_a / (j.p_a + j.p_b)
            predicted += [q, 1 - q]
            target += [y, 1 - y]
    s = torch.tensor(scores, dtype=torch.float64)
    return {
        "eval_accuracy": sum(correct) / len(correct) if correct else float("nan"),
        "eval_pairs": len(correct),
        "eval_accuracy_by_agreement": {k: sum(v) / len(v) for k, v in sorted(by_agreement.items())},
        "eval_ece": expected_calibration_error(torch.tensor(predicted), torch.tensor(target)),
        "eval_score_mean": s.mean().item() if s.numel() else float("nan"),
        "eval_score_std": s.std().item() if s.numel() > 1 else 0.0,
        "eval_scores": s.numel(),
    }
