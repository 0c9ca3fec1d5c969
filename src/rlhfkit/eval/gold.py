"""Agreement between a model's answer and the human gold answer: exact match, token F1, ROUGE-L.

Answers are normalized as in SQuAD (Rajpurkar et al. 2016): lowercase, punctuation and the articles a/an/the
removed, whitespace collapsed. ROUGE-L is the F1 of the longest common subsequence of normalized tokens (Lin 2004).
"""

from __future__ import annotations

import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: list[str], b: list[str]) -> int:
    """Longest common subsequence, O(len(a) * len(b)) with one row of memory."""
    row = [0] * (len(b) + 1)
    for x in a:
        prev_diag = 0
        for j, y in enumerate(b, start=1):
            prev_diag, row[j] = row[j], prev_diag + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    lcs = lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def gold_metrics(predictions: list[str], golds: list[str]) -> dict[str, float]:
    """Means over the examples: {"exact_match", "token_f1", "rouge_l"}."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} gold answers")
    if not golds:
        return {"exact_match": 0.0, "token_f1": 0.0, "rouge_l": 0.0}
    n = len(golds)
    return {
        "exact_match": sum(map(exact_match, predictions, golds)) / n,
        "token_f1": sum(map(token_f1, predictions, golds)) / n,
        "rouge_l": sum(map(rouge_l, predictions, golds)) / n,
    }
