"""Skeleton animations: RGB frames (matplotlib Agg canvas), small GIFs (pillow), MP4s, PNG frame strips.

An orthographic camera (azimuth/elevation about the vertical Y axis) projects the joints; bones follow the
skeleton's kinematic chains; the floor trace of the root is drawn under the body. Several motions render side by
side (e.g. generated vs reference); a shorter motion holds its last frame.

MP4 (H.264, yuv420p) is encoded by the ffmpeg executable that the PyPI package ``imageio-ffmpeg`` ships inside its
wheel, so video works on a machine without a system ffmpeg; :func:`encode_mp4` returns None (and logs why) where
that binary cannot run, and callers keep the GIF.
"""

from __future__ import annotations

import io
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from easytune.core.motion.skeleton import HUMANML3D

logger = logging.getLogger(__name__)

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


def render_skeleton_frames(
    joints,
    titles: Sequence[str] | None = None,
    chains: Sequence[Sequence[int]] = HUMANML3D.kinematic_chains,
    *,
    width: int = 320,
    height: int = 240,
    frames: Sequence[int] | None = None,
    azimuth_deg: float = 30.0,
    elevation_deg: float = 15.0,
) -> list[np.ndarray]:
    """Render joints (T, J, 3) metres, Y up (or a list of them, side by side) to RGB frames (height, width, 3) uint8.

    Args:
        joints: one (T, J, 3) array/tensor or a sequence of them.
        titles: one short title per motion (e.g. the caption, truncated to fit).
        chains: kinematic chains (joint indices from the root), drawn as coloured polylines.
        width, height: image size in pixels (at most 320 x 320 per panel).
        frames: the motion frames to render (default: every frame of the longest motion); the camera framing
            covers the whole motion either way.
    """
    motions = [_as_numpy(joints)] if not isinstance(joints, (list, tuple)) else [_as_numpy(j) for j in joints]
    if not motions:
        raise ValueError("nothing to render")
    if titles is not None and len(titles) != len(motions):
        raise ValueError(f"{len(titles)} titles for {len(motions)} motions")
    if not (16 <= width <= 320 * len(motions) and 16 <= height <= 320):
        raise ValueError("width must be in 16..320 per panel and height in 16..320")
    num_joints = motions[0].shape[1]
    if any(max(c) >= m.shape[1] for m in motions for c in chains):
        raise ValueError(f"chains reference joints beyond J={num_joints}")
    num_frames = max(m.shape[0] for m in motions)
    frames = list(range(num_frames)) if frames is None else [int(f) for f in frames]
    if not frames or min(frames) < 0 or max(frames) >= num_frames:
        raise ValueError(f"frames must be a non-empty list of indices in 0..{num_frames - 1}")

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

    out = []
    for f in frames:
        for screen, lines in panels:
            pose = screen[min(f, len(screen) - 1)]  # (J, 2); a shorter motion holds its last frame
            for line, chain in zip(lines, chains, strict=True):
                line.set_data(pose[list(chain), 0], pose[list(chain), 1])
        canvas.draw()
        out.append(np.asarray(canvas.buffer_rgba())[..., :3].copy())  # (H, W, 3)
    return out


def encode_gif(frames: Sequence[np.ndarray], fps: float) -> bytes:
    """RGB frames (H, W, 3) uint8 -> looping GIF bytes (32 colours) playing at ``fps``."""
    if not frames or fps <= 0:
        raise ValueError("need at least one frame and fps > 0")
    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)).quantize(colors=32) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:],
                   duration=max(20, int(round(1000 / fps))), loop=0)
    return buf.getvalue()


def ffmpeg_executable() -> str:
    """Path of the ffmpeg binary shipped by ``imageio-ffmpeg`` (``IMAGEIO_FFMPEG_EXE`` overrides it).

    Raises RuntimeError naming the package when it is missing or has no binary for this platform."""
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise RuntimeError("MP4 needs the package imageio-ffmpeg (pinned in requirements.txt)") from exc
    return imageio_ffmpeg.get_ffmpeg_exe()


def encode_mp4(frames: Sequence[np.ndarray], fps: float, quality: float = 6.0) -> bytes | None:
    """RGB frames (H, W, 3) uint8 -> H.264 MP4 bytes (yuv420p, faststart), or None when ffmpeg cannot run.

    Odd frame sizes are padded with white to even ones (yuv420p needs them); nothing is rescaled."""
    if not frames or fps <= 0:
        raise ValueError("need at least one frame and fps > 0")
    try:
        import imageio_ffmpeg

        exe = ffmpeg_executable()
    except (ImportError, RuntimeError) as exc:
        logger.warning("no MP4 (%s); keeping the GIF", exc)
        return None
    h, w = np.asarray(frames[0]).shape[:2]
    ph, pw = h + h % 2, w + w % 2
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.mp4"
        writer = imageio_ffmpeg.write_frames(str(path), (pw, ph), fps=float(fps), codec="libx264", quality=quality,
                                             macro_block_size=1, output_params=["-movflags", "+faststart"],
                                             ffmpeg_log_level="error", ffmpeg_timeout=120)
        try:
            writer.send(None)
            for frame in frames:
                frame = np.asarray(frame, dtype=np.uint8)
                if frame.shape != (h, w, 3):
                    raise ValueError(f"every frame must have shape {(h, w, 3)}, got {frame.shape}")
                if (ph, pw) != (h, w):
                    frame = np.pad(frame, ((0, ph - h), (0, pw - w), (0, 0)), constant_values=255)
                writer.send(np.ascontiguousarray(frame))
            writer.close()
        except (OSError, RuntimeError) as exc:  # ffmpeg missing at run time, killed, or refused the input
            logger.warning("ffmpeg (%s) could not encode the MP4: %s; keeping the GIF", exe, exc)
            return None
        return path.read_bytes() if path.exists() and path.stat().st_size > 0 else None


def encode_png_strip(frames: Sequence[np.ndarray]) -> bytes:
    """RGB frames (H, W, 3) side by side in one PNG (a frame strip for documents)."""
    if not frames:
        raise ValueError("need at least one frame")
    buf = io.BytesIO()
    Image.fromarray(np.concatenate([np.asarray(f, dtype=np.uint8) for f in frames], axis=1)).save(buf, "PNG")
    return buf.getvalue()


def strip_frames(num_frames: int, count: int) -> list[int]:
    """``count`` frame indices evenly spread over 0..num_frames-1 (first and last included)."""
    count = max(1, min(int(count), int(num_frames)))
    return sorted({int(round(x)) for x in np.linspace(0, num_frames - 1, count)})


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
    if stride < 1 or fps <= 0:
        raise ValueError("stride must be >= 1 and fps > 0")
    motions = [joints] if not isinstance(joints, (list, tuple)) else list(joints)
    num_frames = max((len(m) for m in motions), default=0)
    frames = render_skeleton_frames(joints, titles, chains, width=width, height=height,
                                    frames=range(0, max(num_frames, 1), stride), azimuth_deg=azimuth_deg,
                                    elevation_deg=elevation_deg)
    return encode_gif(frames, fps / stride)
