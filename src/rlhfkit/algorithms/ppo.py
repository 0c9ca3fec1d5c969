"""PPO with a critic and a per-token KL penalty to the reference policy (Ziegler et al. 2019; Ouyang et al. 2022),
following "The N implementation details of RLHF with PPO" (Huang et al. 2024).

Each iteration: rollout (sample one response per prompt) -> score (old and reference logprobs, values, task
reward) -> advantages (KL-shaped token rewards, GAE, whitening) -> update (ppo_epochs over shuffled minibatches:
the clipped surrogate for the policy, the clipped value loss for the critic) -> log.

Numerics: the logprobs PPO compares (old vs new in the ratio, policy vs reference in the KL) all come from one
function, `response_logprobs`: the same forward pass under the same autocast, cast to fp32, then divided by the
temperature, in row chunks of the update's micro-batch size. The sampler's own logprobs are not used: in bf16 a
KV-cached decode and a full forward differ by up to 0.3 nats per token, a ratio outside the clip range before any
update. Dropout is off in every model, so rollout and update compute the same function.

Sharded (distributed=fsdp on several processes): policy, critic and reference are sharded per decoder layer (fp32
master shards, the FSDP mixed-precision policy as the compute type), and so is a decoder reward model. For the rollout
every process gathers the policy's weights in full and frees them after (`runtime/shard.unsharded`): the sampler's
decoder reads them directly, so each process may stop decoding at its own step. Scoring and the update are sharded
forward passes, the same number on every process.

Critic-free (advantage=grpo, rloo, reinforce_pp, as OpenRLHF offers them): the same loop without a critic, none is
loaded. A rollout then samples num_generations responses per prompt, and only step 3 changes: GRPO normalizes the
rewards within each prompt's group and adds the k3 KL to the reference to the loss; RLOO subtracts the KL from the
sequence reward and the mean of the prompt's other responses from that; REINFORCE++ whitens the discounted returns
of the KL-shaped token rewards over the batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from rlhfkit.advantages import (
    AdaptiveKLController,
    FixedKLController,
    discounted_returns,
    explained_variance,
    gae,
    group_advantages,
    kl_estimate,
    kl_shaped_rewards,
    normalize_scores,
    whiten_advantages,
)
from rlhfkit.config import ConfigError, PPOConfig, save_config
from rlhfkit.data.collate import pad_left
from rlhfkit.data.io import read_records
from rlhfkit.data.prompts import encode_prompt
from rlhfkit.eval.diagnostics import Diagnostics
from rlhfkit.losses import ppo_clip_loss, value_clip_loss
from rlhfkit.models.load import (
    adapters_off,
    checkpoint_activations,
    disable_dropout,
    load_causal_lm,
    load_tokenizer,
    save_model,
)
from rlhfkit.models.reward import (
    Responses,
    RewardFunction,
    RewardModelScore,
    is_decoder_only,
    load_reward_fn,
    load_scorer,
    read_stats,
    same_vocabulary,
)
from rlhfkit.models.sampler import Samples, fast_decoding, hf_sample, sample
from rlhfkit.models.value import load_value_model
from rlhfkit.ops import entropy_from_logits, logprobs_from_logits, masked_mean, masked_whiten
from rlhfkit.runtime.checkpoint import latest_checkpoint, resume_state, save_checkpoint
from rlhfkit.runtime.dist import autocast, compute_dtype, make_accelerator, precision
from rlhfkit.runtime.metrics import MetricsLog, check_finite, mean_of_tenths
from rlhfkit.runtime.overlap import SideBySide
from rlhfkit.runtime.progress import progress_bar
from rlhfkit.runtime.shard import TrainingState, shard, shard_if_layered, unsharded
from rlhfkit.runtime.training import adamw, memory_report, optimizer_step, shards, step_indices, trained_model


class Rollout(NamedTuple):
    query_response: Tensor  # (B, P + T) left-padded prompt + sampled response ids
    attention_mask: Tensor  # (B, P + T) 1 on real prompt tokens and on response tokens up to and including EOS
    position_ids: Tensor  # (B, P + T) positions counting real tokens only
    response_mask: Tensor  # (B, T) 1 on response tokens up to and including EOS
    logprobs: Tensor  # (B, T) policy logprobs before the update (logits / temperature)
    ref_logprobs: Tensor  # (B, T)
    values: Tensor  # (B, T) critic value before each response token
    scores: Tensor  # (B,) task reward of each full response: normalized, then minus the missing-EOS penalty
    raw_scores: Tensor  # (B,) task reward as the reward model / function gave it


def response_logprobs(
    model: nn.Module, rollout: Rollout, idx: Tensor, *, context: int, temperature: float
) -> tuple[Tensor, Tensor]:
    """Logprobs of the response tokens of rows `idx` under logits / temperature, and those logits (fp32)."""
    # position t predicts token t + 1: response token i is predicted at context - 1 + i, so only the last T + 1
    # positions need logits (no vocabulary projection over the prompt)
    logits = model(
        input_ids=rollout.query_response[idx],
        attention_mask=rollout.attention_mask[idx],
        position_ids=rollout.position_ids[idx],
        use_cache=False,
        logits_to_keep=rollout.query_response.size(1) - context + 1,
    ).logits
    logits = logits[:, :-1].float() / temperature
    return logprobs_from_logits(logits, rollout.query_response[idx, context:]), logits


def response_values(critic: nn.Module, rollout: Rollout, idx: Tensor, *, context: int) -> Tensor:
    """The critic's value before each response token of rows `idx`."""
    values = critic(rollout.query_response[idx], rollout.attention_mask[idx], rollout.position_ids[idx])
    return values[:, context - 1 : -1]


