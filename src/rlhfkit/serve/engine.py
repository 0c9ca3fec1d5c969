"""One model's request queue and the worker thread that batches it through the project's sampler.

The worker takes every queued request that fits (`max_batch` rows, a request with n choices takes n) and decodes
them together with `models.sampler.sample`: per-row temperature (0 = greedy) and top_p, and one CPU generator per
choice, seeded from the request's seed and the choice's index (a random seed without one), from which the choice
draws its own noise for each step's exponential race (`sampler.race`); so a seeded choice's tokens do not depend on
what it was batched with, up to near-ties that the batch's different rounding (~5e-5 in the logits) can break. The
sampler's step hook turns each new token into text (text.ChoiceText), ends a choice at EOS, at a stop string or at
its own max_tokens, and hands the events to the request's `emit` (called from the worker thread). Requests that
arrive while a batch runs wait for the next batch (after `batch_wait` for a burst's later requests).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from rlhfkit.data.collate import pad_left
from rlhfkit.models.sampler import sample
from rlhfkit.serve.text import ChoiceText

log = logging.getLogger("rlhfkit.serve")


@dataclass(frozen=True)
class Delta:
    index: int  # the choice
    text: str


@dataclass(frozen=True)
class Finish:
    index: int
    reason: str  # "stop" (EOS or a stop string) or "length" (max_tokens)
    text: str  # the whole answer
    completion_tokens: int  # tokens the choice generated, EOS included


@dataclass(frozen=True)
class Done:
    prompt_tokens: int
    completion_tokens: int  # over all choices


@dataclass(frozen=True)
class Failed:
    message: str


Event = Delta | Finish | Done | Failed


@dataclass(eq=False)
class Job:
    """One chat completion request, tokenized and checked."""

    prompt_ids: list[int]
    emit: Callable[[list[Event]], None]  # called from the worker thread with each step's events
    n: int = 1
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    stream: bool = False
    cancelled: bool = False  # set when the client went away: its choices end at the next step
    arrived: float = field(default=0.0, init=False)  # time.monotonic() when queued
    remaining: int = field(default=0, init=False)
    completion_tokens: int = field(default=0, init=False)


class QueueFull(Exception):
    pass


def choice_seed(seed: int, index: int) -> int:
    """A generator seed per (request seed, choice index): distinct pairs give unrelated streams."""
    digest = hashlib.blake2b(f"{seed}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _emit(job: Job, events: list[Event]) -> None:
    try:
        job.emit(events)
    except Exception:  # the request's side is gone (e.g. its event loop closed): end its choices
        job.cancelled = True


class Engine:
    """Serve one model: `submit` queues a Job (QueueFull when `max_queue` jobs already wait); `start` runs the
    worker thread."""

    def __init__(
        self,
        model,
        tokenizer,
        *,
        max_batch: int = 32,
        max_queue: int = 256,
        dtype: torch.dtype | None = None,
        fast: bool = True,
        threads: int | None = None,
        batch_wait: float = 0.02,
    ):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.threads = threads  # torch's intra-op threads in the worker (None: torch's default)
        self.batch_wait = batch_wait  # seconds a batch waits, from its oldest request's arrival, for a fuller batch
        self.decoder_tokenizer = copy.deepcopy(tokenizer)  # the worker's own: fast tokenizers are not thread-safe
        self.eos_id, self.pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
        self.context = getattr(model.config, "max_position_embeddings", None)
        self.max_batch, self.max_queue, self.dtype, self.fast = max_batch, max_queue, dtype, fast
        self.device = next(model.parameters()).device
        self._pending: deque[Job] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.batches: list[int] = []  # rows of each batch run (for tests and the benchmark)

    def submit(self, job: Job) -> None:
        if job.n > self.max_batch:
            raise ValueError(f"n={job.n} is more than a batch holds ({self.max_batch})")
        with self._cond:
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"{len(self._pending)} requests are waiting already")
            job.remaining, job.arrived = job.n, time.monotonic()
            self._pending.append(job)
            self._cond.notify()

    def start(self) -> Engine:
        with self._cond:
            if self._thread is None:
                self._stopping = False
                self._thread = threading.Thread(target=self._loop, name="rlhf-serve-worker", daemon=True)
                self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()

    def _take(self) -> list[Job]:
        """Wait for a job, and up to `batch_wait` after its arrival for more while the batch is not full (a burst of
        requests arrives over some milliseconds: without the wait its first request would run alone); then take the
        queued jobs, in order, while their rows fit one batch."""
        with self._cond:
            while not self._pending and not self._stopping:
                self._cond.wait()
            while not self._stopping and sum(job.n for job in self._pending) < self.max_batch:
                left = self._pending[0].arrived + self.batch_wait - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            jobs, rows = [], 0
            while self._pending and rows + self._pending[0].n <= self.max_batch:
                job = self._pending.popleft()
                if job.cancelled:  # its client went away while it waited
                    job.remaining = 0
                    continue
                jobs.append(job)
                rows += job.n
            return jobs

    def _loop(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        while True:
            jobs = self._take()
            if self._stopping:
                with self._cond:
                    jobs += self._pending
                    self._pending.clear()
                for job in jobs:
                    _emit(job, [Failed("the server is shutting down")])
                return
            if not jobs:
                continue
            try:
                self.run(jobs)
            except Exception as e:  # one bad batch must not stop the server
                log.exception("generation failed")
                for job in jobs:
                    if job.remaining:
                        _emit(job, [Failed(f"generation failed: {type(e).__name__}")])

    def run(self, jobs: list[Job]) -> None:
        """Decode the jobs as one batch (the worker's step; callable directly in tests)."""
        rows = [(job, i) for job in jobs for i in range(job.n)]
        self.batches.append(len(rows))
        del self.batches[:-10_000]  # a long-running server keeps the recent ones only
        input_ids, attention_mask = pad_left([job.prompt_ids for job, _ in rows], pad_id=self.pad_id)
        temperature = torch.tensor([job.temperature for job, _ in rows], dtype=torch.float32)
        top_p = torch.tensor([job.top_p for job, _ in rows], dtype=torch.float32)
        generators = [
            torch.Generator().manual_seed(choice_seed(job.seed, i) if job.seed is not None else secrets.randbits(63))
            for job, i in rows
        ]

        def decode(ids: list[int]) -> str:
            return self.decoder_tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

        texts = [ChoiceText(decode, job.stop, stream=job.stream) for job, _ in rows]
        counts = [0] * len(rows)
        done = [False] * len(rows)

        def on_step(t: int, tokens: torch.Tensor, finished: torch.Tensor) -> None:
            events: dict[Job, list[Event]] = {}
            for r, token in enumerate(tokens.tolist()):
                if done[r]:
                    continue
                job, index = rows[r]
                counts[r] += 1
                if job.cancelled:
                    reason = "cancelled"
                elif token == self.eos_id:
                    reason = "stop"
                else:
                    delta = texts[r].push(token)
                    reason = "stop" if texts[r].stopped else "length" if counts[r] >= job.max_tokens else None
                    if delta and job.stream:
                        events.setdefault(job, []).append(Delta(index, delta))
                if reason is None:
                    continue
                done[r] = True
                finished[r] = True
                job.remaining -= 1
                job.completion_tokens += counts[r]
                if reason == "cancelled":
                    continue
                out = events.setdefault(job, [])
                rest = texts[r].flush()
                if rest and job.stream:
                    out.append(Delta(index, rest))
                out.append(Finish(index, reason, texts[r].text, counts[r]))
                if job.remaining == 0:
                    out.append(Done(len(job.prompt_ids), job.completion_tokens))
            for job, evs in events.items():
                _emit(job, evs)

        sample(
            self.model,
            input_ids.to(self.device),
            attention_mask.to(self.device),
            max_new_tokens=max(job.max_tokens for job, _ in rows),
            eos_id=self.eos_id,
            pad_id=self.pad_id,
            temperature=temperature.to(self.device),
            top_p=top_p.to(self.device),
            generators=generators,
            on_step=on_step,
            fast=self.fast,
            dtype=self.dtype,
        )
