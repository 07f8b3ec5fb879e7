"""Reward: frozen, per-sample, differentiable in x, tau applied once, empty caption, sanity figures."""

import numpy as np
import torch

from easytune.core.data.text import TextBatch
from easytune.core.infra.checkpoint import make_checkpoint
from easytune.core.reward.reward import Reward, empty_caption_batch, reward_sanity


def test_reward_is_tau_times_cosine_per_sample(model, split, text):
    reward = Reward(model)
    x = torch.as_tensor(split.features[:4]).requires_grad_(True)  # (4, T, D)
    lengths = torch.as_tensor(split.lengths[:4])
    batch = TextBatch.from_embeddings(text, split.caption_ids[:4])
    r = reward(x, lengths, batch)
    assert r.shape == (4,)
    cos = torch.nn.functional.cosine_similarity(model.encode_motion(x, lengths)[0], model.encode_text(batch)[0])
    torch.testing.assert_close(r, model.reward_scale * cos)
    assert abs(reward.scale - 10.0) < 1e-5 and r.abs().max() <= reward.scale + 1e-5
    r.mean().backward()  # the caller takes the batch mean explicitly
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())
    assert not model.training


def test_empty_caption_broadcasts(model, split):
    reward = Reward(model)
    x, lengths = torch.as_tensor(split.features[:3]), torch.as_tensor(split.lengths[:3])
    empty = empty_caption_batch(1, 16)
    assert empty.rows.tolist() == [-1] and empty.tokens.shape == (1, 1, 16)
    r1 = reward(x, lengths, empty)
    r3 = reward(x, lengths, empty_caption_batch(3, 16))
    assert r1.shape == (3,) and torch.allclose(r1, r3)


def test_from_checkpoint_and_noise_aware_input(model, split, text):
    reward = Reward.from_checkpoint(make_checkpoint("retrieval_model", model), "cpu")
    x, lengths = torch.as_tensor(split.features[:2]), torch.as_tensor(split.lengths[:2])
    batch = TextBatch.from_embeddings(text, split.caption_ids[:2])
    t = torch.tensor([0, 300])
    r = reward(x, lengths, batch, t)
    assert r.shape == (2,) and torch.isfinite(r).all() and reward.noise_aware


def test_sanity_counts_are_fractions(model, split, text):
    out = reward_sanity(Reward(model), split, text, "cpu", seed=0)
    assert out["sanity_samples"] == len(split) and out["sanity_other_by"] == "label"
    for key in ("sanity_gt_beats_other_label", "sanity_empty_caption_gt_beats_other"):
        assert 0.0 <= out[key] <= 1.0
    assert np.isfinite(out["sanity_mean_margin"])
