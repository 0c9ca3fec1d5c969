"""Best-of-N: sample N answers per prompt and keep the one the reward model scores highest (no training at all).
A baseline every trained policy should beat at equal cost per answer, and a cheap way to serve better answers."""

from __future__ import annotations

from collections.abc import Callable

import torch

from rlhfkit.algorithms.reward import score_texts
from rlhfkit.config import RewardConfig
from rlhfkit.data.schema import Text
from rlhfkit.models.generate import generate_answers


@torch.no_grad()
def best_of_n(
    model,
    tokenizer,
    prompts: list[Text],
    *,
    n: int,
    scorer,
    scorer_tokenizer,
    template: str = "chat",
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
    **sampling,
) -> tuple[list[str], list[float], list[list[float]]]:
    """(best answer per prompt, its score, the scores of all n candidates). `sampling`: generate_answers' settings
    (temperature, top_p, max_new_tokens, seed, ...); temperature 0 would make the n candidates one. An answer cut at
    max_new_tokens is not a whole answer (scoring its text would read it as one): it is kept only when no candidate
    of its prompt finished."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    finished: list[list[bool]] = []
    candidates = generate_answers(
        model,
        tokenizer,
        prompts,
        num_samples=n,
        template=template,
        batch_size=batch_size,
        on_batch=on_batch,
        finished=finished,
        **sampling,
    )
    cfg = RewardConfig(eval_batch_size=batch_size, prompt_template=template)
    flat = score_texts(
        scorer, scorer_tokenizer, [p for p in prompts for _ in range(n)], [a for c in candidates for a in c], cfg=cfg
    ).view(len(prompts), n)
    ended = torch.tensor(finished, dtype=torch.bool)
    ranked = torch.where(ended | ~ended.any(dim=1, keepdim=True), flat, torch.tensor(float("-inf")))
    best = ranked.argmax(dim=1).tolist()
    return (
        [c[i] for c, i in zip(candidates, best)],
        [flat[k, i].item() for k, i in enumerate(best)],
        flat.tolist(),
    )