def in_chunks(fn: Callable[[Tensor], Tensor], rows: int, size: int) -> Tensor:
    """fn over row chunks of `size` (the update's micro-batch), concatenated."""
    return torch.cat([fn(torch.arange(i, min(i + size, rows))) for i in range(0, rows, size)])


@torch.no_grad()
def score_rollout(
    samples: Samples,
    query: Tensor,
    query_mask: Tensor,
    *,
    policy: nn.Module,
    reference: Callable[[], Any],
    critic: nn.Module | None,
    reward: Callable[[Responses], Tensor],
    prompts: list,
    prompt_ids: list[list[int]],
    tokenizer,
    cfg: PPOConfig,
    chunk: int,
    reward_stats: dict[str, float] | None,
) -> Rollout:
    """Old and reference logprobs, values and task scores of a batch of samples. `reference()` is a context in
    which `policy` computes as the reference (LoRA: adapters off), or yields a separate reference model. Without a
    critic (critic-free advantages) the values are zeros."""
    context = query.size(1)
    tokens, mask = samples.tokens, samples.mask
    attention_mask = torch.cat([query_mask, mask], dim=1)
    partial = Rollout(
        torch.cat([query, tokens], dim=1),
        attention_mask,
        (attention_mask.cumsum(dim=1) - 1).clamp(min=0),
        mask,
        *([None] * 5),
    )
    rows, kw = tokens.size(0), dict(context=context, temperature=cfg.temperature)
    policy.eval()
    logprobs = in_chunks(lambda idx: response_logprobs(policy, partial, idx, **kw)[0], rows, chunk)
    with reference() as ref_model:
        ref_logprobs = in_chunks(lambda idx: response_logprobs(ref_model, partial, idx, **kw)[0], rows, chunk)
    if critic is None:
        values = torch.zeros_like(logprobs)
    else:
        critic.eval()
        values = in_chunks(lambda idx: response_values(critic, partial, idx, context=context), rows, chunk)

    finished = (tokens == tokenizer.eos_token_id).any(dim=1).cpu()
    lengths = mask.sum(dim=1).tolist()
    batch = Responses(
        prompts=prompts,
        prompt_ids=prompt_ids,
        ids=[tokens[i, :n].tolist() for i, n in enumerate(lengths)],
        texts=tokenizer.batch_decode(tokens.masked_fill(mask == 0, tokenizer.pad_token_id), skip_special_tokens=True),
        finished=finished.tolist(),
    )
    raw = reward(batch).float()
    scores = raw.clone()
    if reward_stats is not None:
        scores = normalize_scores(scores, mean=reward_stats["score_mean"], std=reward_stats["score_std"])
    scores = torch.where(finished, scores, scores - cfg.eos_penalty)
    m = mask.float()
    return partial._replace(
        logprobs=logprobs * m,
        ref_logprobs=ref_logprobs * m,
        values=values * m,
        scores=scores.to(query.device),
        raw_scores=raw,
    )


