"""Reward model from human preferences: pairs, tie-aware A/B comparisons, K-way rankings, several annotators.

Each optimizer step takes `batch_size` items (prompts). All responses of the step's items are scored in one
forward pass per micro-batch; every judgement gives a loss (Bradley-Terry, or a tie-aware likelihood), averaged per
item, so a K-way ranking weighs as one prompt however many pairs it has (InstructGPT). The step's loss is the sum
of item losses over the number of items of the whole step, so accumulation and processes do not change it.
"""

from __future__ import annotations

import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlhfkit.config import RewardConfig, save_config
from rlhfkit.data.collate import encode_prompt_answer
from rlhfkit.data.io import read_records
from rlhfkit.data.preferences import PreferenceItem, build_items, response_text
from rlhfkit.data.schema import PREFERENCE_FORMATS
from rlhfkit.eval.reward import preference_metrics
from rlhfkit.losses import plackett_luce, reward_centering, soft_bradley_terry, tie_aware_loss
from rlhfkit.models.load import checkpoint_activations, load_tokenizer, save_model
from rlhfkit.models.reward import PromptResponseScorer, load_reward_model, write_stats
from rlhfkit.runtime.checkpoint import latest_checkpoint, resume_state, save_checkpoint
from rlhfkit.runtime.dist import all_reduce_sum, precision
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
class TokenizedItem:
    item: PreferenceItem
    prompt: list[int]  # prompt ids, shared by the item's responses
    answers: tuple[list[int], ...]  # one per response, each ending with EOS

    def __len__(self) -> int:  # tokens of the longest prompt + response
        return len(self.prompt) + max(map(len, self.answers))


def tokenize_items(items: list[PreferenceItem], tokenizer, cfg: RewardConfig) -> tuple[list[TokenizedItem], int]:
    """Prompt and answers of each item; a prompt cut to fit the longest answer is cut the same for all answers."""
    out, truncated = [], 0
    for it in items:
        encoded = [
            encode_prompt_answer(
                tokenizer, it.prompt, response_text(r), max_length=cfg.max_length, template=cfg.prompt_template
            )
            for r in it.responses
        ]
        prompt = min((p for p, _, _ in encoded), key=len)  # the most-cut prompt fits every answer
        truncated += any(cut for _, _, cut in encoded)
        answers = tuple(a[: max(1, cfg.max_length - len(prompt))] for _, a, _ in encoded)
        out.append(TokenizedItem(it, prompt, answers))
    return out, truncated


def score_items(scorer, items: list[TokenizedItem]) -> torch.Tensor:
    """Scores of every response of the items, in order, in one batch."""
    owner = [n for n, t in enumerate(items) for _ in t.answers]
    return scorer([t.prompt for t in items], [a for t in items for a in t.answers], owner)


@torch.no_grad()
def score_texts(scorer, tokenizer, prompts: list, responses: list, *, cfg: RewardConfig) -> torch.Tensor:
    """Scores of (prompt, response) pairs, batched by length, in the given order."""
    scorer.eval()
    encoded = [
        encode_prompt_answer(tokenizer, p, response_text(r), max_length=cfg.max_length, template=cfg.prompt_template)
        for p, r in zip(prompts, responses)
    ]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]) + len(encoded[i][1]))
    scores = torch.empty(len(encoded))
    for start in range(0, len(order), cfg.eval_batch_size):
        idx = order[start : start + cfg.eval_batch_size]
        batch = [encoded[i] for i in idx]
        scores[idx] = scorer([p for p, _, _ in batch], [a for _, a, _ in batch], list(range(len(batch)))).cpu()
    return scores


