"""The engine's own settings: the worker sets torch's thread count when told to (rlhf serve --threads)."""

import torch


def test_the_worker_sets_its_threads_only_when_told(lm, monkeypatch):
    from rlhfkit.serve.engine import Engine

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    for threads in (None, 1):
        engine = Engine(*lm, threads=threads).start()
        engine.stop()
    assert calls == [1]


def test_a_batch_waits_batch_wait_for_requests_that_arrive_just_after_the_first(lm):
    import threading
    import time

    from rlhfkit.serve.engine import Done, Engine, Job

    model, tokenizer = lm
    ids = tokenizer("hi", add_special_tokens=False).input_ids
    for wait, expected in ((0.5, [2]), (0.0, [1, 1])):
        engine = Engine(model, tokenizer, batch_wait=wait).start()
        done = threading.Semaphore(0)
        jobs = [
            Job(prompt_ids=ids, emit=lambda evs, done=done: any(isinstance(e, Done) for e in evs) and done.release())
        ]
        jobs.append(Job(prompt_ids=ids, emit=jobs[0].emit))
        try:
            engine.submit(jobs[0])
            time.sleep(0.1)
            engine.submit(jobs[1])
            assert done.acquire(timeout=60) and done.acquire(timeout=60)
        finally:
            engine.stop()
        assert engine.batches == expected, wait
