"""Offline preference optimization: DPO and its family on preferences, KTO on thumbs up/down ratings.

The policy learns from the same data files as the reward model, without a reward model or sampling: for a judged
pair (a, b) the implicit reward of an answer is beta (log pi(y|x) - log pi_ref(y|x)) and the loss (losses.py) asks
the implicit rewards to order the answers as people did (Rafailov et al. 2023). Items are built as for the reward
model: a K-way ranking is one item with all its pairs, several annotators' votes on a pair are one soft target, ties
count (half a vote each way for sigmoid, zero target margin for IPO, the Davidson/Rao-Kupper tie for loss=tie). An
item's loss is the mean over its judgements; a step's loss is the sum of item losses over the step's items.

Reference logprobs are computed once, before training, by the same function as the policy's (`AnswerLogprobs`,
same autocast, logits cast to fp32) and kept as numbers: no reference model is held in memory during training. With
LoRA the reference is the base (adapters off). At step 0 policy and reference are the same weights, so every
log-ratio is 0 (up to the batch's padding: tested) and the sigmoid loss is log 2.

KTO (loss=kto): each rating is one example, with one more answer beside it for the reference point: the answer of
another prompt (the next rating's), whose log-ratio under the policy, averaged over the micro-batch and clamped at
0, estimates KL(policy || reference) as in Ethayarajh et al. 2024 (not differentiated).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rlhfkit.config import ConfigError, DPOConfig, save_config
from rlhfkit.data.collate import encode_prompt_answer
from rlhfkit.data.convert import to_ratings
from rlhfkit.data.io import read_records
from rlhfkit.data.preferences import Judgement, build_items, response_text
from rlhfkit.data.schema import PREFERENCE_FORMATS, Rating
from rlhfkit.eval.kl import sampled_kl
from rlhfkit.losses import dpo_loss, ipo_loss, kto_loss, robust_dpo_loss, tie_dpo_loss
from rlhfkit.models.load import (
    adapters_off,
    checkpoint_activations,
    disable_dropout,
    load_causal_lm,
    load_tokenizer,
    save_model,
)
from rlhfkit.models.logprobs import AnswerLogprobs
from rlhfkit.runtime.checkpoint import latest_checkpoint, resume_state, save_checkpoint
from rlhfkit.runtime.dist import all_reduce_sum, autocast, compute_dtype, precision
from rlhfkit.runtime.metrics import MetricsLog, check_finite
from rlhfkit.runtime.progress import progress_bar
from rlhfkit.runtime.training import (
    memory_report,
    optimizer_step,
    plan_steps,
    prepare_trainable,
    shards,
    start_training,
    step_indices,
    trained_model,
)


@dataclass(frozen=True)
class Example:
    """One prompt and answers to it, tokenized. Preferences: the item's answers and the judgements between them.
    KTO: (the rated answer, another prompt's answer for the KL reference point) and whether the first is good."""

    prompt: list[int]
    answers: tuple[list[int], ...]
    judgements: tuple[Judgement, ...] = ()
    good: bool | None = None

    def __len__(self) -> int:
        return len(self.prompt) + max(map(len, self.answers))


def _encode(tokenizer, prompt, answers: list[str], cfg: DPOConfig) -> tuple[list[int], tuple[list[int], ...], bool]:
    """A prompt and its answers; a prompt cut to fit the longest answer is cut the same for all answers."""
    encoded = [
        encode_prompt_answer(tokenizer, prompt, a, max_length=cfg.max_length, template=cfg.prompt_template)
        for a in answers
    ]
    ids = min((p for p, _, _ in encoded), key=len)
    return ids, tuple(a[: max(1, cfg.max_length - len(ids))] for _, a, _ in encoded), any(c for *_, c in encoded)


def load_examples(path: str, tokenizer, cfg: DPOConfig) -> tuple[list[Example], dict[str, int], int]:
    """Examples of a data file, what was skipped building them, and how many were cut to max_length."""
    if cfg.loss == "kto":
        data = read_records(path, expect=("ratings", *PREFERENCE_FORMATS))
        ratings, skipped = to_ratings(data.records)
        examples, truncated = _kto_examples(ratings, tokenizer, cfg)
        return examples, dict(skipped), truncated
    data = read_records(path, expect=PREFERENCE_FORMATS)
    # robust DPO has a direction for every pair: tie-only judgements are dropped (and counted) for it
    tie_model = "none" if cfg.loss == "robust" else "davidson"
    items, skipped = build_items(data.records, tie_model=tie_model, both_bad=cfg.both_bad)
    out, truncated = [], 0
    for it in items:
        prompt, answers, cut = _encode(tokenizer, it.prompt, [response_text(r) for r in it.responses], cfg)
        truncated += cut
        out.append(Example(prompt, answers, it.judgements))
    return out, dict(skipped), truncated


def mismatched(ratings: list[Rating], *, seed: int) -> list[int]:
    """For each rating, another rating whose prompt differs (its answer is this prompt's KL reference point): the
    next one in a seeded shuffle that has another prompt. Ratings of one prompt sit side by side in data files (a
    preference's winner and loser), so taking the next line would often pair a prompt with its own rejected answer."""
    import random

    keys = [repr(r.prompt) for r in ratings]
    if len(set(keys)) < 2:
        raise ConfigError(
            "KTO needs ratings of at least 2 different prompts (another prompt's answer is the KL reference)"
        )
    order = list(range(len(ratings)))
    random.Random(seed).shuffle(order)
    out = [0] * len(ratings)
    for k, i in enumerate(order):
        j = 1
        while keys[order[(k + j) % len(order)]] == keys[i]:
            j += 1
        out[i] = order[(k + j) % len(order)]
    return out


def _kto_examples(ratings: list[Rating], tokenizer, cfg: DPOConfig) -> tuple[list[Example], int]:
    out, truncated = [], 0
    partner = mismatched(ratings, seed=cfg.seed)
    for n, r in enumerate(ratings):
        other = ratings[partner[n]].response  # another prompt's answer: the KL reference point
        prompt, answers, cut = _encode(tokenizer, r.prompt, [response_text(r.response), response_text(other)], cfg)
        truncated += cut
        out.append(Example(prompt, answers, good=r.good))
    return out, truncated


def answer_logprobs(model, examples: list[Example]) -> tuple[Tensor, Tensor]:
    """Summed logprobs and token counts of every answer of the examples, in order, in one batch."""
    owner = [n for n, e in enumerate(examples) for _ in e.answers]
    return model([e.prompt for e in examples], [a for e in examples for a in e.answers], owner)


@torch.no_grad()
def reference_logprobs(
    model, examples: list[Example], *, batch_size: int, what: str, enabled: bool, only: set[int] | None = None
) -> list[Tensor]:
    """The answers' summed logprobs of each example under `model` (the reference), computed once; with `only`,
    for those examples alone (the others stay empty)."""
    model.eval()
    out: list[Tensor] = [torch.empty(0)] * len(examples)
    chosen = range(len(examples)) if only is None else only
    order = sorted(chosen, key=lambda i: len(examples[i]))
    with progress_bar(f"reference logprobs ({what})", total=len(order), enabled=enabled) as advance:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            logps = answer_logprobs(model, [examples[i] for i in idx])[0].float().cpu()
            offset = 0
            for i in idx:
                k = len(examples[i].answers)
                out[i] = logps[offset : offset + k]
                offset += k
            advance(len(idx))
    return out


def preference_losses(
    logps: Tensor, refs: Tensor, lengths: Tensor, examples: list[Example], cfg: DPOConfig
) -> tuple[Tensor, dict[str, Tensor]]:
    """(n_examples,) loss per item (mean over its judgements, plus rpo_alpha x the winners' per-token NLL), and
    sums to log: decisive judgements, those the implicit reward orders right, their margins, winners' and losers'
    logprobs and log-ratios."""
    ia, ib, p_a, p_b, p_t, owner = [], [], [], [], [], []
    offset = 0
    for n, e in enumerate(examples):
        for j in e.judgements:
            ia.append(offset + j.a)
            ib.append(offset + j.b)
            p_a.append(j.p_a)
            p_b.append(j.p_b)
            p_t.append(j.p_tie)
            owner.append(n)
        offset += len(e.answers)
    dev = logps.device
    as_t = lambda xs: torch.tensor(xs, dtype=torch.float32, device=dev)  # noqa: E731
    a, b = torch.tensor(ia, device=dev), torch.tensor(ib, device=dev)
    pa, pb, pt = as_t(p_a), as_t(p_b), as_t(p_t)
    args = (logps[a], logps[b], refs[a], refs[b])
    if cfg.loss == "sigmoid":
        per = dpo_loss(*args, pa, pb, pt, beta=cfg.beta, label_smoothing=cfg.label_smoothing)
    elif cfg.loss == "ipo":
        per = ipo_loss(*args, pa, pb, beta=cfg.beta)
    elif cfg.loss == "robust":
        per = robust_dpo_loss(*args, pa, pb, beta=cfg.beta, label_smoothing=cfg.label_smoothing)
    else:
        per = tie_dpo_loss(*args, pa, pb, pt, beta=cfg.beta, tie_model=cfg.tie_model, tie_param=cfg.tie_param)
    owner_t = torch.tensor(owner, device=dev)
    ones = torch.ones_like(per)
    counts = torch.zeros(len(examples), device=dev).index_add(0, owner_t, ones)

    def per_item(values: Tensor) -> Tensor:  # sum over each item's judgements
        return torch.zeros(len(examples), dtype=values.dtype, device=dev).index_add(0, owner_t, values)

    losses = per_item(per) / counts
    decisive = pa != pb
    winner = torch.where(pa > pb, a, b)
    loser = torch.where(pa > pb, b, a)
    if cfg.rpo_alpha:
        nll = torch.where(decisive, -logps[winner] / lengths[winner].clamp(min=1), torch.zeros_like(per))
        losses = losses + cfg.rpo_alpha * per_item(nll) / per_item(decisive.float()).clamp(min=1)
    with torch.no_grad():
        margin = cfg.beta * ((logps[winner] - refs[winner]) - (logps[loser] - refs[loser]))
        d = decisive.float()
        stats = {
            "decisive": d.sum(),
            "correct": ((margin > 0).float() * d).sum(),
            "margin": (margin * d).sum(),
            "logps_chosen": (logps[winner] * d).sum(),
            "logps_rejected": (logps[loser] * d).sum(),
            "chosen_change": ((logps[winner] - refs[winner]) * d).sum(),
            "rejected_change": ((logps[loser] - refs[loser]) * d).sum(),
        }
    return losses, stats


def kto_losses(
    logps: Tensor, refs: Tensor, examples: list[Example], cfg: DPOConfig, *, acc=None
) -> tuple[Tensor, dict[str, Tensor]]:
    """(n_examples,) KTO loss per rating and sums to log; the reference point z is the mean log-ratio of the
    mismatched answers over the micro-batch (on every process when `acc` is given), clamped at 0 (kto_loss
    detaches it)."""
    answer, other = logps[0::2], logps[1::2]
    ratio, other_ratio = answer - refs[0::2], other - refs[1::2]
    n = torch.tensor(float(len(examples)), device=logps.device)
    total = other_ratio.detach().sum()
    z = total / n if acc is None else all_reduce_sum(acc, total) / all_reduce_sum(acc, n)
    good = torch.tensor([bool(e.good) for e in examples], device=logps.device)
    losses = kto_loss(
        answer,
        refs[0::2],
        good,
        beta=cfg.beta,
        kl=z,
        desirable_weight=cfg.desirable_weight,
        undesirable_weight=cfg.undesirable_weight,
    )
    with torch.no_grad():
        g = good.float()
        stats = {
            "good": g.sum(),
            "bad": (1 - g).sum(),
            "reward_good": (cfg.beta * ratio * g).sum(),
            "reward_bad": (cfg.beta * ratio * (1 - g)).sum(),
            "kl_sum": z.clamp(min=0) * len(examples),
            "examples": n,
        }
    return losses, stats


def example_losses(model, examples: list[Example], refs: list[Tensor], cfg: DPOConfig, *, acc=None):
    """Losses and statistics of a micro-batch; `acc` (training) pools KTO's reference point over processes."""
    logps, lengths = answer_logprobs(model, examples)
    logps = logps.float()
    ref = torch.cat(refs).to(logps.device)
    if cfg.loss == "kto":
        return kto_losses(logps, ref, examples, cfg, acc=acc)
    return preference_losses(logps, ref, lengths, examples, cfg)


def summarize(stats: dict[str, float], cfg: DPOConfig, prefix: str = "") -> dict[str, float]:
    """Metrics from summed statistics: implicit-reward accuracy and margin over decisive judgements (ties
    excluded), winners' and losers' logprobs; KTO: the mean implicit reward of good and of bad answers."""
    if cfg.loss == "kto":
        good, bad = max(stats.get("good", 0), 1), max(stats.get("bad", 0), 1)
        row = {
            "reward_good": stats.get("reward_good", 0) / good,
            "reward_bad": stats.get("reward_bad", 0) / bad,
            "kl_reference_point": stats.get("kl_sum", 0) / max(stats.get("examples", 0), 1),
        }
        row["reward_margin"] = row["reward_good"] - row["reward_bad"]
    else:
        d = max(stats.get("decisive", 0), 1)
        row = {
            "reward_accuracy": stats.get("correct", 0) / d,
            "reward_margin": stats.get("margin", 0) / d,
            "logps_chosen": stats.get("logps_chosen", 0) / d,
            "logps_rejected": stats.get("logps_rejected", 0) / d,
            "chosen_logp_change": stats.get("chosen_change", 0) / d,
            "rejected_logp_change": stats.get("rejected_change", 0) / d,
        }
    return {prefix + k: v for k, v in row.items()}


def _add(total: dict[str, float], stats: dict[str, Tensor]) -> None:
    for k, v in stats.items():
        total[k] = total.get(k, 0.0) + float(v)


@torch.no_grad()
def evaluate(model, examples: list[Example], refs: list[Tensor], cfg: DPOConfig, *, acc) -> dict[str, float]:
    """eval_loss (mean per item) and the metrics of `summarize` on held-out examples, under the policy as it is."""
    was_training = model.training
    model.eval()
    total: dict[str, float] = {}
    loss_sum = 0.0
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]))
    for start in range(0, len(order), cfg.eval_batch_size):
        idx = order[start : start + cfg.eval_batch_size]
        with autocast(acc):  # on the main process only: nothing is pooled over processes
            losses, stats = example_losses(model, [examples[i] for i in idx], [refs[i] for i in idx], cfg)
        loss_sum += losses.sum().item()
        _add(total, stats)
    model.train(was_training)
    return {"eval_loss": loss_sum / max(len(examples), 1), **summarize(total, cfg, prefix="eval_")}


