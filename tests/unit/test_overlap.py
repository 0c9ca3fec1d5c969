"""SideBySide: two pieces of work at once, each on half the intra-op threads, and everything restored after."""

import threading

import pytest
import torch

from rlhfkit.runtime.overlap import SideBySide


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_side_runs_on_another_thread_with_half_the_threads(two_threads):
    seen = {}

    def work(name):
        seen[name] = (threading.get_ident(), torch.get_num_threads())
        return name

    with SideBySide(True) as side:
        assert side.run(lambda: work("main"), lambda: work("side")) == ("main", "side")
    assert seen["main"] == (threading.get_ident(), 1)
    assert seen["side"][0] != threading.get_ident() and seen["side"][1] == 1
    assert torch.get_num_threads() == 2


def test_disabled_runs_both_here_on_all_threads(two_threads):
    here = []
    side = SideBySide(False)
    side.run(lambda: here.append((threading.get_ident(), torch.get_num_threads())), lambda: here.append(None))
    assert here == [(threading.get_ident(), 2), None]


def test_errors_propagate_and_the_thread_count_is_restored(two_threads):
    finished = threading.Event()

    def slow_side():
        finished.wait(0.2)
        finished.set()

    def boom():
        raise ValueError("main failed")

    with SideBySide(True) as side:
        with pytest.raises(ValueError, match="main failed"):
            side.run(boom, slow_side)
        assert finished.is_set()  # the side's work was waited for, not left running
        assert torch.get_num_threads() == 2
        with pytest.raises(KeyError):
            side.run(lambda: None, lambda: {}["missing"])
        assert torch.get_num_threads() == 2


def test_backward_passes_on_both_threads_match_one_after_the_other(two_threads):
    torch.manual_seed(0)
    a, b = torch.nn.Linear(64, 64), torch.nn.Linear(64, 64)
    x = torch.randn(32, 64)

    def grads(module):
        module.zero_grad()
        module(x).square().mean().backward()
        return module.weight.grad.clone()

    expected = (grads(a), grads(b))
    with SideBySide(True) as side:
        got = side.run(lambda: grads(a), lambda: grads(b))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
