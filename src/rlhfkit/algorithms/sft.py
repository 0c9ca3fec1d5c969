"""Supervised fine-tuning on demonstrations: next-token loss on the completion only.

One optimizer step sees `batch_size` sequences over all processes and accumulation micro-steps. Its loss is the
summed completion-token NLL divided by the completion tokens of the whole step, so 1 process x 8 micro-steps,
8 x 1 and 2 processes x 4 give the same gradient (up to float rounding).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from rlhfkit.config import SFTConfig, save_config
from rlhfkit.data.collate import SFTExample, collate_packed, collate_padded, tokenize_sft
from rlhfkit.data.io import read_records
from rlhfkit.data.prompts import set_default_system
from rlhfkit.eval.gold import gold_metrics
from rlhfkit.losses import IGNORE_INDEX, sft_nll
from rlhfkit.models.generate import greedy_answers
from rlhfkit.models.load import checkpoint_activations, load_causal_lm, load_tokenizer, save_model
from rlhfkit.runtime.checkpoint import latest_checkpoint, resume_state, save_checkpoint
from rlhfkit.runtime.dist import all_reduce_sum, compute_dtype, precision
from rlhfkit.runtime.files import write_jsonl
from rlhfkit.runtime.metrics import MetricsLog, check_finite
from rlhfkit.runtime.progress import progress_bar
from rlhfkit.runtime.shard import even_batches
from rlhfkit.runtime.training import (
    memory_report,
    optimizer_step,
    plan_steps,
    prepare_trainable,
    start_training,
    step_indices,
    trained_model,
)

SFT_FORMATS = ("sft", "messages")


def make_batch(examples: list[SFTExample], *, packing: bool, pad_id: int) -> dict[str, torch.Tensor]:
    return collate_packed(examples) if packing else collate_padded(examples, pad_id=pad_id)


def batch_nll(model, batch: dict[str, torch.Tensor], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion NLL of one micro-batch and its target-token count.

    Logits are computed only from the position before the batch's first target on (`logits_to_keep`): the
    vocabulary projection over the prompts that every row shares (a chat template's system prompt, the question)
    predicts nothing the loss counts, and at a 49k vocabulary it is a fifth of the model's arithmetic."""
    labels = batch.pop("labels").to(device)
    targets = (labels != IGNORE_INDEX).any(dim=0).nonzero()
    first = int(targets[0]) if len(targets) else labels.size(1) - 1
    keep = labels.size(1) - max(first - 1, 0)
    logits = model(**{k: v.to(device) for k, v in batch.items()}, use_cache=False, logits_to_keep=keep).logits
    return sft_nll(logits, labels[:, -keep:])


@torch.no_grad()
def eval_loss(model, examples: list[SFTExample], accelerator, *, cfg: SFTConfig, pad_id: int) -> float:
    """Token-weighted mean NLL over the eval set, split over processes. Every process makes the same number of
    forward passes (a sharded model's forward is collective); one with nothing left reruns its first example and
    does not count it."""
    was_training = model.training
    model.eval()
    nll = torch.zeros((), device=accelerator.device)
    count = torch.zeros((), device=accelerator.device)
    mine = examples[accelerator.process_index :: accelerator.num_processes]
    size = cfg.eval_batch_size
    for i in range(even_batches(len(examples), world=accelerator.num_processes, batch_size=size)):
        chunk = mine[i * size : (i + 1) * size]
        b_nll, b_count = batch_nll(
            model, make_batch(chunk or examples[:1], packing=cfg.packing, pad_id=pad_id), accelerator.device
        )
        if chunk:
            nll += b_nll
            count += b_count
    model.train(was_training)
    return (all_reduce_sum(accelerator, nll) / all_reduce_sum(accelerator, count).clamp(min=1)).item()