def item_losses(scores: torch.Tensor, items: list[TokenizedItem], cfg: RewardConfig) -> torch.Tensor:
    """(n_items,) loss per item; `scores` holds the items' responses in order."""
    ia, ib, p_a, p_b, p_t, margin, owner = [], [], [], [], [], [], []
    offset = 0
    for n, t in enumerate(items):
        for j in t.item.judgements:
            ia.append(offset + j.a)
            ib.append(offset + j.b)
            p_a.append(j.p_a)
            p_b.append(j.p_b)
            p_t.append(j.p_tie)
            margin.append(j.margin)
            owner.append(n)
        offset += len(t.answers)
    dev = scores.device
    as_t = lambda xs: torch.tensor(xs, dtype=scores.dtype, device=dev)  # noqa: E731
    r_a, r_b = scores[torch.tensor(ia, device=dev)], scores[torch.tensor(ib, device=dev)]
    if cfg.tie_model == "none":
        per = soft_bradley_terry(r_a - as_t(margin), r_b, as_t(p_a))
    else:
        per = tie_aware_loss(
            r_a, r_b, as_t(p_a), as_t(p_b), as_t(p_t), tie_model=cfg.tie_model, tie_param=cfg.tie_param
        )
    owner_t = torch.tensor(owner, device=dev)
    counts = torch.zeros(len(items), dtype=scores.dtype, device=dev).index_add(0, owner_t, torch.ones_like(per))

    def per_item(values: torch.Tensor) -> torch.Tensor:  # mean over each item's judgements
        return torch.zeros(len(items), dtype=scores.dtype, device=dev).index_add(0, owner_t, values) / counts

    losses = per_item(per)
    if cfg.loss == "plackett_luce":
        offset, replaced = 0, []
        for n, t in enumerate(items):
            k = len(t.answers)
            if t.item.ranks is not None:
                pl = plackett_luce(scores[offset : offset + k], torch.tensor(t.item.ranks, device=dev))
                replaced.append((n, pl))
            offset += k
        if replaced:
            losses = losses.clone()
            for n, pl in replaced:
                losses[n] = pl
    if cfg.center_coef:  # for every item, whichever likelihood it has
        losses = losses + cfg.center_coef * per_item(reward_centering(r_a, r_b))
    return losses


@torch.no_grad()
def evaluate(scorer, items: list[TokenizedItem], *, cfg: RewardConfig) -> dict[str, Any]:
    was_training = scorer.training
    scorer.eval()
    pairs, all_scores, loss_sum = [], [], 0.0
    items = sorted(items, key=len)
    for start in range(0, len(items), cfg.eval_batch_size):
        chunk = items[start : start + cfg.eval_batch_size]
        scores = score_items(scorer, chunk)
        loss_sum += item_losses(scores, chunk, cfg).sum().item()
        offset = 0
        for t in chunk:
            s = scores[offset : offset + len(t.answers)].tolist()
            pairs += [(s[j.a], s[j.b], j) for j in t.item.judgements]
            all_scores += s
            offset += len(t.answers)
    scorer.train(was_training)
    return {
        "eval_loss": loss_sum / max(len(items), 1),
        **preference_metrics(pairs, all_scores, tie_model=cfg.tie_model, tie_param=cfg.tie_param),
    }


def load_items(path: str, tokenizer, cfg: RewardConfig) -> tuple[list[TokenizedItem], dict[str, int], int]:
    data = read_records(path, expect=PREFERENCE_FORMATS)
    items, skipped = build_items(data.records, tie_model=cfg.tie_model, both_bad=cfg.both_bad)
    tokenized, truncated = tokenize_items(items, tokenizer, cfg)
    return tokenized, dict(skipped), truncated


def ignored_margins(items: list[TokenizedItem], cfg: RewardConfig) -> str | None:
    """A warning when pairs carry margins that the chosen likelihood does not use (only Bradley-Terry does)."""
    n = sum(1 for t in items for j in t.item.judgements if j.margin)
    if n and cfg.tie_model != "none":
        return (
            f"warning: {n} pairs carry a margin, which tie_model={cfg.tie_model} does not use; "
            "set tie_model=none (Bradley-Terry with margin) to train with them"
        )
    return None


