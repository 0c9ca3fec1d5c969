"""The rule-based reward both sides of bench/grpo.py optimise (`rlhf ppo reward_fn=bench/rewards.py:distinct_words`;
trl_grpo.py wraps the same function for TRL's reward_funcs)."""

from __future__ import annotations


def distinct_words(prompts: list[str], responses: list[str]) -> list[float]:
    """Distinct words in the response, over 10: cheap to compute and different for almost every sample."""
    return [len(set(r.split())) / 10 for r in responses]
