"""ops and losses against numbers computed by hand."""

import math

import torch

from rlhfkit.losses import IGNORE_INDEX, sft_nll
from rlhfkit.ops import entropy_from_logits, logprobs_from_logits, masked_mean, masked_var, masked_whiten


def test_masked_mean_and_var_by_hand():
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert masked_mean(values, mask).item() == 2.0
    assert masked_var(values, mask).item() == 1.0  # ((1-2)^2 + 0 + (3-2)^2) / (3 - 1)
    assert masked_var(values, mask, unbiased=False).item() == torch.tensor(2 / 3).item()
    torch.testing.assert_close(masked_mean(values, mask, dim=1), torch.tensor([2.0]), rtol=0, atol=0)
    assert masked_mean(values, torch.zeros_like(mask)).item() == 0.0  # empty mask: 0, not NaN


def test_masked_whiten_by_hand():
    # mean 4, unbiased variance ((-2)^2 + 0 + 2^2) / 2 = 4, std 2: the division by the std shows
    values = torch.tensor([2.0, 4.0, 6.0, 50.0])
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0])
    w = masked_whiten(values, mask)
    torch.testing.assert_close(w, torch.tensor([-1.0, 0.0, 1.0, 0.0]), rtol=0, atol=1e-6)
    torch.testing.assert_close(
        masked_whiten(values, mask, shift_mean=False), torch.tensor([3.0, 4.0, 5.0, 0.0]), rtol=0, atol=1e-6
    )


def test_logprobs_and_entropy_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # probabilities 1/4, 3/4
    lp = logprobs_from_logits(logits, torch.tensor([1]))
    assert abs(lp.item() - math.log(0.75)) < 1e-6
    # temperature 2 halves the logits: probabilities 1/(1+sqrt 3), sqrt 3/(1+sqrt 3)
    lp_t = logprobs_from_logits(logits, torch.tensor([0]), temperature=2.0)
    assert abs(lp_t.item() - math.log(1 / (1 + math.sqrt(3)))) < 1e-6
    h = entropy_from_logits(logits).item()
    assert abs(h - -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))) < 1e-6


def test_sft_nll_counts_only_target_tokens_by_hand():
    # vocab 2; logits at positions 0..2 predict labels at 1..3
    logits = torch.tensor([[[0.0, 0.0], [0.0, math.log(3.0)], [math.log(3.0), 0.0], [5.0, -5.0]]])
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 1, 0]])  # position 1 is prompt: not counted
    nll, count = sft_nll(logits, labels)
    assert count.item() == 2
    # position 1 predicts label 1 with p = 3/4; position 2 predicts label 0 with p = 3/4
    assert abs(nll.item() - 2 * -math.log(0.75)) < 1e-6
    # the last position's logits predict nothing, so they must not matter
    logits2 = logits.clone()
    logits2[0, 3] = torch.tensor([-9.0, 9.0])
    assert sft_nll(logits2, labels)[0].item() == nll.item()
