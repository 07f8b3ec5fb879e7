"""Skeleton GIF rendering: valid small GIFs, one frame per (strided) motion frame, side by side, bad input refused."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from easytune.core.motion.skeleton import HUMANML3D
from easytune.core.render import project, render_skeleton_gif


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

    from easytune.core.motion.skeleton import HUMANML3D
    from easytune.core.render import render_skeleton_gif

    pose = HUMANML3D.template_offsets().cumsum(0)[None].repeat(3, 0)  # (3, 22, 3) arbitrary joint positions
    gif = render_skeleton_gif([pose] * 4, titles=list("abcd"), width=4 * 160, height=200)
    assert Image.open(io.BytesIO(gif)).size == (640, 200)
    import pytest

    with pytest.raises(ValueError, match="per panel"):
        render_skeleton_gif([pose], width=400)
    assert np.isfinite(pose).all()
