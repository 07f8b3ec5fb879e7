"""Pretraining helpers: VAE reconstruction errors on constructed cases."""

import numpy as np
import pytest
import torch

from easytune.core.data.dataset import FeatureStats, MotionSplit, TextEmbeddings
from easytune.core.motion.skeleton import HUMANML3D
from easytune.core.pretrain.base_generators import (
    PretrainConfig,
    PretrainData,
    VAEEvaluation,
    vae_reconstruction_errors,
)


class _FeatureVAE(torch.nn.Module):
    """Latent = the features; decode adds ``shift`` to chosen feature dims."""

    def __init__(self, shift: dict[int, float]):
        super().__init__()
        self.shift = shift

    def encode(self, x, mask):
        return x, torch.zeros_like(x)

    def decode(self, z, mask):
        out = z.clone()
        for dim, value in self.shift.items():
            out[..., dim] = out[..., dim] + value
        return out * mask[..., None]


def _data(n=3, frames=12):
    rng = np.random.default_rng(0)
    feats = (rng.standard_normal((n, frames, 263)) * 0.1).astype(np.float32)
    feats[..., 0] = 0.0  # no root yaw velocity: a root velocity error then adds up along a straight line
    lengths = np.array([12, 8, 5])
    for i, length in enumerate(lengths):
        feats[i, length:] = 0
    split = MotionSplit(np.array(["a", "b", "c"]), feats, lengths, np.arange(n + 1), np.zeros(n, np.int64),
                        np.array(["", "", ""]))
    text = TextEmbeddings(np.array(["x"]), np.zeros((1, 4), np.float32), np.zeros((1, 1, 4), np.float16),
                          np.array([1]))
    stats = FeatureStats(np.zeros(263, np.float32), np.ones(263, np.float32))
    config = PretrainConfig(data=PretrainData(batch_size=2, max_frames=12, unit=1), evaluation=VAEEvaluation(2))
    return split, text, stats, config


def test_perfect_reconstruction_has_zero_error():
    split, text, stats, config = _data()
    errors = vae_reconstruction_errors(_FeatureVAE({}), split, text, stats, HUMANML3D, config, torch.device("cpu"))
    assert errors["vae_mpjpe_m"] == errors["vae_global_mpjpe_m"] == errors["vae_root_error_m"] == 0.0
    assert errors["latent_std"] > 0


def test_root_velocity_error_moves_the_trajectory_but_not_the_root_aligned_pose():
    """+1 cm/frame on the root's x velocity: after frame t the root is t cm off (integrated from frame 1), every
    joint with it; root-aligned MPJPE stays 0 (MLD's align_root convention)."""
    split, text, stats, config = _data()
    errors = vae_reconstruction_errors(_FeatureVAE({1: 0.01}), split, text, stats, HUMANML3D, config,
                                       torch.device("cpu"))
    assert errors["vae_mpjpe_m"] == pytest.approx(0.0, abs=1e-6)
    # displacement at frame t is 0.01 * t metres (the velocity of frame t-1 moves frame t); mean over valid frames
    expected = sum(0.01 * np.arange(length).sum() for length in (12, 8, 5)) / (12 + 8 + 5)
    assert errors["vae_root_error_m"] == pytest.approx(expected, rel=1e-4)
    assert errors["vae_global_mpjpe_m"] == pytest.approx(expected, rel=1e-4)


def test_pose_error_counts_in_both_mpjpes():
    """Moving one ric joint coordinate by 22 cm (normalised std 1) raises the per-frame mean over 22 joints by 1 cm."""
    split, text, stats, config = _data()
    errors = vae_reconstruction_errors(_FeatureVAE({5: 0.22}), split, text, stats, HUMANML3D, config,
                                       torch.device("cpu"))
    assert errors["vae_mpjpe_m"] == pytest.approx(0.01, rel=1e-4)
    assert errors["vae_global_mpjpe_m"] == pytest.approx(0.01, rel=1e-4)
    assert errors["vae_root_error_m"] == pytest.approx(0.0, abs=1e-6)


def _latent_setup():
    from tests.core.finetune.tiny import make_mld, make_splits

    gen = make_mld(steps=4)
    train, val, text = make_splits(10)
    data = PretrainData(batch_size=4, max_frames=12, unit=2, val_batches=1)
    return gen, train, val, text, data


def test_cached_posteriors_give_the_loss_of_encoding_the_same_crops():
    """LatentCache: an MLD step on a cached crop's posterior equals the step that encodes that crop (same RNG)."""
    from easytune.core.pretrain.base_generators import LatentCache
    from easytune.core.pretrain.loop import MotionBatches

    gen, train, val, text, data = _latent_setup()
    cache = LatentCache(gen.vae, train, text, data, crops=2, seed=5, device=torch.device("cpu"))
    assert len(cache.index) == 2 * (len(train) // 4) * 4 and cache.mu.shape[1:] == gen.vae.latent_shape
    first = next(iter(MotionBatches(train, text, 4, 12, 5, "cpu", 2)(10_000)))  # the first cached batch's crops
    mu, logvar = gen.vae.encode(first.features, first.mask)
    torch.testing.assert_close(cache.mu[:4], mu)
    cached = gen.training_loss(None, None, first.text, torch.Generator().manual_seed(1), posterior=(mu, logvar))
    encoded = gen.training_loss(first.features, first.mask, first.text, torch.Generator().manual_seed(1))
    torch.testing.assert_close(cached, encoded)
    a, b = [next(iter(cache(e))) for e in (0, 0)], next(iter(cache(1)))
    torch.testing.assert_close(a[0].mu, a[1].mu)
    assert not torch.equal(a[0].mu, b.mu)  # another epoch, another order


def test_mld_denoiser_trains_on_cached_latents_and_refuses_them_elsewhere():
    from easytune.core.infra.config import from_dict
    from easytune.core.pretrain.base_generators import train_denoiser

    gen, train, val, text, data = _latent_setup()
    params = {"data": {"batch_size": 4, "max_frames": 12, "unit": 2, "val_batches": 1}, "resume_dir": None,
              "latent_denoiser": {"model": {"preset": "tiny", "text_dim": 8}, "cached_crops": 2,
                                  "diffusion": {"num_inference_steps": 4},
                                  "train": {"max_steps": 3, "warmup_steps": 1, "val_every": 3}}}
    config = from_dict(PretrainConfig, params)
    trained, result = train_denoiser("mld", train, val, text, config, torch.device("cpu"), 0, gen.vae)
    assert result.steps == 3 and np.isfinite(result.train_loss)
    bad = from_dict(PretrainConfig, {**params, "frame_denoiser": {"model": {"preset": "tiny", "text_dim": 8},
                                                                  "cached_crops": 2,
                                                                  "train": {"max_steps": 1}}})
    with pytest.raises(ValueError, match="MLD denoiser only"):
        train_denoiser("mdm", train, val, text, bad, torch.device("cpu"), 0)
