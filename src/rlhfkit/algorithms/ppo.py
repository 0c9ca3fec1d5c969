"""PPO with a critic and a per-token KL penalty to the reference policy (Ziegler et al. 2019; Ouyang et al. 2022),
following "The N implementation details of RLHF with PPO" (Huang et al. 2024).

Each iteration: rollout (sample one response per prompt) -> score (reference logprobs, values, task reward) ->
advantages (KL-shaped token rewards, GAE, whitening) -> update (ppo_epochs over shuffled minibatches of the clipped
surrogate + clipped value loss) -> log. Dropout is off in every model, so rollout and update see the same policy.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from rlhfkit.advantages import (
    AdaptiveKLController,
    FixedKLController,
    explained_variance,
    gae,
    kl_estimate,
    kl_shaped_rewards,
    normalize_scores,
    whiten_advantages,
)
from rlhfkit.config import ConfigError, PPOConfig, save_config
from rlhfkit.data.io import read_records
from rlhfkit.losses import ppo_clip_loss, value_clip_loss
from rlhfkit.models.load import encode_prompt, format_prompt, load_causal_lm, load_tokenizer, save_model
from rlhfkit.models.reward import PromptResponseScorer, load_reward_model, pad_left, read_stats
from rlhfkit.models.sampler import Samples, sample
from rlhfkit.models.value import load_value_model
from rlhfkit.ops import entropy_from_logits, logprobs_from_logits, masked_mean, masked_whiten
from rlhfkit.runtime.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from rlhfkit.runtime.dist import make_accelerator
from rlhfkit.runtime.metrics import MetricsLog
from rlhfkit.runtime.overlap import SideBySide
from rlhfkit.runtime.progress import progress_bar
from rlhfkit.runtime.training import adamw, step_indices


class Rollout(NamedTuple):
    query_response: Tensor  # (B, P + T) left-padded prompt + sampled response ids
    attention_mask: Tensor  # (B, P + T) 1 on real prompt tokens and on response tokens up to and including EOS
    position_ids: Tensor  # (B, P + T) positions counting real tokens only
    response_mask: Tensor  # (B, T) 1 on response tokens up to and including EOS
    logprobs: Tensor  # (B, T) sampling policy logprobs (logits / temperature)
    ref_logprobs: Tensor  # (B, T)
    values: Tensor  # (B, T) critic value before each response token
    scores: Tensor  # (B,) task reward of each full response (after the missing-EOS penalty and normalization)
    raw_scores: Tensor  # (B,) task reward as the reward model / function gave it


def response_logits(policy: nn.Module, rollout: Rollout, idx: Tensor, *, context: int, temperature: float) -> Tensor:
    """Logits / temperature of the policy at the positions that predict each response token of rows `idx`."""
    # position t predicts token t + 1: response token i is predicted at context - 1 + i, so only the last T + 1
    # positions need logits (no vocabulary projection over the prompt)
    keep = rollout.query_response.size(1) - context + 1
    logits = policy(
        input_ids=rollout.query_response[idx],
        attention_mask=rollout.attention_mask[idx],
        position_ids=rollout.position_ids[idx],
        use_cache=False,
        logits_to_keep=keep,
    ).logits
    return logits[:, :-1].float() / temperature


def response_values(critic: nn.Module, rollout: Rollout, idx: Tensor, *, context: int) -> Tensor:
    """The critic's value before each response token of rows `idx`."""
    values = critic(rollout.query_response[idx], rollout.attention_mask[idx], rollout.position_ids[idx])
    return values[:, context - 1 : -1]


