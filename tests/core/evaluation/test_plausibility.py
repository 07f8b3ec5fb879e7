"""Plausibility metrics on constructed skeletons with known answers."""

import numpy as np
import pytest

from easytune.core.evaluation.plausibility import (
    PlausibilityConfig,
    motion_plausibility,
    plausibility_per_motion,
    plausibility_summary,
)

CFG = PlausibilityConfig(fps=20.0)


def standing(t: int = 20) -> np.ndarray:
    """(T, 22, 3): joints at heights 0..1 m, feet (7, 8, 10, 11) on the floor."""
    j = np.zeros((t, 22, 3))
    j[..., 1] = np.linspace(0.0, 1.0, 22)[None, :]
    j[:, [7, 8, 10, 11], 1] = [0.08, 0.08, 0.0, 0.0]
    j[..., 0] = np.linspace(-0.2, 0.2, 22)[None, :]
    return j


def test_standing_still_is_perfect():
    out = motion_plausibility(standing(), CFG)
    assert out == {"penetration": 0.0, "floating": 0.0, "foot_skating": 0.0, "jitter": 0.0}


def test_sliding_feet_skate_at_the_sliding_speed():
    j = standing()
    j[..., 0] += 0.05 * np.arange(len(j))[:, None]  # 0.05 m per frame = 1 m/s at 20 fps
    out = motion_plausibility(j, CFG)
    assert out["foot_skating"] == pytest.approx(1.0)
    assert out["jitter"] == pytest.approx(0.0, abs=1e-9)  # constant velocity: no acceleration


def test_penetration_floating_and_jitter():
    below = standing()
    below[..., 1] -= 0.1
    assert motion_plausibility(below, CFG)["penetration"] == pytest.approx(0.1)
    above = standing()
    above[..., 1] += 0.3
    out = motion_plausibility(above, CFG)
    assert out["floating"] == pytest.approx(0.25) and np.isnan(out["foot_skating"])  # no contact at all
    noisy = standing() + np.random.default_rng(0).normal(0, 0.01, (20, 22, 3))
    assert motion_plausibility(noisy, CFG)["jitter"] > 1.0  # 1 cm noise at 20 fps: several m/s^2


def test_padding_is_ignored():
    j = np.stack([standing(), standing()])
    j[0, 10:] = 100.0  # garbage beyond the length of motion 0
    per = plausibility_per_motion(j, np.array([10, 20]), CFG)
    assert per["jitter"][0] == 0.0 and per["penetration"][0] == 0.0
    assert plausibility_summary(j, np.array([10, 20]), CFG)["floating"] == 0.0