def policy_loss(
    policy: nn.Module,
    rollout: Rollout,
    advantages: Tensor,
    idx: Tensor,
    *,
    context: int,
    cfg: PPOConfig,
    kl_coef: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped surrogate of rows `idx`, and what to log about it. GRPO adds kl_coef times the k3 estimate of the
    KL to the reference (token mean), whose gradient pulls the policy back towards the reference."""
    new_logprobs, logits = response_logprobs(policy, rollout, idx, context=context, temperature=cfg.temperature)
    mask = rollout.response_mask[idx].float()
    pg_loss, clipfrac, approx_kl = ppo_clip_loss(
        new_logprobs, rollout.logprobs[idx], advantages[idx], mask, cliprange=cfg.cliprange
    )
    with torch.no_grad():
        entropy = masked_mean(entropy_from_logits(logits), mask)
    stats = {"pg_loss": pg_loss, "clipfrac": clipfrac, "approx_kl": approx_kl, "entropy": entropy}
    loss = pg_loss
    if cfg.advantage == "grpo":
        # masked first: after EOS the reference logprob is 0 and k3 of a very unlikely pad token would be inf
        kl = masked_mean(kl_estimate(new_logprobs * mask, rollout.ref_logprobs[idx], kind="k3"), mask)
        loss = pg_loss + kl_coef * kl
        stats["kl_loss"] = kl
    return loss, stats


def value_loss(
    critic: nn.Module, rollout: Rollout, returns: Tensor, idx: Tensor, *, context: int, cfg: PPOConfig
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped value loss of rows `idx`, and what to log about it."""
    new_values = response_values(critic, rollout, idx, context=context)
    mask = rollout.response_mask[idx].float()
    loss, clipfrac = value_clip_loss(
        new_values, rollout.values[idx], returns[idx], mask, cliprange_value=cfg.cliprange_value
    )
    return loss, {"vf_loss": loss, "vf_clipfrac": clipfrac}


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
    sharded: TrainingState | None = None,
) -> dict[str, float]:
    """One optimizer step per minibatch of row indices; `loss_fn(rows)` gives a token-mean loss and values to log,
    returned averaged over the micro-batches. Micro-batches weigh by their share of the minibatch's response
    tokens, so grad_accum does not change the step. `sharded`: the module is sharded (clip over the shards)."""
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
        optimizer_step(acc, module, optimizer, scheduler, max_grad_norm=max_grad_norm, sharded=sharded)
    return {k: sum(v) / len(v) for k, v in logged.items()}


def shuffled_minibatches(rows: int, size: int, *, iteration: int, cfg: PPOConfig) -> list[Tensor]:
    """ppo_epochs passes over this process's rows, each shuffled into minibatches of `size` rows."""
    minibatches = []
    for epoch in range(cfg.ppo_epochs):
        order = torch.randperm(rows, generator=torch.Generator().manual_seed(cfg.seed + 7919 * iteration + epoch))
        minibatches += [order[i : i + size] for i in range(0, rows, size)]
    return minibatches