def policy_loss(
    policy: nn.Module, rollout: Rollout, advantages: Tensor, idx: Tensor, *, context: int, cfg: PPOConfig
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped surrogate of rows `idx`, and what to log about it."""
    logits = response_logits(policy, rollout, idx, context=context, temperature=cfg.temperature)
    new_logprobs = logprobs_from_logits(logits, rollout.query_response[idx, context:])
    mask = rollout.response_mask[idx].float()
    loss, clipfrac, approx_kl = ppo_clip_loss(
        new_logprobs, rollout.logprobs[idx], advantages[idx], mask, cliprange=cfg.cliprange
    )
    with torch.no_grad():
        entropy = masked_mean(entropy_from_logits(logits), mask)
    return loss, {"pg_loss": loss, "clipfrac": clipfrac, "approx_kl": approx_kl, "entropy": entropy}


def value_loss(
    critic: nn.Module, rollout: Rollout, returns: Tensor, idx: Tensor, *, context: int, cfg: PPOConfig
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped value loss of rows `idx` (times vf_coef), and what to log about it."""
    new_values = response_values(critic, rollout, idx, context=context)
    mask = rollout.response_mask[idx].float()
    loss, clipfrac = value_clip_loss(
        new_values, rollout.values[idx], returns[idx], mask, cliprange_value=cfg.cliprange_value
    )
    return cfg.vf_coef * loss, {"vf_loss": loss, "vf_clipfrac": clipfrac}


def optimize(
    acc,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    loss_fn: Callable[[Tensor], tuple[Tensor, dict[str, Tensor]]],
    minibatches: list[Tensor],
    mask: Tensor,
    *,
    grad_accum: int,
    max_grad_norm: float,
) -> dict[str, list[float]]:
    """One optimizer step per minibatch of row indices; `loss_fn(rows)` gives a token-mean loss and values to log.
    Micro-batches weigh by their share of the minibatch's response tokens, so grad_accum does not change the step."""
    module.train()
    logged: dict[str, list[float]] = {}
    for mb in minibatches:
        mb_tokens = mask[mb].sum().clamp(min=1)
        micro = len(mb) // grad_accum
        for j in range(grad_accum):
            idx = mb[j * micro : (j + 1) * micro]
            with nullcontext() if j == grad_accum - 1 else acc.no_sync(module):
                loss, values = loss_fn(idx)
                acc.backward(loss * (mask[idx].sum() / mb_tokens))
            for k, v in values.items():
                logged.setdefault(k, []).append(v.item())
        if max_grad_norm > 0:
            acc.clip_grad_norm_(module.parameters(), max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return logged


def disable_dropout(model: nn.Module) -> None:
    """PPO needs the rollout and the update to see the same function (implementation detail: no dropout)."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    config = getattr(model, "config", None)
    for name in ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "attn_pdrop", "embd_pdrop"):
        if config is not None and isinstance(getattr(config, name, None), float):
            setattr(config, name, 0.0)


def load_reward_fn(spec: str) -> Callable[[list[str], list[str]], list[float]]:
    """ "package.module:function" or "path/to/file.py:function"."""
    module_name, sep, fn_name = spec.rpartition(":")
    if not sep or not module_name or not fn_name:
        raise ConfigError(f"reward_fn must look like module:function or file.py:function, got {spec!r}")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.exists():
            raise ConfigError(f"reward_fn: {path}: no such file")
        spec_obj = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec_obj)  # type: ignore[arg-type]
        spec_obj.loader.exec_module(module)  # type: ignore[union-attr]
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise ConfigError(f"reward_fn: cannot import {module_name!r}: {e}") from e
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ConfigError(f"reward_fn: {module_name} has no function {fn_name!r}")
    return fn


def hf_sample(
    model,
    input_ids: Tensor,
    attention_mask: Tensor,
    *,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    temperature: float,
    top_p: float,
    generator: torch.Generator | None = None,
) -> Samples:
    """The transformers `generate` path (fallback and oracle); log-probabilities from its scores."""
    if generator is not None:
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    out = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=max_new_tokens,
        do_sample=temperature > 0,
        temperature=temperature if temperature > 0 else None,
        top_p=top_p if temperature > 0 else None,
        top_k=0 if temperature > 0 else None,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        output_logits=True,
        return_dict_in_generate=True,
    )
    tokens = out.sequences[:, input_ids.size(1) :]
    logits = torch.stack(out.logits, dim=1).float()
    logprobs = logprobs_from_logits(logits, tokens, temperature=temperature if temperature > 0 else 1.0)
    is_eos = tokens == eos_id
    mask = ((is_eos.cumsum(dim=1) - is_eos.long()) == 0).long()
    return Samples(tokens.masked_fill(mask == 0, pad_id), logprobs * mask, mask)


@dataclass
class RewardSource:
    """The task reward: a reward model (scored on token ids) or a Python function (scored on text)."""

    scorer: PromptResponseScorer | None
    fn: Callable[[list[str], list[str]], list[float]] | None
    same_tokenizer: bool
    tokenizer: Any
    stats: dict[str, float] | None

    @torch.no_grad()
    def __call__(
        self, prompts: list, prompt_ids: list[list[int]], responses: list[list[int]], texts: list[str], *, template: str
    ) -> Tensor:
        if self.fn is not None:
            as_text = [
                p if isinstance(p, str) else format_prompt(self.tokenizer, p, template=template) for p in prompts
            ]
            scores = self.fn(as_text, texts)
            if len(scores) != len(texts):
                raise ValueError(f"reward_fn returned {len(scores)} scores for {len(texts)} responses")
            return torch.tensor([float(s) for s in scores])
        if not self.same_tokenizer:  # a reward model with its own vocabulary: re-encode the text
            prompt_ids = [encode_prompt(self.tokenizer, p, template=template) for p in prompts]
            responses = [
                self.tokenizer(t, add_special_tokens=False).input_ids + [self.tokenizer.eos_token_id] for t in texts
            ]
        return self.scorer(prompt_ids, responses, list(range(len(responses)))).cpu()


def make_reward_source(cfg: PPOConfig, policy_tokenizer, device) -> RewardSource:
    if cfg.reward_fn:
        return RewardSource(None, load_reward_fn(cfg.reward_fn), True, policy_tokenizer, None)
    tokenizer = load_tokenizer(cfg.reward_model)
    model = load_reward_model(cfg.reward_model, tokenizer=tokenizer, dtype=cfg.dtype, device=str(device)).eval()
    disable_dropout(model)
    for p in model.parameters():
        p.requires_grad_(False)
    same = (
        tokenizer.get_vocab() == policy_tokenizer.get_vocab()
        and tokenizer.eos_token_id == policy_tokenizer.eos_token_id
    )
    stats = read_stats(cfg.reward_model) if cfg.normalize_reward else None
    return RewardSource(PromptResponseScorer(model, pad_id=tokenizer.pad_token_id), None, same, tokenizer, stats)


class Diagnostics:
    """Warnings with their likely cause, each kind at most once every 20 iterations."""

    def __init__(self, cfg: PPOConfig, emit: Callable[[str], None]):
        self.cfg, self.emit = cfg, emit
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
        limit = max(10 * self.cfg.target_kl, 5.0) if self.cfg.target_kl else 5.0
        if kl > limit:
            self.warn(
                "exploding_kl",
                it,
                f"KL {kl:.2f} per sequence is far above {limit:.1f}: lower learning_rate "
                f"(now {self.cfg.learning_rate}), raise kl_coef, or set target_kl for adaptive control.",
            )
        if it >= 10 and abs(row["value_explained_variance"]) < 0.05:
            self.warn(
                "critic",
                it,
                f"value explained variance {row['value_explained_variance']:.3f} is near 0: the "
                "critic is not predicting returns. Initialise it from the reward model (critic_init=reward) "
                "or lower the learning rate (the critic's AdamW makes its step size independent of vf_coef).",
            )
        if len(self.history) >= 20:
            first, last = self.history[:5], self.history[-5:]
            mean = lambda rows, k: sum(r[k] for r in rows) / len(rows)  # noqa: E731
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


def train(
    cfg: PPOConfig, *, evaluate: Callable[[int, nn.Module], dict[str, float]] | None = None, eval_every: int = 0
) -> dict[str, Any]:
    """Run PPO. `evaluate(iteration, policy)`, if given, is called on the main process after the first iteration
    and every `eval_every` iterations (and at the end); what it returns is logged in that iteration's row."""
    # --- setup ---
    cfg.validate()
    acc = make_accelerator(device=cfg.device)
    world, rank, main = acc.num_processes, acc.process_index, acc.is_main_process
    if cfg.batch_size % world or cfg.minibatch_size % world or (cfg.minibatch_size // world) % cfg.grad_accum:
        raise ConfigError(
            f"batch_size ({cfg.batch_size}) and minibatch_size ({cfg.minibatch_size}) must split "
            f"evenly over {world} processes and grad_accum ({cfg.grad_accum})"
        )
    from accelerate.utils import set_seed

    set_seed(cfg.seed)
    out = Path(cfg.output_dir)
    tokenizer = load_tokenizer(cfg.policy, padding_side="left")
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    prompts = [r.prompt for r in read_records(cfg.prompts_file).records]
    if len(prompts) < cfg.batch_size:
        raise ConfigError(f"{cfg.prompts_file}: {len(prompts)} prompts, fewer than batch_size ({cfg.batch_size})")
    prompt_ids = [encode_prompt(tokenizer, p, template=cfg.prompt_template)[-cfg.max_prompt_length :] for p in prompts]

    policy = load_causal_lm(cfg.policy, dtype=cfg.dtype, device=str(acc.device), lora=cfg.lora)
    reference = None
    if cfg.lora.r == 0:  # with LoRA the reference is the same weights with the adapters switched off
        reference = load_causal_lm(cfg.policy, dtype=cfg.dtype, device=str(acc.device)).eval()
        for p in reference.parameters():
            p.requires_grad_(False)
        disable_dropout(reference)
    critic_src = cfg.reward_model if cfg.critic_init == "reward" and cfg.reward_model else cfg.policy
    critic = load_value_model(
        critic_src, pad_token_id=pad_id, dtype=cfg.dtype, device=str(acc.device), zero_head=critic_src == cfg.policy
    )
    disable_dropout(policy)
    disable_dropout(critic)
    reward = make_reward_source(cfg, tokenizer, acc.device)

    # Policy and critic have their own AdamW (and gradient clipping): given a rollout their updates are independent,
    # so on a CPU they can run side by side.
    iterations = cfg.iterations
    updates_per_iteration = cfg.ppo_epochs * (cfg.batch_size // cfg.minibatch_size)
    optimizers, schedulers = [], []
    for module in (policy, critic):
        optimizers.append(adamw(module, learning_rate=cfg.learning_rate, weight_decay=0.0, eps=1e-5))
        schedulers.append(
            torch.optim.lr_scheduler.LambdaLR(
                optimizers[-1], lambda u: max(0.0, 1 - u / (iterations * updates_per_iteration))
            )
        )
    policy, critic, policy_opt, critic_opt = acc.prepare(policy, critic, *optimizers)
    acc.register_for_checkpointing(*schedulers)
    policy_sched, critic_sched = schedulers
    kl_ctl = (
        AdaptiveKLController(cfg.kl_coef, target=cfg.target_kl, horizon=cfg.kl_horizon)
        if cfg.target_kl
        else FixedKLController(cfg.kl_coef)
    )

    start = 0
    checkpoint = latest_checkpoint(out) if cfg.resume else None
    if checkpoint is not None:
        state = load_checkpoint(acc, checkpoint)
        start = state["step"]
        kl_ctl.load_state_dict(state["kl_ctl"])
        acc.print(f"resuming from {checkpoint} (iteration {start} of {iterations})")
    elif cfg.resume:
        acc.print(f"resume=true but {out}/checkpoints holds no checkpoint; starting from iteration 0")
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    log = MetricsLog(out, enabled=main, resume_from_step=start if checkpoint else None)
    diagnostics = Diagnostics(cfg, acc.print)
    unwrapped_policy, unwrapped_critic = acc.unwrap_model(policy), acc.unwrap_model(critic)
    local_batch, local_mb = cfg.batch_size // world, cfg.minibatch_size // world

    # --- loop ---
    overlap = cfg.overlap_critic and acc.device.type == "cpu" and world == 1
    with SideBySide(overlap) as side, progress_bar("ppo", total=iterations, completed=start, enabled=main) as advance:
        for it in range(start, iterations):
            t0 = time.perf_counter()
            # rollout
            chosen = step_indices(it, n=len(prompts), batch_size=cfg.batch_size, seed=cfg.seed)[rank::world]
            query, query_mask = pad_left([prompt_ids[i] for i in chosen], pad_id=pad_id, device=acc.device)
            generator = torch.Generator(device=acc.device).manual_seed(cfg.seed * 100003 + it * world + rank)
            unwrapped_policy.eval()
            sampler = sample if cfg.sampler == "rlhfkit" else hf_sample
            with torch.no_grad():
                samples = sampler(
                    unwrapped_policy,
                    query,
                    query_mask,
                    max_new_tokens=cfg.max_new_tokens,
                    eos_id=eos_id,
                    pad_id=pad_id,
                    temperature=cfg.temperature,
                    top_p=cfg.top_p,
                    generator=generator,
                )
            t1 = time.perf_counter()

            # score
            context = query.size(1)
            rollout = score_rollout(
                cfg,
                unwrapped_policy,
                unwrapped_critic,
                reference,
                reward,
                tokenizer,
                samples,
                query,
                query_mask,
                [prompts[i] for i in chosen],
                [prompt_ids[i] for i in chosen],
                context=context,
            )
            t2 = time.perf_counter()

            # advantages
            mask = rollout.response_mask.float()
            kl_tokens = kl_estimate(rollout.logprobs, rollout.ref_logprobs, kind=cfg.kl_estimator) * mask
            rewards = kl_shaped_rewards(rollout.scores.to(mask.device), kl_tokens, mask, kl_coef=kl_ctl.value)
            if cfg.whiten_rewards:
                rewards = masked_whiten(rewards, mask, shift_mean=False)
            advantages, returns = gae(rewards, rollout.values, mask, gamma=cfg.gamma, lam=cfg.lam)
            advantages = whiten_advantages(advantages, mask)

            # update: ppo_epochs passes over shuffled minibatches, the same ones for policy and critic
            minibatches = []
            for epoch in range(cfg.ppo_epochs):
                shuffle = torch.Generator().manual_seed(cfg.seed + 7919 * it + epoch)
                order = torch.randperm(local_batch, generator=shuffle)
                minibatches += [order[i : i + local_mb] for i in range(0, local_batch, local_mb)]
            common = dict(
                minibatches=minibatches, mask=mask, grad_accum=cfg.grad_accum, max_grad_norm=cfg.max_grad_norm
            )
            policy_loss_fn = partial(policy_loss, policy, rollout, advantages, context=context, cfg=cfg)
            value_loss_fn = partial(value_loss, critic, rollout, returns, context=context, cfg=cfg)
            policy_stats, critic_stats = side.run(
                partial(optimize, acc, policy, policy_opt, policy_sched, policy_loss_fn, **common),
                partial(optimize, acc, critic, critic_opt, critic_sched, value_loss_fn, **common),
            )
            means = {k: sum(v) / len(v) for k, v in {**policy_stats, **critic_stats}.items()}
            t3 = time.perf_counter()

            # log
            seq_kl = acc.gather(kl_tokens.sum(dim=1)).mean().item()
            kl_ctl.update(seq_kl, cfg.batch_size)
            done = it + 1
            lengths = mask.sum(dim=1)
            raw = acc.gather(rollout.raw_scores.to(acc.device))
            all_lengths = acc.gather(lengths)
            row = {
                "step": done,
                "episodes": done * cfg.batch_size,
                "reward_mean": raw.mean().item(),
                "reward_std": raw.std().item() if raw.numel() > 1 else 0.0,
                "score_mean": acc.gather(rollout.scores.to(acc.device)).mean().item(),
                "kl": seq_kl,
                "kl_coef": kl_ctl.value,
                **means,  # entropy, clipfrac, approx_kl, pg_loss, vf_loss, vf_clipfrac over the update
                "value_explained_variance": explained_variance(rollout.values, returns, mask),
                "response_length": all_lengths.float().mean().item(),
                "eos_fraction": (rollout.query_response[:, context:] == eos_id).any(dim=1).float().mean().item(),
                "reward_length_corr": _corr(raw.float(), all_lengths.float()),
                "learning_rate": policy_sched.get_last_lr()[0],
                "time_generation": t1 - t0,
                "time_scoring": t2 - t1,
                "time_update": t3 - t2,
            }
            if not all(
                math.isfinite(v) for k, v in row.items() if k not in ("reward_length_corr", "value_explained_variance")
            ):
                bad = [k for k, v in row.items() if not math.isfinite(v)]
                raise FloatingPointError(
                    f"{', '.join(bad)} became NaN/inf at iteration {done}; stopping. The last "
                    f"good checkpoint is kept: {latest_checkpoint(out)}. Lower learning_rate "
                    f"(now {cfg.learning_rate}) or check the reward for NaN."
                )
            if evaluate is not None and main and (done % max(eval_every, 1) == 0 or done == iterations or it == 0):
                unwrapped_policy.eval()
                row.update(evaluate(done, unwrapped_policy))
            new_warnings = diagnostics.check(done, row)
            if new_warnings:
                row["warnings"] = new_warnings
            if done % cfg.logging_steps == 0 or done == iterations:
                log.log(row)
            advance(status=f"reward {row['reward_mean']:.3f} kl {seq_kl:.3f}")
            if cfg.save_steps and done % cfg.save_steps == 0 and done < iterations:
                save_checkpoint(acc, out, done, {"kl_ctl": kl_ctl.state_dict()}, keep=cfg.save_total_limit)

    # --- save ---
    rows = log.read() if main else []
    tenth = max(1, len(rows) // 10)
    summary = {
        "iterations": iterations,
        "episodes": iterations * cfg.batch_size,
        "resumed_from_step": start,
        "world_size": world,
    }
    if rows:
        summary.update(
            {
                "reward_first_tenth": sum(r["reward_mean"] for r in rows[:tenth]) / tenth,
                "reward_last_tenth": sum(r["reward_mean"] for r in rows[-tenth:]) / tenth,
                "kl_last_tenth": sum(r["kl"] for r in rows[-tenth:]) / tenth,
                "time_generation": sum(r["time_generation"] for r in rows),
                "time_scoring": sum(r["time_scoring"] for r in rows),
                "time_update": sum(r["time_update"] for r in rows),
            }
        )
    if main:
        save_model(unwrapped_policy, tokenizer, out, merge_lora=cfg.lora.merge)
        log.summary(summary)
    acc.wait_for_everyone()
    acc.end_training()
    return summary


def _corr(x: Tensor, y: Tensor) -> float:
    if x.numel() < 2 or x.std() == 0 or y.std() == 0:
        return 0.0
    return torch.corrcoef(torch.stack([x, y]))[0, 1].item()


@torch.no_grad()
def score_rollout(
    cfg: PPOConfig,
    policy: nn.Module,
    critic: nn.Module,
    reference,
    reward: RewardSource,
    tokenizer,
    samples: Samples,
    query: Tensor,
    query_mask: Tensor,
    prompts: list,
    prompt_ids: list[list[int]],
    *,
    context: int,
) -> Rollout:
    """Reference logprobs, values and task scores of a batch of samples."""
    query_response = torch.cat([query, samples.tokens], dim=1)
    attention_mask = torch.cat([query_mask, samples.mask], dim=1)
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    responses, mask = samples.tokens, samples.mask
    policy.eval()
    critic.eval()
    keep = query_response.size(1) - context + 1  # logits only where response tokens are predicted
    inputs = dict(input_ids=query_response, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    if reference is None:  # LoRA: the base weights are the reference
        with policy.disable_adapter():
            ref_logits = policy(**inputs, logits_to_keep=keep).logits
    else:
        ref_logits = reference(**inputs, logits_to_keep=keep).logits
    ref_logprobs = logprobs_from_logits(ref_logits[:, :-1], responses, temperature=cfg.temperature)
    kept = [responses[i, : int(mask[i].sum())].tolist() for i in range(responses.size(0))]
    texts = tokenizer.batch_decode(responses.masked_fill(mask == 0, tokenizer.pad_token_id), skip_special_tokens=True)
    raw = reward(prompts, prompt_ids, kept, texts, template=cfg.prompt_template).float()
    critic_values = critic(query_response, attention_mask, position_ids)[:, context - 1 : -1]
    scores = raw.clone()
    if reward.stats is not None:
        scores = normalize_scores(scores, mean=reward.stats["score_mean"], std=reward.stats["score_std"])
    if cfg.missing_eos_penalty:
        has_eos = (responses == tokenizer.eos_token_id).any(dim=1).cpu()
        scores = torch.where(has_eos, scores, scores - cfg.missing_eos_penalty)
    return Rollout(
        query_response,
        attention_mask,
        position_ids,
        mask,
        samples.logprobs * mask,
        ref_logprobs * mask,
        critic_values * mask,
        scores.to(query.device),
        raw,
    )