@torch.no_grad()
def held_out_kl(policy, reference, examples: list[Example], tokenizer, cfg: DPOConfig, *, acc) -> float:
    """KL(policy || reference) per answer on answers the policy samples (temperature 1) to up to kl_prompts
    held-out prompts. `reference()` is a context yielding the module that computes as the reference; policy and
    reference logprobs both come from AnswerLogprobs under the same autocast."""
    prompts = list({tuple(e.prompt): e.prompt for e in examples}.values())[: cfg.kl_prompts]
    if not prompts:
        return float("nan")
    policy.model.eval()

    def logprobs(module):
        def score(p: list[list[int]], a: list[list[int]]) -> Tensor:
            with autocast(acc):
                return answer_logprobs(module, [Example(x, (y,)) for x, y in zip(p, a)])[0]

        return score

    def reference_logprobs(p: list[list[int]], a: list[list[int]]) -> Tensor:
        with reference() as ref_model:
            return logprobs(ref_model)(p, a)

    return sampled_kl(
        policy.model,
        logprobs(policy),
        reference_logprobs,
        prompts,
        pad_id=tokenizer.pad_token_id,
        eos_id=tokenizer.eos_token_id,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.eval_batch_size,
        seed=cfg.seed,
        dtype=compute_dtype(acc.mixed_precision),
    )