def update(
    acc,
    side: SideBySide,
    rollout: Rollout,
    advantages: Tensor,
    returns: Tensor,
    *,
    policy: tuple[nn.Module, torch.optim.Optimizer, Any],
    critic: tuple[nn.Module, torch.optim.Optimizer, Any] | None,
    minibatches: list[Tensor],
    context: int,
    kl_coef: float,
    cfg: PPOConfig,
    sharded: TrainingState | None = None,
) -> dict[str, float]:
    """Update the policy (clipped surrogate) and the critic (clipped value loss) over the same minibatches; each
    is (model, optimizer, scheduler). On a CPU the two run side by side (`side`). critic None: the policy only."""
    mask = rollout.response_mask.float()
    steps = dict(
        minibatches=minibatches,
        mask=mask,
        grad_accum=cfg.grad_accum,
        max_grad_norm=cfg.max_grad_norm,
        sharded=sharded,
    )
    policy_model = policy[0]

    def update_policy() -> dict[str, float]:
        loss = lambda idx: policy_loss(  # noqa: E731
            policy_model, rollout, advantages, idx, context=context, cfg=cfg, kl_coef=kl_coef
        )
        return optimize(acc, *policy, loss, **steps)

    if critic is None:
        return update_policy()

    def update_critic() -> dict[str, float]:
        loss = lambda idx: value_loss(critic[0], rollout, returns, idx, context=context, cfg=cfg)  # noqa: E731
        return optimize(acc, *critic, loss, **steps)

    policy_stats, critic_stats = side.run(update_policy, update_critic)
    return {**policy_stats, **critic_stats}


def load_reward(cfg: PPOConfig, policy_tokenizer, device, *, dtype: str):
    """The task reward (a reward model or a function), and the reward model's score statistics when rewards are
    normalized with them."""
    if cfg.reward_fn:
        return RewardFunction(load_reward_fn(cfg.reward_fn), policy_tokenizer, cfg.prompt_template), None
    scorer, tokenizer = load_scorer(cfg.reward_model, dtype=dtype, device=str(device))
    same = same_vocabulary(tokenizer, policy_tokenizer)
    stats = read_stats(cfg.reward_model) if cfg.normalize_reward else None
    return RewardModelScore(scorer, tokenizer, same, cfg.prompt_template), stats


def critic_start(cfg: PPOConfig, reward: Any) -> tuple[str, str]:
    """Where the critic starts, and why. The reward model is the better start, but only if it reads the policy's
    tokens left to right: a critic gives a value at every prefix of the policy's own sequence."""
    if cfg.critic_init == "policy" or not cfg.reward_model:
        return cfg.policy, "critic_init=policy" if cfg.reward_model else "reward_fn has no model to start from"
    if not reward.same_tokenizer:
        return cfg.policy, "the reward model's tokenizer differs from the policy's, so it cannot read the policy's ids"
    if not is_decoder_only(reward.scorer.model):
        return cfg.policy, "the reward model is an encoder: it sees the whole text, not each prefix"
    return cfg.reward_model, "the reward model reads the policy's tokens"


class Models(NamedTuple):
    policy: nn.Module  # ddp: prepared by the accelerator (its forward runs under the compute autocast); fsdp: sharded
    critic: nn.Module | None  # prepared or sharded likewise; None for the critic-free advantages
    reference: Callable[[], Any]  # a context yielding the module that computes as the reference
    reward: Callable[[Responses], Tensor]  # the task reward of a batch of responses
    reward_stats: dict[str, float] | None  # the reward model's score mean/std when rewards are normalized
    optimizers: tuple[torch.optim.Optimizer, ...]  # policy's, critic's (if any)
    schedulers: tuple[Any, ...]
    sharded: TrainingState | None  # fsdp: the sharded models and optimizers, for checkpoints; None otherwise
    build_policy: Callable[[], nn.Module]  # a fresh policy as loaded (the shell of a gathered copy under fsdp)
    held: tuple[nn.Module, ...]  # every model this process holds (parameters per process in metrics.json)


