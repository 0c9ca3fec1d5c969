"""What can go wrong in a PPO run, said as it happens, with the likely cause."""

from __future__ import annotations

from collections.abc import Callable


class Diagnostics:
    """Warnings with their likely cause, each kind at most once every 20 iterations. `check(iteration, row)` reads
    a metrics row (kl, value_explained_variance, reward_mean, response_length, reward_length_corr) and returns the
    kinds it warned about."""

    def __init__(
        self, *, target_kl: float, learning_rate: float, critic_learning_rate: float, emit: Callable[[str], None]
    ):
        self.target_kl, self.learning_rate, self.critic_learning_rate = target_kl, learning_rate, critic_learning_rate
        self.emit = emit
        self.last: dict[str, int] = {}
        self.history: list[dict[str, float]] = []

    def warn(self, kind: str, it: int, message: str) -> None:
        if it - self.last.get(kind, -(10**9)) >= 20:
            self.last[kind] = it
            self.emit(f"warning [{kind}] iteration {it}: {message}")

    def check(self, it: int, row: dict[str, float]) -> list[str]:
        self.history.append(row)
        before = set(self.last.items())
        kl = row["kl"]
        recent_kl = sum(r["kl"] for r in self.history[-5:]) / len(self.history[-5:])
        if recent_kl < -0.05:  # one noisy batch can dip below 0; a run of them cannot
            self.warn(
                "negative_kl",
                it,
                f"mean KL {recent_kl:.3f} < 0 over the last iterations: the policy gives its own samples lower "
                "probability than the reference. Likely cause: sampling and scoring disagree (temperature, "
                "top-p applied to logprobs, dropout on, or padding/positions differ between the passes).",
            )
        limit = max(10 * self.target_kl, 5.0) if self.target_kl else 5.0
        if kl > limit:
            self.warn(
                "exploding_kl",
                it,
                f"KL {kl:.2f} per sequence is far above {limit:.1f}: lower learning_rate "
                f"(now {self.learning_rate}), raise kl_coef, or set target_kl for adaptive control.",
            )
        if it >= 10 and "value_explained_variance" in row and abs(row["value_explained_variance"]) < 0.05:
            self.warn(
                "critic",
                it,
                f"value explained variance {row['value_explained_variance']:.3f} is near 0: the "
                "critic is not predicting returns. Initialise it from the reward model (critic_init=reward) "
                f"or lower critic_learning_rate (now {self.critic_learning_rate}).",
            )
        if len(self.history) >= 20:
            first, last = self.history[:5], self.history[-5:]

            def mean(rows: list[dict[str, float]], key: str) -> float:
                return sum(r[key] for r in rows) / len(rows)

            if (
                mean(last, "reward_mean") > mean(first, "reward_mean")
                and mean(last, "response_length") > 1.5 * mean(first, "response_length")
                and row.get("reward_length_corr", 0.0) > 0.8
            ):
                self.warn(
                    "length_hacking",
                    it,
                    "reward rises while responses get longer and length explains the "
                    f"reward (correlation {row['reward_length_corr']:.2f}): the reward model may be paying "
                    "for length. Check samples; add a length penalty or retrain the reward model.",
                )
        return [k for k, v in self.last.items() if (k, v) not in before]