def train(cfg: DPOConfig) -> dict[str, Any]:
    # --- setup ---
    acc = start_training(cfg)
    world, rank, main = acc.num_processes, acc.process_index, acc.is_main_process
    out = Path(cfg.output_dir)
    tokenizer = load_tokenizer(cfg.model)
    train_set, skipped, truncated = load_examples(cfg.train_file, tokenizer, cfg)
    eval_set = load_examples(cfg.eval_file, tokenizer, cfg)[0] if cfg.eval_file else []
    steps_per_epoch, total_steps = plan_steps(cfg, len(train_set))

    # fp32 master weights; the prepared module's forward runs under the accelerator's autocast
    # Under fsdp, whole sequences: the shared-prefix pass reaches the loss only through its KV cache, which FSDP's
    # backward hooks never see (reward.py says more).
    fsdp = shards(acc, cfg.distributed)

    def build(shared_prefix: bool = cfg.shared_prefix):
        policy = load_causal_lm(cfg.model, dtype="float32", device=str(acc.device), lora=cfg.lora)
        disable_dropout(policy)
        return AnswerLogprobs(policy, pad_id=tokenizer.pad_token_id, shared_prefix=shared_prefix)

    model = build(cfg.shared_prefix and not fsdp)
    policy = model.model
    checkpoint_activations(policy, cfg.gradient_checkpointing)
    model, optimizer, scheduler, sharded = prepare_trainable(acc, model, cfg, total_steps=total_steps)

    def reference():  # LoRA: the base with adapters off; full: the weights as they start (before any step)
        return adapters_off(policy, model) if cfg.lora.r > 0 else nullcontext(model)

    # reference logprobs, once, before any step (and before a checkpoint's weights are loaded)
    with reference() as ref_model:
        kw = dict(batch_size=cfg.eval_batch_size, enabled=main)
        # only the examples this process's steps will use: a run shorter than an epoch needs fewer. Sharded, every
        # process computes those of all processes: each forward pass is collective, so all make the same ones.
        order = dict(n=len(train_set), batch_size=cfg.batch_size, seed=cfg.seed)
        ranks = slice(None) if sharded else slice(rank, None, world)
        used = {i for s in range(total_steps) for i in step_indices(s, **order)[ranks]}
        train_refs = reference_logprobs(ref_model, train_set, what="train", only=used, **kw)
        eval_refs = reference_logprobs(ref_model, eval_set, what="eval", **kw) if eval_set else []

    start_step, checkpoint = resume_state(acc, out, resume=cfg.resume, total=total_steps, unit="step", sharded=sharded)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        if skipped:
            acc.print("skipped while building examples: " + ", ".join(f"{v} {k}" for k, v in skipped.items()))
        if truncated:
            acc.print(f"warning: {truncated} answers were longer than max_length={cfg.max_length} and were cut")
    log = MetricsLog(out, enabled=main, resume_from_step=start_step if checkpoint else None)

    # --- loop ---
    model.train()
    micro = cfg.batch_size // world // cfg.grad_accum
    window: dict[str, float] = {}
    tail: dict[str, float] = {}  # the statistics of the last tenth of the steps (this process's), for the summary
    tail_from = total_steps - max(1, total_steps // 10)
    window_start, train_start, loss = time.perf_counter(), time.perf_counter(), float("nan")
    bar = "kto" if cfg.loss == "kto" else "dpo"
    with progress_bar(bar, total=total_steps, completed=start_step, enabled=main) as advance:
        for step in range(start_step, total_steps):
            indices = step_indices(step, **order)
            mine = sorted(indices[rank::world], key=lambda i: len(train_set[i]))
            loss_sum = torch.zeros((), device=acc.device)
            for j in range(cfg.grad_accum):
                idx = mine[j * micro : (j + 1) * micro]
                with nullcontext() if j == cfg.grad_accum - 1 else acc.no_sync(model):
                    losses, stats = example_losses(
                        model, [train_set[i] for i in idx], [train_refs[i] for i in idx], cfg, acc=acc
                    )
                    # DDP averages gradients over processes; scaling by `world` turns that into the global sum.
                    acc.backward(losses.sum() * world / cfg.batch_size)
                loss_sum += losses.detach().sum()
                _add(window, stats)
                if step >= tail_from:
                    _add(tail, stats)
            grad_norm = optimizer_step(
                acc, model, optimizer, scheduler, max_grad_norm=cfg.max_grad_norm, sharded=sharded
            )

            loss = (all_reduce_sum(acc, loss_sum) / cfg.batch_size).item()
            check_finite(
                {"loss": loss},
                what=f"at step {step + 1}",
                advice=f"Lower learning_rate (now {cfg.learning_rate}). Last good checkpoint: {latest_checkpoint(out)}",
            )
            window["loss"] = window.get("loss", 0.0) + loss
            window["steps"] = window.get("steps", 0) + 1
            done = step + 1
            advance(status=f"loss {loss:.4f}")
            if done % cfg.logging_steps == 0 or done == total_steps:
                elapsed = time.perf_counter() - window_start
                row = {
                    "step": done,
                    "epoch": round(done / steps_per_epoch, 4),
                    "loss": window["loss"] / window["steps"],
                    "learning_rate": scheduler.get_last_lr()[0],
                    "grad_norm": None if grad_norm is None else float(grad_norm),
                    **summarize(window, cfg),
                    "items_per_second": window["steps"] * cfg.batch_size / max(elapsed, 1e-9),
                }
                if cfg.eval_steps and eval_set and done % cfg.eval_steps == 0:
                    # on the main process alone; under fsdp on a gathered copy (every process takes part in that)
                    plain = trained_model(acc, model, build, sharded=sharded)
                    if main:
                        row.update(evaluate(plain, eval_set, eval_refs, cfg, acc=acc))
                    del plain
                log.log(row)
                window, window_start = {}, time.perf_counter()
            if cfg.save_steps and done % cfg.save_steps == 0 and done < total_steps:
                save_checkpoint(
                    acc, out, done, {"total_steps": total_steps}, keep=cfg.save_total_limit, sharded=sharded
                )
    train_seconds = time.perf_counter() - train_start

    # --- evaluate and save ---
    summary: dict[str, Any] = {
        "steps": total_steps,
        "resumed_from_step": start_step,
        "world_size": world,
        "distributed": "fsdp" if sharded else "ddp",
        "mixed_precision": precision(acc),
        "loss_kind": cfg.loss,
        "train_loss": loss,
        "train_items": len(train_set),
        "skipped": skipped,
        "train_seconds": train_seconds,
        **memory_report(acc, model),
    }
    unwrapped = trained_model(acc, model, build, sharded=sharded)
    if main:
        if eval_set:
            summary.update(evaluate(unwrapped, eval_set, eval_refs, cfg, acc=acc))
        # training-set metrics from the batches of the last tenth of the steps, as each step saw them before its
        # update (no extra pass over the training set)
        summary.update(summarize(tail, cfg, prefix="train_"))
        change = summary.get("eval_chosen_logp_change", summary.get("train_chosen_logp_change"))
        if change is not None and change < 0:
            acc.print(
                f"warning: the chosen answers' log-probability fell by {-change:.3f} nats on average since the start "
                "(DPO can lower both answers while widening the margin); rpo_alpha > 0 adds an NLL term on them"
            )
        if eval_set and cfg.kl_prompts:
            if cfg.lora.r > 0:
                # the unwrapped module: on the main process alone, the DDP wrapper's forward would wait for the others
                base = lambda: adapters_off(unwrapped.model, unwrapped)  # noqa: E731
                summary["eval_kl"] = held_out_kl(unwrapped, base, eval_set, tokenizer, cfg, acc=acc)
            else:  # the reference weights are no longer in memory: load them again, now that training is over
                ref = load_causal_lm(cfg.model, dtype="float32", device=str(acc.device)).eval()
                disable_dropout(ref)
                ref_scorer = AnswerLogprobs(ref, pad_id=tokenizer.pad_token_id, shared_prefix=cfg.shared_prefix)
                summary["eval_kl"] = held_out_kl(
                    unwrapped, lambda: nullcontext(ref_scorer), eval_set, tokenizer, cfg, acc=acc
                )
                del ref, ref_scorer
        save_model(unwrapped.model, tokenizer, out, merge_lora=cfg.lora.merge)
        log.summary(summary)
    acc.wait_for_everyone()
    acc.end_training()
    return summary