def setup_models(cfg: PPOConfig, acc, tokenizer) -> Models:
    """Policy, reference and critic hold fp32 weights and compute under the accelerator's autocast; the frozen reward
    model may be held in the compute dtype. With LoRA the reference is the policy with its adapters off. Policy and
    critic have their own AdamW and gradient clipping: given a rollout their updates are independent, so on a CPU
    they can run side by side. The critic-free advantages load no critic. Under fsdp every model is sharded
    (an encoder reward model, which has no decoder layers to shard, stays whole) before its optimizer is made."""
    device, sharded, mp = str(acc.device), shards(acc, cfg.distributed), precision(acc)

    def build_policy() -> nn.Module:
        return load_causal_lm(cfg.policy, dtype="float32", device=device, lora=cfg.lora)

    policy = checkpoint_activations(build_policy(), cfg.gradient_checkpointing)
    disable_dropout(policy)
    if sharded and not fast_decoding(policy):
        raise ConfigError(
            f"distributed=fsdp rolls out with the project's decoder, which does not know model type "
            f"{policy.config.model_type!r} (it knows llama, mistral, qwen2, qwen3): use distributed=ddp"
        )
    reference = None
    if cfg.lora.r == 0 or cfg.reference:  # else LoRA's base with the adapters off
        reference = load_causal_lm(cfg.reference or cfg.policy, dtype="float32", device=device)
        disable_dropout(reference.eval().requires_grad_(False))
    dtype_name = str(compute_dtype(acc.mixed_precision)).removeprefix("torch.")
    reward, reward_stats = load_reward(cfg, tokenizer, acc.device, dtype=dtype_name)
    critic = None
    if cfg.advantage == "gae":
        critic_src, why = critic_start(cfg, reward)
        if cfg.reward_model and critic_src == cfg.policy:
            acc.print(f"the critic starts from the policy with a zero head: {why}")
        critic = load_value_model(
            critic_src,
            pad_token_id=tokenizer.pad_token_id,
            dtype="float32",
            device=device,
            zero_head=critic_src == cfg.policy,
            score_stats=reward_stats if critic_src == cfg.reward_model else None,
            lora=cfg.lora,
            gradient_checkpointing=cfg.gradient_checkpointing,
        )
        disable_dropout(critic)
    trained = [policy] if critic is None else [policy, critic]
    frozen = [m for m in (reference, getattr(reward, "scorer", None)) if m is not None]
    if sharded:
        for model in trained:
            shard(model, mixed_precision=mp)
        for model in frozen:
            shard_if_layered(model, mixed_precision=mp)
    optimizers = [adamw(policy, learning_rate=cfg.learning_rate, weight_decay=0.0, eps=1e-5)]
    if critic is not None:
        optimizers.append(adamw(critic, learning_rate=cfg.critic_lr, weight_decay=0.0, eps=1e-5))
    updates = cfg.iterations * cfg.ppo_epochs * (cfg.batch_size // cfg.minibatch_size)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lambda u: max(0.0, 1 - u / updates)) for o in optimizers]
    state = TrainingState(list(zip(trained, optimizers))) if sharded else None
    if not sharded and critic is None:
        policy, *optimizers = acc.prepare(policy, *optimizers)
    elif not sharded:
        policy, critic, *optimizers = acc.prepare(policy, critic, *optimizers)
    acc.register_for_checkpointing(*schedulers)
    unwrapped = acc.unwrap_model(policy)

    def reference_model():
        return nullcontext(reference) if reference is not None else adapters_off(unwrapped, policy)

    return Models(
        policy,
        critic,
        reference_model,
        reward,
        reward_stats,
        tuple(optimizers),
        tuple(schedulers),
        state,
        build_policy,
        tuple(trained + frozen),
    )


def load_prompts(cfg: PPOConfig, tokenizer) -> tuple[list, list[list[int]]]:
    """The prompts as given and their token ids as the policy sees them (cut from the left to max_prompt_length)."""
    prompts = [r.prompt for r in read_records(cfg.prompts_file).records]
    if len(prompts) < cfg.batch_size:
        raise ConfigError(f"{cfg.prompts_file}: {len(prompts)} prompts, fewer than batch_size ({cfg.batch_size})")
    ids = [encode_prompt(tokenizer, p, template=cfg.prompt_template)[-cfg.max_prompt_length :] for p in prompts]
    return prompts, ids


def advantages_and_returns(rollout: Rollout, *, kl_coef: float, cfg: PPOConfig) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token KL to the reference, the advantage of every response token, and the critic's targets (returns;
    zeros without a critic). A rollout holds each prompt's num_generations responses side by side."""
    mask = rollout.response_mask.float()
    kl_tokens = kl_estimate(rollout.logprobs, rollout.ref_logprobs, kind=cfg.kl_estimator) * mask
    if cfg.advantage == "grpo":  # the KL is a loss term (policy_loss), not part of the reward
        per_sequence = group_advantages(rollout.scores, group_size=cfg.num_generations, kind="grpo")
        return kl_tokens, per_sequence.unsqueeze(1) * mask, torch.zeros_like(mask)
    if cfg.advantage == "rloo":
        rewards = rollout.scores - kl_coef * kl_tokens.sum(dim=1)
        per_sequence = group_advantages(rewards, group_size=cfg.num_generations, kind="rloo")
        return kl_tokens, per_sequence.unsqueeze(1) * mask, torch.zeros_like(mask)
    rewards = kl_shaped_rewards(rollout.scores, kl_tokens, mask, kl_coef=kl_coef)
    if cfg.whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False)
    if cfg.advantage == "reinforce_pp":
        returns = discounted_returns(rewards, mask, gamma=cfg.gamma)
        return kl_tokens, whiten_advantages(returns, mask), torch.zeros_like(mask)
    advantages, returns = gae(rewards, rollout.values, mask, gamma=cfg.gamma, lam=cfg.lam)
    return kl_tokens, whiten_advantages(advantages, mask), returns


