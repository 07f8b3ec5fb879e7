"""Pretraining helpers: VAE reconstruction errors on constructed cases."""

import numpy as np
import pytest
import torch

from easytune.core.dataset import FeatureStats, MotionSplit, TextEmbeddings
from easytune.core.motion.skeleton import HUMANML3D
from easytune.core.pretrain import PretrainConfig, PretrainData, VAEEvaluation, vae_reconstruction_errors


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