def train(cfg: SFTConfig) -> dict[str, Any]:
    # --- setup ---
    acc = start_training(cfg)
    world, rank, main = acc.num_processes, acc.process_index, acc.is_main_process
    out = Path(cfg.output_dir)
    tokenizer = load_tokenizer(cfg.model)
    if cfg.system_prompt is not None:
        set_default_system(tokenizer, cfg.system_prompt)  # saved with the model: later stages format prompts alike
    pad_id = tokenizer.pad_token_id
    train_records = read_records(cfg.train_file, expect=SFT_FORMATS).records
    train_set, truncated = tokenize_sft(
        train_records, tokenizer, max_length=cfg.max_length, template=cfg.prompt_template
    )
    eval_records = read_records(cfg.eval_file, expect=SFT_FORMATS).records if cfg.eval_file else []
    eval_set, _ = tokenize_sft(eval_records, tokenizer, max_length=cfg.max_length, template=cfg.prompt_template)
    steps_per_epoch, total_steps = plan_steps(cfg, len(train_set))

    # fp32 master weights; the prepared model's forward runs under the accelerator's autocast
    def build():
        return load_causal_lm(cfg.model, dtype="float32", device=str(acc.device), lora=cfg.lora)

    model = build()
    checkpoint_activations(model, cfg.gradient_checkpointing)
    model, optimizer, scheduler, sharded = prepare_trainable(acc, model, cfg, total_steps=total_steps)

    start_step, checkpoint = resume_state(acc, out, resume=cfg.resume, total=total_steps, unit="step", sharded=sharded)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        if truncated:
            acc.print(
                f"warning: {truncated} training examples were longer than max_length={cfg.max_length} "
                "and were truncated"
            )
    log = MetricsLog(out, enabled=main, resume_from_step=start_step if checkpoint else None)

    # --- loop ---
    model.train()
    micro = cfg.batch_size // world // cfg.grad_accum
    window_loss, window_steps, window_tokens, window_start = 0.0, 0, 0, time.perf_counter()
    train_start, loss = time.perf_counter(), float("nan")
    with progress_bar("sft", total=total_steps, completed=start_step, enabled=main) as advance:
        for step in range(start_step, total_steps):
            indices = step_indices(step, n=len(train_set), batch_size=cfg.batch_size, seed=cfg.seed)
            n_targets = sum(train_set[i].num_targets for i in indices)
            # Sorting by length before splitting into micro-batches cuts padding; the step's sum is unchanged.
            mine = sorted(indices[rank::world], key=lambda i: len(train_set[i].input_ids))
            nll_sum = torch.zeros((), device=acc.device)
            for j in range(cfg.grad_accum):
                batch = make_batch(
                    [train_set[i] for i in mine[j * micro : (j + 1) * micro]], packing=cfg.packing, pad_id=pad_id
                )
                window_tokens += batch["input_ids"].numel() if cfg.packing else int(batch["attention_mask"].sum())
                sync = nullcontext() if j == cfg.grad_accum - 1 else acc.no_sync(model)
                with sync:
                    nll, _ = batch_nll(model, batch, acc.device)
                    # DDP averages gradients over processes; scaling by `world` turns that into the global sum.
                    acc.backward(nll * world / n_targets)
                nll_sum += nll.detach()
            grad_norm = optimizer_step(
                acc, model, optimizer, scheduler, max_grad_norm=cfg.max_grad_norm, sharded=sharded
            )

            loss = (all_reduce_sum(acc, nll_sum) / n_targets).item()
            check_finite(
                {"training loss": loss},
                what=f"at step {step + 1}",
                advice=f"Lower learning_rate (now {cfg.learning_rate}) or check the data. Last good checkpoint: "
                f"{latest_checkpoint(out)}",
            )
            window_loss, window_steps = window_loss + loss, window_steps + 1
            done = step + 1
            advance(status=f"loss {loss:.4f}")
            if done % cfg.logging_steps == 0 or done == total_steps:
                elapsed = time.perf_counter() - window_start
                row = {
                    "step": done,
                    "epoch": round(done / steps_per_epoch, 4),
                    "loss": window_loss / window_steps,
                    "learning_rate": scheduler.get_last_lr()[0],
                    "grad_norm": None if grad_norm is None else float(grad_norm),
                    "tokens_per_second": window_tokens * world / max(elapsed, 1e-9),
                }
                if cfg.eval_steps and eval_set and done % cfg.eval_steps == 0:
                    row["eval_loss"] = eval_loss(model, eval_set, acc, cfg=cfg, pad_id=pad_id)
                log.log(row)
                window_loss, window_steps, window_tokens, window_start = 0.0, 0, 0, time.perf_counter()
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
        "train_examples": len(train_set),
        "truncated_examples": truncated,
        "train_seconds": train_seconds,
    }
    summary.update(memory_report(acc, model))
    if eval_set:
        summary["eval_loss"] = eval_loss(model, eval_set, acc, cfg=cfg, pad_id=pad_id)
    unwrapped = trained_model(acc, model, build, sharded=sharded)
    if main:
        if eval_records and cfg.gold_metrics:
            answers = greedy_answers(
                unwrapped,
                tokenizer,
                [r.prompt for r in eval_records],
                max_new_tokens=cfg.max_new_tokens,
                batch_size=cfg.eval_batch_size,
                template=cfg.prompt_template,
                dtype=compute_dtype(acc.mixed_precision),
            )
            golds = [r.completion for r in eval_records]
            summary.update({f"eval_{k}": v for k, v in gold_metrics(answers, golds).items()})
            write_jsonl(
                out / "eval_predictions.jsonl",
                ({"prompt": r.prompt, "gold": r.completion, "answer": a} for r, a in zip(eval_records, answers)),
            )
        save_model(unwrapped, tokenizer, out, merge_lora=cfg.lora.merge)
        log.summary(summary)
    acc.wait_for_everyone()
    acc.end_training()
    return summary
