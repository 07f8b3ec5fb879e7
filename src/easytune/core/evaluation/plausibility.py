"""Physical plausibility of joint trajectories (metres, Y up, floor at y = 0), beyond the paper's metrics.

Per motion (valid frames only), then averaged over motions:
- ``foot_skating`` (m/s): horizontal speed of a foot joint between two frames in which it is in contact
  (height below its contact height in both), averaged over all such foot-frame transitions;
- ``penetration`` (m): mean over frames of how far the lowest joint is below the floor, max(0, -min_j y);
- ``floating`` (m): mean over frames of how far the lowest joint is above the floor beyond a tolerance,
  max(0, min_j y - tolerance) (real motions stand on the floor; airborne phases of jumps count too);
- ``jitter`` (m/s^2): mean norm of the joint acceleration (second finite difference times fps^2).
Compare every value with the real-motion row: absolute levels depend on the skeleton and the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np

from easytune.core.infra.config import NON_NEGATIVE, POSITIVE

PLAUSIBILITY_METRICS = ("foot_skating", "penetration", "floating", "jitter")


@dataclass
class PlausibilityConfig:
    """Foot joints (HumanML3D: left ankle 7, left toe 10, right ankle 8, right toe 11) and their contact heights in
    metres (ankles sit about 8 cm above the floor when standing, toes about 2 cm)."""

    fps: Annotated[float, POSITIVE] = 20.0
    foot_joints: Annotated[tuple[int, ...], NON_NEGATIVE] = (7, 10, 8, 11)
    contact_heights: Annotated[tuple[float, ...], NON_NEGATIVE] = (0.10, 0.05, 0.10, 0.05)
    floating_tolerance: Annotated[float, NON_NEGATIVE] = 0.05

    def __post_init__(self) -> None:
        if len(self.foot_joints) != len(self.contact_heights):
            raise ValueError("foot_joints and contact_heights must have the same length")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")


def motion_plausibility(joints: np.ndarray, config: PlausibilityConfig) -> dict[str, float]:
    """One motion (T, J, 3) of valid frames -> the four metrics (``nan`` where undefined, e.g. no contact)."""
    joints = np.asarray(joints, np.float64)
    if joints.ndim != 3 or joints.shape[-1] != 3:
        raise ValueError(f"joints must be (T, J, 3), got {joints.shape}")
    lowest = joints[..., 1].min(1)  # (T,)
    out = {
        "penetration": float(np.maximum(-lowest, 0.0).mean()),
        "floating": float(np.maximum(lowest - config.floating_tolerance, 0.0).mean()),
        "foot_skating": float("nan"),
        "jitter": float("nan"),
    }
    if len(joints) >= 2:
        feet = joints[:, list(config.foot_joints)]  # (T, F, 3)
        contact = feet[..., 1] < np.asarray(config.contact_heights)[None, :]  # (T, F)
        both = contact[1:] & contact[:-1]  # (T-1, F)
        speed = np.linalg.norm(feet[1:, :, [0, 2]] - feet[:-1, :, [0, 2]], axis=-1) * config.fps  # (T-1, F)
        if both.any():
            out["foot_skating"] = float(speed[both].mean())
    if len(joints) >= 3:
        acc = (joints[2:] - 2.0 * joints[1:-1] + joints[:-2]) * config.fps**2  # (T-2, J, 3)
        out["jitter"] = float(np.linalg.norm(acc, axis=-1).mean())
    return out


def plausibility_per_motion(joints: np.ndarray, lengths: np.ndarray,
                            config: PlausibilityConfig) -> dict[str, np.ndarray]:
    """Padded (N, T, J, 3) joints and (N,) lengths -> metric name -> (N,) values (``nan`` where undefined)."""
    values = {name: np.full(len(joints), np.nan) for name in PLAUSIBILITY_METRICS}
    for i, length in enumerate(np.asarray(lengths)):
        for name, v in motion_plausibility(joints[i, : int(length)], config).items():
            values[name][i] = v
    return values


def plausibility_summary(joints: np.ndarray, lengths: np.ndarray, config: PlausibilityConfig) -> dict[str, float]:
    """Mean over motions of each metric (motions where a metric is undefined are left out)."""
    per = plausibility_per_motion(joints, lengths, config)
    return {name: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for name, v in per.items()}
