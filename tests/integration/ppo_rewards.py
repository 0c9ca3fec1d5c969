"""Rule-based rewards for the PPO tests (loaded by `reward_fn=tests.integration.ppo_rewards:...`)."""


def thanks(prompts: list[str], responses: list[str]) -> list[float]:
    """1 for a response that thanks the asker, else 0."""
    return [1.0 if "Thank you" in r else 0.0 for r in responses]


def broken(prompts: list[str], responses: list[str]) -> list[float]:
    return [float("nan")] * len(responses)


def brevity(prompts: list[str], responses: list[str]) -> list[float]:
    """Fewer words score higher: a reward every sample earns differently."""
    return [-len(r.split()) / 10 for r in responses]
