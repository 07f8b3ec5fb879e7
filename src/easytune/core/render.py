"""Skeleton animations as small GIFs (matplotlib Agg canvas per frame, pillow for the GIF).

An orthographic camera (azimuth/elevation about the vertical Y axis) projects the joints; bones follow the
skeleton's kinematic chains; the floor trace of the root is drawn under the body. Several motions render side by
side in one GIF (e.g. generated vs reference); a shorter motion holds its last frame.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from easytune.core.motion.skeleton import HUMANML3D

CHAIN_COLOURS = ("#d62728", "#1f77b4", "#333333", "#ff7f0e", "#2ca02c")


def _as_numpy(joints) -> np.ndarray:
    if hasattr(joints, "detach"):
        joints = joints.detach().to("cpu").float().numpy()
    arr = np.asarray(joints, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.shape[0] < 1:
        raise ValueError(f"joints must have shape (T, J, 3) with T >= 1, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("joints contain non-finite values")
    return arr


def project(joints: np.ndarray, azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """(..., 3) world points (Y up) -> (..., 2) screen points of an orthographic camera."""
    az, el = np.deg2rad(azimuth_deg), np.deg2rad(elevation_deg)
    x, y, z = joints[..., 0], joints[..., 1], joints[..., 2]
    u = np.cos(az) * x - np.sin(az) * z  # horizontal screen axis
    depth = np.sin(az) * x + np.cos(az) * z
    v = np.cos(el) * y - np.sin(el) * depth  # vertical screen axis (camera looking slightly down)
    return np.stack([u, v], axis=-1)


def render_skeleton_gif(
    joints,
    titles: Sequence[str] | None = None,
    fps: float = 20.0,
    chains: Sequence[Sequence[int]] = HUMANML3D.kinematic_chains,
    *,
    width: int = 320,
    height: int = 240,
    stride: int = 1,
    azimuth_deg: float = 30.0,
    elevation_deg: float = 15.0,
) -> bytes:
    """Render joints (T, J, 3) metres, Y up (or a list of them, side by side) to GIF bytes.

    Args:
        joints: one (T, J, 3) array/tensor or a sequence of them.
        titles: one short title per motion (e.g. the caption, truncated to fit).
        fps: frame rate of the motion; the GIF plays every ``stride``-th frame at ``fps / stride``.
        chains: kinematic chains (joint indices from the root), drawn as coloured polylines.
        width, height: GIF size in pixels (kept small: at most 320 x 320 per panel).
    """
    motions = [_as_numpy(joints)] if not isinstance(joints, (list, tuple)) else [_as_numpy(j) for j in joints]
    if not motions:
        raise ValueError("nothing to render")
    if titles is not None and len(titles) != len(motions):
        raise ValueError(f"{len(titles)} titles for {len(motions)} motions")
    if not (16 <= width <= 320 * len(motions) and 16 <= height <= 320 and stride >= 1 and fps > 0):
        raise ValueError("width must be in 16..320 per panel, height in 16..320, stride >= 1 and fps > 0")
    num_joints = motions[0].shape[1]
    if any(max(c) >= m.shape[1] for m in motions for c in chains):
        raise ValueError(f"chains reference joints beyond J={num_joints}")

    dpi = 80
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    panels = []
    for k, motion in enumerate(motions):
        ax = fig.add_subplot(1, len(motions), k + 1)
        screen = project(motion, azimuth_deg, elevation_deg)  # (T, J, 2)
        floor = project(np.stack([motion[:, 0, 0], np.zeros(len(motion)), motion[:, 0, 2]], -1),
                        azimuth_deg, elevation_deg)  # (T, 2)
        lo = np.minimum(screen.reshape(-1, 2).min(0), floor.min(0))
        hi = np.maximum(screen.reshape(-1, 2).max(0), floor.max(0))
        centre, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2, 0.5) * 1.05
        ax.set_xlim(centre[0] - half, centre[0] + half)
        ax.set_ylim(centre[1] - half, centre[1] + half)
        ax.set_aspect("equal")
        ax.set_axis_off()
        if titles is not None:
            ax.set_title(titles[k][:40], fontsize=6)
        ax.plot(floor[:, 0], floor[:, 1], color="#bbbbbb", linewidth=0.8)
        lines = [ax.plot([], [], color=CHAIN_COLOURS[i % len(CHAIN_COLOURS)], linewidth=1.5, marker="o",
                         markersize=1.5)[0] for i in range(len(chains))]
        panels.append((screen, lines))
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.9 if titles is not None else 0.99, wspace=0.02)

    frames = []
    num_frames = max(m.shape[0] for m in motions)
    for f in range(0, num_frames, stride):
        for screen, lines in panels:
            pose = screen[min(f, len(screen) - 1)]  # (J, 2); a shorter motion holds its last frame
            for line, chain in zip(lines, chains):
                line.set_data(pose[list(chain), 0], pose[list(chain), 1])
        canvas.draw()
        rgb = np.asarray(canvas.buffer_rgba())[..., :3]  # (H, W, 3)
        frames.append(Image.fromarray(rgb).quantize(colors=32))
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:],
                   duration=max(20, int(round(1000 * stride / fps))), loop=0)
    return buf.getvalue()
