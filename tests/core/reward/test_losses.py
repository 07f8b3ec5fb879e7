"""Losses: InfoNCE golden value and duplicate masking, SPL zero at Q = P and gradient signs, caption groups."""

import math

import numpy as np
import torch

from easytune.core.reward.losses import (
    caption_groups,
    info_nce_loss,
    kl_to_standard_normal,
    near_duplicate_mask,
    normalise_caption,
    reconstruction_loss,
    spl_loss,
)


def test_caption_normalisation_groups():
    assert normalise_caption("A person  Walks.") == "a person walks"
    assert caption_groups(["a man runs.", "A man runs", "a man jumps"]).tolist() == [0, 0, 1]


def test_info_nce_golden_value_temperature_once():
    m = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    c = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # text x motion cosines: [[1, 0], [0.6, 0.8]] / 0.1
    logits = torch.tensor([[10.0, 0.0], [6.0, 8.0]])
    expected = 0.5 * (torch.nn.functional.cross_entropy(logits, torch.arange(2))
                      + torch.nn.functional.cross_entropy(logits.T, torch.arange(2)))
    torch.testing.assert_close(info_nce_loss(m, c, 0.1), expected)


def test_duplicate_negatives_are_masked():
    m = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    c = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # two identical pairs: without masking the loss is log 2
    assert abs(float(info_nce_loss(m, c, 0.1)) - math.log(2)) < 1e-5
    dup = near_duplicate_mask(torch.tensor([[1.0, 0.0], [0.99, 0.01]]), None, threshold=0.9)
    assert dup.all()
    assert float(info_nce_loss(m, c, 0.1, dup)) < 1e-6
    groups = near_duplicate_mask(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([3, 3]), threshold=None)
    assert groups.all()


def test_kl_zero_at_prior():
    assert float(kl_to_standard_normal(torch.zeros(3, 4), torch.zeros(3, 4))) == 0.0
    assert float(kl_to_standard_normal(torch.ones(3, 4), torch.zeros(3, 4))) == 2.0


def test_spl_loss_zero_when_q_equals_p():
    r = torch.tensor([3.0, -1.0], requires_grad=True)
    loss = spl_loss(r, r, torch.tensor([False, False]))  # no preference: x_w = x_l, P = Q = (0.5, 0.5)
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(r.grad.abs().sum()) == 0.0


def test_spl_loss_golden_and_gradient_sign():
    rw = torch.tensor([0.2], requires_grad=True)
    rl = torch.tensor([0.5], requires_grad=True)
    loss = spl_loss(rw, rl, torch.tensor([True]))
    # Q = (1, 0): KL = -log softmax([rw, rl])[0]; the rewards already carry tau, no second division
    assert abs(float(loss.detach()) - (-math.log(math.exp(0.2) / (math.exp(0.2) + math.exp(0.5))))) < 1e-6
    loss.backward()
    assert float(rw.grad) < 0 < float(rl.grad)  # descent raises the winner and lowers the loser
    torch.testing.assert_close(rw.grad, -rl.grad)


def test_spl_loss_neutral_target_pulls_rewards_together():
    rw = torch.tensor([1.0], requires_grad=True)
    rl = torch.tensor([0.0], requires_grad=True)
    spl_loss(rw, rl, torch.tensor([False])).backward()
    assert float(rw.grad) > 0 > float(rl.grad)
    assert np.isclose(float(spl_loss(torch.tensor([2.0]), torch.tensor([2.0]), torch.tensor([False]))), 0.0)


def test_per_query_weights_all_ones_equal_the_plain_losses_and_zeros_drop_a_query():
    g = torch.Generator().manual_seed(0)
    m, c = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    ones = torch.ones(4)
    torch.testing.assert_close(info_nce_loss(m, c, 0.1, None, ones), info_nce_loss(m, c, 0.1), rtol=0, atol=1e-7)
    w = torch.tensor([1.0, 0.0, 1.0, 1.0])
    logits = torch.nn.functional.normalize(c, dim=-1) @ torch.nn.functional.normalize(m, dim=-1).T / 0.1
    t = torch.nn.functional.cross_entropy(logits, torch.arange(4), reduction="none")
    v = torch.nn.functional.cross_entropy(logits.T, torch.arange(4), reduction="none")
    torch.testing.assert_close(info_nce_loss(m, c, 0.1, None, w), 0.5 * ((t + v) * w).sum() / 4)
    pred, target = torch.randn(4, 5, 2, generator=g), torch.randn(4, 5, 2, generator=g)
    mask = torch.arange(5)[None] < torch.tensor([5, 3, 2, 4])[:, None]
    torch.testing.assert_close(reconstruction_loss(pred, target, mask, ones), reconstruction_loss(pred, target, mask))
    per_frame = torch.nn.functional.smooth_l1_loss(pred, target, reduction="none").mean(-1) * mask
    torch.testing.assert_close(reconstruction_loss(pred, target, mask, w), (per_frame * w[:, None]).sum() / 14)
    mu, logvar = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    torch.testing.assert_close(kl_to_standard_normal(mu, logvar, ones), kl_to_standard_normal(mu, logvar))
    assert float(kl_to_standard_normal(torch.ones(2, 2), torch.zeros(2, 2), torch.tensor([1.0, 0.0]))) == 0.5


def test_spl_loss_per_pair():
    rw, rl = torch.tensor([0.2, 1.0]), torch.tensor([0.5, 1.0])
    per = spl_loss(rw, rl, torch.tensor([True, False]), reduction="none")
    assert per.shape == (2,) and float(per[1]) == 0.0
    torch.testing.assert_close(per.mean(), spl_loss(rw, rl, torch.tensor([True, False])))