def start_run(cfg: PPOConfig):
    """Check the settings and that every batch splits over the processes, seed every generator; the accelerator."""
    from accelerate.utils import set_seed

    cfg.validate()
    acc = make_accelerator(device=cfg.device, mixed_precision=cfg.mixed_precision)
    world = acc.num_processes
    if cfg.batch_size % world or cfg.minibatch_size % world or (cfg.minibatch_size // world) % cfg.grad_accum:
        raise ConfigError(
            f"batch_size ({cfg.batch_size}) and minibatch_size ({cfg.minibatch_size}) must split "
            f"evenly over {world} processes and grad_accum ({cfg.grad_accum})"
        )
    prompts_per_rollout = cfg.batch_size // cfg.num_generations
    if prompts_per_rollout % world:  # a prompt's responses stay on one process, where they are compared
        raise ConfigError(
            f"batch_size / num_generations ({prompts_per_rollout} prompts) must split evenly over {world} processes"
        )
    set_seed(cfg.seed)
    return acc


def rollout_prompts(iteration: int, *, n: int, cfg: PPOConfig, rank: int, world: int) -> list[int]:
    """This process's prompt indices of one rollout, each repeated num_generations times (side by side)."""
    per_rollout = cfg.batch_size // cfg.num_generations
    chosen = step_indices(iteration, n=n, batch_size=per_rollout, seed=cfg.seed)[rank::world]
    return [i for i in chosen for _ in range(cfg.num_generations)]


def sample_responses(policy: nn.Module, query: Tensor, query_mask: Tensor, iteration: int, *, acc, cfg, tokenizer):
    """One response per left-padded query from the policy as it is now (fsdp: its weights gathered while decoding),
    from a generator seeded by the iteration and the process."""
    sampler = sample if cfg.sampler == "rlhfkit" else hf_sample
    seed = cfg.seed * 100003 + iteration * acc.num_processes + acc.process_index
    policy.eval()
    with unsharded(policy) if shards(acc, cfg.distributed) else nullcontext():
        return sampler(
            policy,
            query,
            query_mask,
            max_new_tokens=cfg.max_new_tokens,
            eos_id=tokenizer.eos_token_id,
            pad_id=tokenizer.pad_token_id,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            generator=torch.Generator(device=acc.device).manual_seed(seed),
            dtype=compute_dtype(acc.mixed_precision),
        )


def evaluates_after(done: int, iterations: int, every: int) -> bool:
    """Whether the held-out evaluation runs after iteration `done` (counted from 1) of `iterations`: after the first
    and every `every`-th (a curve) when every > 0, and after the last; with every = 0 only after the last."""
    return done == iterations or (every > 0 and (done == 1 or done % every == 0))


def train(
    cfg: PPOConfig, *, evaluate: Callable[[int, nn.Module], dict[str, float]] | None = None, eval_every: int = 0
) -> dict[str, Any]:
    """Run PPO. `evaluate(iteration, policy)`, if given, is called on the main process after the iterations that
    `evaluates_after` names; what it returns is logged in that iteration's row."""
    # --- setup ---
    acc = start_run(cfg)
    world, rank, main = acc.num_processes, acc.process_index, acc.is_main_process
    out, iterations = Path(cfg.output_dir), cfg.iterations
    tokenizer = load_tokenizer(cfg.policy, padding_side="left")
    prompts, prompt_ids = load_prompts(cfg, tokenizer)
    m = setup_models(cfg, acc, tokenizer)
    unwrapped_policy = acc.unwrap_model(m.policy)
    kl_ctl = (
        AdaptiveKLController(cfg.kl_coef, target=cfg.target_kl, horizon=cfg.kl_horizon)
        if cfg.target_kl
        else FixedKLController(cfg.kl_coef)
    )
    start, state = resume_state(acc, out, resume=cfg.resume, total=iterations, unit="iteration", sharded=m.sharded)
    if state:
        kl_ctl.load_state_dict(state["kl_ctl"])
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    log = MetricsLog(out, enabled=main, resume_from_step=start if state else None)
    diagnostics = Diagnostics(
        target_kl=cfg.target_kl, learning_rate=cfg.learning_rate, critic_learning_rate=cfg.critic_lr, emit=acc.print
    )
    local_batch, local_mb = cfg.batch_size // world, cfg.minibatch_size // world
    overlap = cfg.overlap_critic and acc.device.type == "cpu" and world == 1

    # --- loop ---
    with SideBySide(overlap) as side, progress_bar("ppo", total=iterations, completed=start, enabled=main) as advance:
        for it in range(start, iterations):
            t0 = time.perf_counter()
            # 1. rollout: num_generations responses per prompt (side by side), from the policy as it is now
            chosen = rollout_prompts(it, n=len(prompts), cfg=cfg, rank=rank, world=world)
            query, query_mask = pad_left(
                [prompt_ids[i] for i in chosen], pad_id=tokenizer.pad_token_id, device=acc.device
            )
            samples = sample_responses(unwrapped_policy, query, query_mask, it, acc=acc, cfg=cfg, tokenizer=tokenizer)
            t1 = time.perf_counter()

            # 2. score: old and reference logprobs, values, task reward (fsdp: the mixed-precision policy is the
            # cast, as in the update, so no autocast here either)
            with autocast(acc) if m.sharded is None else nullcontext():
                rollout = score_rollout(
                    samples,
                    query,
                    query_mask,
                    policy=m.policy,
                    reference=m.reference,
                    critic=m.critic,
                    reward=m.reward,
                    prompts=[prompts[i] for i in chosen],
                    prompt_ids=[prompt_ids[i] for i in chosen],
                    tokenizer=tokenizer,
                    cfg=cfg,
                    chunk=local_mb // cfg.grad_accum,
                    reward_stats=m.reward_stats,
                )
            t2 = time.perf_counter()

            # 3. advantages: KL-shaped token rewards, GAE, whitening (or the critic-free forms)
            kl_tokens, advantages, returns = advantages_and_returns(rollout, kl_coef=kl_ctl.value, cfg=cfg)

            # 4. update the policy and the critic, over the same shuffled minibatches
            update_stats = update(
                acc,
                side,
                rollout,
                advantages,
                returns,
                policy=(m.policy, m.optimizers[0], m.schedulers[0]),
                critic=None if m.critic is None else (m.critic, m.optimizers[1], m.schedulers[1]),
                minibatches=shuffled_minibatches(local_batch, local_mb, iteration=it, cfg=cfg),
                context=query.size(1),
                kl_coef=kl_ctl.value,
                cfg=cfg,
                sharded=m.sharded,
            )
            t3 = time.perf_counter()

            # 5. log
            seq_kl = acc.gather(kl_tokens.sum(dim=1)).mean().item()
            kl_ctl.update(seq_kl, cfg.batch_size)
            done = it + 1
            row = iteration_row(
                acc,
                rollout,
                returns,
                kl=seq_kl,
                kl_coef=kl_ctl.value,
                update_stats=update_stats,
                eos_id=tokenizer.eos_token_id,
                step=done,
                episodes=done * cfg.batch_size,
                learning_rate=m.schedulers[0].get_last_lr()[0],
                times=(t1 - t0, t2 - t1, t3 - t2),
                critic=m.critic is not None,
            )
            check_finite(
                row,
                ignore=("reward_length_corr", "value_explained_variance"),
                what=f"at iteration {done}",
                advice=f"The last good checkpoint is kept: {latest_checkpoint(out)}. Lower learning_rate "
                f"(now {cfg.learning_rate}) or check the reward for NaN.",
            )
            if evaluate is not None and evaluates_after(done, iterations, eval_every):
                # on the main process; under fsdp on a gathered copy (every process takes part in that)
                policy_now = trained_model(acc, m.policy, m.build_policy, sharded=m.sharded)
                if main:
                    row.update(evaluate(done, policy_now.eval()))
            if new_warnings := diagnostics.check(done, row):
                row["warnings"] = new_warnings
            if done % cfg.logging_steps == 0 or done == iterations:
                log.log(row)
            advance(status=f"reward {row['reward_mean']:.3f} kl {seq_kl:.3f}")
            if cfg.save_steps and done % cfg.save_steps == 0 and done < iterations:
                save_checkpoint(
                    acc, out, done, {"kl_ctl": kl_ctl.state_dict()}, keep=cfg.save_total_limit, sharded=m.sharded
                )

    # --- save ---
    rows = log.read() if main else []
    summary = {
        "iterations": iterations,
        "episodes": iterations * cfg.batch_size,
        "resumed_from_step": start,
        "world_size": world,
        "intra_op_threads": torch.get_num_threads(),  # results are exact for a thread count, not across counts
        "mixed_precision": precision(acc),
        "distributed": "fsdp" if m.sharded else "ddp",
        **memory_report(acc, *m.held),
    }
    if rows:
        summary.update(mean_of_tenths(rows, reward="reward_mean", kl="kl"))
        summary.update({k: sum(r[k] for r in rows) for k in ("time_generation", "time_scoring", "time_update")})
    final = trained_model(acc, m.policy, m.build_policy, sharded=m.sharded)  # fsdp: gathered on the main process
    if main:
        save_model(final, tokenizer, out, merge_lora=cfg.lora.merge)
        log.summary(summary)
    acc.wait_for_everyone()
    acc.end_training()
    return summary


def iteration_row(
    acc,
    rollout: Rollout,
    returns: Tensor,
    *,
    kl: float,
    kl_coef: float,
    update_stats: dict[str, float],
    eos_id: int,
    step: int,
    episodes: int,
    learning_rate: float,
    times: tuple[float, float, float],
    critic: bool = True,
) -> dict[str, Any]:
    """One metrics.jsonl row: rollout statistics over every process, update statistics, time split."""
    mask = rollout.response_mask.float()
    raw = acc.gather(rollout.raw_scores.to(acc.device))
    lengths = acc.gather(mask.sum(dim=1))
    row = {
        "step": step,
        "episodes": episodes,
        "reward_mean": raw.mean().item(),
        "reward_std": raw.std().item() if raw.numel() > 1 else 0.0,
        "score_mean": acc.gather(rollout.scores).mean().item(),
        "kl": kl,
        "kl_coef": kl_coef,
        **update_stats,  # entropy, clipfrac, approx_kl, pg_loss, vf_loss, vf_clipfrac, averaged over the update
        "response_length": lengths.mean().item(),
        "eos_fraction": (rollout.query_response[:, -mask.size(1) :] == eos_id).any(dim=1).float().mean().item(),
        "reward_length_corr": _corr(raw.float(), lengths.float()),
        "learning_rate": learning_rate,
        "time_generation": times[0],
        "time_scoring": times[1],
        "time_update": times[2],
    }
    if critic:
        row["value_explained_variance"] = explained_variance(rollout.values, returns, mask)
    return row


def _corr(x: Tensor, y: Tensor) -> float:
    if x.numel() < 2 or x.std() == 0 or y.std() == 0:
        return 0.0
    return torch.corrcoef(torch.stack([x, y]))[0, 1].item()
