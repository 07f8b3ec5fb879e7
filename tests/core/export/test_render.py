"""Skeleton GIF rendering: valid small GIFs, one frame per (strided) motion frame, side by side, bad input refused."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from easytune.core.export.render import project, render_skeleton_gif
from easytune.core.motion.skeleton import HUMANML3D


def walking(t: int, shift: float = 0.0) -> np.ndarray:
    base = HUMANML3D.template_offsets()  # (22, 3) bone vectors
    rest = np.zeros((22, 3))
    for j, p in enumerate(HUMANML3D.parents):
        rest[j] = base[j] if p < 0 else rest[p] + base[j]
    rest[:, 1] += 1.0
    steps = np.linspace(0, 1, t)[:, None, None] * np.array([0.0, 0.0, 1.0]) + shift
    return (rest[None] + steps).astype(np.float32)  # (T, 22, 3)


def test_single_motion_gif():
    data = render_skeleton_gif(walking(12), fps=20)
    assert data[:6] == b"GIF89a"
    img = Image.open(io.BytesIO(data))
    assert img.n_frames == 12 and img.size[0] <= 320 and img.size[1] <= 320
    assert img.info["duration"] == 50
    # frames differ (the body moves)
    img.seek(0)
    first = np.asarray(img.convert("RGB"))
    img.seek(11)
    assert np.abs(first.astype(int) - np.asarray(img.convert("RGB")).astype(int)).sum() > 0


def test_side_by_side_with_titles_and_stride_accepts_tensors():
    data = render_skeleton_gif([walking(10), torch.from_numpy(walking(6, 0.3))], titles=["a", "b"], stride=2)
    assert Image.open(io.BytesIO(data)).n_frames == 5


def test_projection_front_view_is_identity_on_xy():
    pts = np.array([[0.3, 1.2, -4.0]])
    np.testing.assert_allclose(project(pts, 0.0, 0.0), [[0.3, 1.2]])


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="shape"):
        render_skeleton_gif(np.zeros((5, 22)))
    with pytest.raises(ValueError, match="titles"):
        render_skeleton_gif([walking(3)], titles=["a", "b"])
    bad = walking(3)
    bad[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        render_skeleton_gif(bad)
    with pytest.raises(ValueError, match="chains"):
        render_skeleton_gif(np.zeros((3, 5, 3)))


def test_side_by_side_panels_get_their_own_width():
    import io

    import numpy as np
    from PIL import Image

    from easytune.core.export.render import render_skeleton_gif
    from easytune.core.motion.skeleton import HUMANML3D

    pose = HUMANML3D.template_offsets().cumsum(0)[None].repeat(3, 0)  # (3, 22, 3) arbitrary joint positions
    gif = render_skeleton_gif([pose] * 4, titles=list("abcd"), width=4 * 160, height=200)
    assert Image.open(io.BytesIO(gif)).size == (640, 200)
    import pytest

    with pytest.raises(ValueError, match="per panel"):
        render_skeleton_gif([pose], width=400)
    assert np.isfinite(pose).all()


def _no_system_ffmpeg(monkeypatch, tmp_path):
    """PATH without any ffmpeg and no IMAGEIO_FFMPEG_EXE: only the binary inside imageio-ffmpeg's wheel is left."""
    import shutil

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("IMAGEIO_FFMPEG_EXE", raising=False)
    assert shutil.which("ffmpeg") is None


def test_mp4_without_a_system_ffmpeg(monkeypatch, tmp_path):
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    from pathlib import Path

    from easytune.core.export.render import encode_mp4, ffmpeg_executable, render_skeleton_frames

    _no_system_ffmpeg(monkeypatch, tmp_path)
    assert Path(ffmpeg_executable()).resolve().is_relative_to(Path(imageio_ffmpeg.__file__).parent.resolve())
    frames = render_skeleton_frames(walking(12), titles=["walk"], width=160, height=120)
    assert len(frames) == 12 and frames[0].shape == (120, 160, 3) and frames[0].dtype == np.uint8
    video = encode_mp4(frames, fps=20.0)
    assert video is not None and video[4:8] == b"ftyp"
    path = tmp_path / "walk.mp4"
    path.write_bytes(video)
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    decoded = [np.frombuffer(f, np.uint8).reshape(120, 160, 3) for f in reader]
    assert meta["codec"] == "h264" and meta["size"] == (160, 120) and meta["fps"] == pytest.approx(20.0)
    assert len(decoded) == 12
    # lossy, but the picture is the rendered one: mostly white, the same skeleton pixels within a small error
    assert np.abs(decoded[5].astype(int) - frames[5].astype(int)).mean() < 8.0


def test_mp4_pads_odd_sizes_and_falls_back_to_none_without_ffmpeg(monkeypatch, tmp_path):
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    from easytune.core.export import render

    frames = [np.full((35, 41, 3), 255, np.uint8) for _ in range(3)]
    video = render.encode_mp4(frames, fps=10.0)
    assert video is not None and video[4:8] == b"ftyp"
    (tmp_path / "odd.mp4").write_bytes(video)
    assert next(imageio_ffmpeg.read_frames(str(tmp_path / "odd.mp4")))["size"] == (42, 36)  # padded, not scaled

    def missing():
        raise RuntimeError("no ffmpeg binary for this platform")

    monkeypatch.setattr(render, "ffmpeg_executable", missing)
    assert render.encode_mp4(frames, fps=10.0) is None


def test_frame_strip_and_selected_frames():
    from easytune.core.export.render import encode_png_strip, render_skeleton_frames, strip_frames

    assert strip_frames(10, 4) == [0, 3, 6, 9] and strip_frames(3, 6) == [0, 1, 2] and strip_frames(5, 1) == [0]
    frames = render_skeleton_frames(walking(10), width=64, height=48, frames=[0, 9])
    every = render_skeleton_frames(walking(10), width=64, height=48)
    assert len(frames) == 2 and np.array_equal(frames[1], every[9])  # same camera whatever frames are drawn
    strip = Image.open(io.BytesIO(encode_png_strip(frames)))
    assert strip.format == "PNG" and strip.size == (128, 48)
    with pytest.raises(ValueError, match="frames must be"):
        render_skeleton_frames(walking(10), frames=[10])