def train(cfg: RewardConfig) -> dict[str, Any]:
    # --- setup ---
    acc = start_training(cfg)
    world, rank, main = acc.num_processes, acc.process_index, acc.is_main_process
    out = Path(cfg.output_dir)
    tokenizer = load_tokenizer(cfg.model)
    pad_id = tokenizer.pad_token_id
    train_set, skipped, truncated = load_items(cfg.train_file, tokenizer, cfg)
    eval_set = load_items(cfg.eval_file, tokenizer, cfg)[0] if cfg.eval_file else []
    steps_per_epoch, total_steps = plan_steps(cfg, len(train_set))

    # fp32 master weights; the prepared scorer's forward runs under the accelerator's autocast
    # Under fsdp the training scorer runs whole sequences: the shared-prefix path uses the prompt pass only through
    # its KV cache, which FSDP's backward hooks never see, so that pass's weights would be freed before its backward.
    fsdp = shards(acc, cfg.distributed)

    def build(shared_prefix: bool = cfg.shared_prefix):
        model = load_reward_model(
            cfg.model, tokenizer=tokenizer, dtype="float32", device=str(acc.device), lora=cfg.lora
        )
        return PromptResponseScorer(model, pad_id=pad_id, shared_prefix=shared_prefix)

    model = build(cfg.shared_prefix and not fsdp)
    checkpoint_activations(model.model, cfg.gradient_checkpointing)
    model, optimizer, scheduler, sharded = prepare_trainable(acc, model, cfg, total_steps=total_steps)

    start_step, checkpoint = resume_state(acc, out, resume=cfg.resume, total=total_steps, unit="step", sharded=sharded)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        if skipped:
            acc.print("skipped while building preference items: " + ", ".join(f"{v} {k}" for k, v in skipped.items()))
        if truncated:
            acc.print(f"warning: {truncated} responses were longer than max_length={cfg.max_length} and were cut")
        if warning := ignored_margins(train_set, cfg):
            acc.print(warning)
    log = MetricsLog(out, enabled=main, resume_from_step=start_step if checkpoint else None)

    # --- loop ---
    model.train()
    micro = cfg.batch_size // world // cfg.grad_accum
    window: dict[str, float] = {"loss": 0.0, "steps": 0, "pairs": 0}
    window_start, train_start, loss = time.perf_counter(), time.perf_counter(), float("nan")
    with progress_bar("reward", total=total_steps, completed=start_step, enabled=main) as advance:
        for step in range(start_step, total_steps):
            indices = step_indices(step, n=len(train_set), batch_size=cfg.batch_size, seed=cfg.seed)
            mine = sorted(indices[rank::world], key=lambda i: len(train_set[i]))
            loss_sum = torch.zeros((), device=acc.device)
            for j in range(cfg.grad_accum):
                chunk = [train_set[i] for i in mine[j * micro : (j + 1) * micro]]
                sync = nullcontext() if j == cfg.grad_accum - 1 else acc.no_sync(model)
                with sync:
                    scores = score_items(model, chunk)
                    losses = item_losses(scores, chunk, cfg)
                    # DDP averages gradients over processes; scaling by `world` turns that into the global sum.
                    acc.backward(losses.sum() * world / cfg.batch_size)
                loss_sum += losses.detach().sum()
                window["pairs"] += sum(len(t.item.judgements) for t in chunk)
            grad_norm = optimizer_step(
                acc, model, optimizer, scheduler, max_grad_norm=cfg.max_grad_norm, sharded=sharded
            )

            loss = (all_reduce_sum(acc, loss_sum) / cfg.batch_size).item()
            check_finite(
                {"reward loss": loss},
                what=f"at step {step + 1}",
                advice=f"Lower learning_rate (now {cfg.learning_rate}). Last good checkpoint: {latest_checkpoint(out)}",
            )
            window["loss"] += loss
            window["steps"] += 1
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
                    "pairs_per_second": window["pairs"] * world / max(elapsed, 1e-9),
                }
                if cfg.eval_steps and eval_set and done % cfg.eval_steps == 0:
                    # on the main process alone; under fsdp on a gathered copy (every process takes part in that)
                    scorer = trained_model(acc, model, build, sharded=sharded)
                    if main:
                        metrics = evaluate(scorer, eval_set, cfg=cfg)
                        row.update({k: v for k, v in metrics.items() if k in ("eval_loss", "eval_accuracy")})
                    del scorer
                log.log(row)
                window, window_start = {"loss": 0.0, "steps": 0, "pairs": 0}, time.perf_counter()
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
        "train_loss": loss,
        "train_items": len(train_set),
        "skipped": skipped,
        "train_seconds": train_seconds,
    }
    summary.update(memory_report(acc, model))
    unwrapped = trained_model(acc, model, build, sharded=sharded)
    if main:
        if eval_set:
            summary.update(evaluate(unwrapped, eval_set, cfg=cfg))
        save_model(unwrapped.model, tokenizer, out, merge_lora=cfg.lora.merge)
        # Score statistics on the training responses (a seeded sample of a large set): PPO normalizes rewards
        # with them.
        scored = train_set
        if 0 < cfg.stats_items < len(train_set):
            scored = random.Random(cfg.seed).sample(train_set, cfg.stats_items)
        on_train = evaluate(unwrapped, scored, cfg=cfg)
        summary["train_accuracy"] = on_train["eval_accuracy"]
        summary["train_accuracy_items"] = len(scored)
        stats = write_stats(
            out, mean=on_train["eval_score_mean"], std=on_train["eval_score_std"], count=on_train["eval_scores"]
        )
        summary.update({f"train_{k}": v for k, v in stats.items()})
        log.summary(summary)
    acc.wait_for_everyone()
    acc.end_training()
    return summary
