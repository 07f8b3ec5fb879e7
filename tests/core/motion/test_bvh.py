"""BVH ingest: golden forward kinematics on constructed files, clear errors, Bandai raw samples vs converted joints."""

import numpy as np
import pytest

from easytune.core.motion.bvh import (
    BANDAI_TO_HML22,
    BvhError,
    bvh_to_hml22,
    parse_bvh,
    read_bvh,
    resample_linear,
)
from easytune.core.motion.skeleton import HUMANML3D

TWO_JOINTS = """HIERARCHY
ROOT root
{{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition {order}
  JOINT child
  {{
    OFFSET 0 0 1
    CHANNELS 3 Zrotation Xrotation Yrotation
    End Site
    {{
      OFFSET 0 0 2
    }}
  }}
}}
MOTION
Frames: 2
Frame Time: 0.5
1 2 3 {angles} 0 0 0
0 0 0 0 0 0 0 0 0
"""


def _two_joints(order: str, angles: str) -> str:
    return TWO_JOINTS.format(order=order, angles=angles)


def test_parse_and_golden_forward_kinematics():
    motion = parse_bvh(_two_joints("Xrotation Yrotation Zrotation", "90 90 0"), source="tiny.bvh")
    assert motion.joint_names == ("root", "child") and motion.parents == (-1, 0)
    assert motion.channels[0][:3] == ("Xposition", "Yposition", "Zposition")
    assert motion.motion.shape == (2, 9) and motion.num_frames == 2 and motion.fps == pytest.approx(2.0)
    pos = motion.global_positions()  # (2, 2, 3)
    # R = Rx(90) Ry(90): Ry maps +Z to +X, Rx keeps +X -> child at root + (1, 0, 0)
    np.testing.assert_allclose(pos[0], [[1, 2, 3], [2, 2, 3]], atol=1e-12)
    np.testing.assert_allclose(pos[1], [[0, 0, 0], [0, 0, 1]], atol=1e-12)


def test_euler_order_follows_channel_list():
    motion = parse_bvh(_two_joints("Yrotation Xrotation Zrotation", "90 90 0"))
    # R = Ry(90) Rx(90): Rx maps +Z to -Y, Ry keeps -Y -> child at root + (0, -1, 0)
    np.testing.assert_allclose(motion.global_positions()[0, 1], [1, 1, 3], atol=1e-12)
    z_only = parse_bvh(_two_joints("Zrotation Xrotation Yrotation", "0 90 0"))  # Rx(90) on (0,0,1) -> (0,-1,0)
    np.testing.assert_allclose(z_only.global_positions()[0, 1], [1, 1, 3], atol=1e-12)


def test_position_channels_replace_offset():
    text = _two_joints("Xrotation Yrotation Zrotation", "0 0 0").replace("OFFSET 0 0 0\n  CHANNELS 6",
                                                                        "OFFSET 5 5 5\n  CHANNELS 6")
    np.testing.assert_allclose(parse_bvh(text).global_positions()[0, 0], [1, 2, 3])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("MOTION", "MOTON"), "no MOTION section"),
        (lambda t: t.replace("OFFSET 0 0 1", "OFFSET 0 zero 1"), "line 8: expected a number"),
        (lambda t: t.replace("Zrotation Xrotation Yrotation", "Zrotation Xrotation Wrotation"), "unknown channel"),
        (lambda t: t.replace("0 0 0 0 0 0 0 0 0\n", "0 0 0 0 0 0 0 0\n"), "expected Frames \\(2\\) x channels"),
        (lambda t: t.replace("Frame Time: 0.5", "Frame Time: 0"), "invalid frame time"),
        (lambda t: t.replace("1 2 3", "1 nan 3"), "non-finite"),
        (lambda t: t.replace("HIERARCHY\nROOT root\n{", "HIERARCHY\nROOT root\n"), "expected '{'"),
    ],
)
def test_malformed_files_raise_clear_errors(tmp_path, edit, message):
    path = tmp_path / "broken.bvh"
    path.write_text(edit(_two_joints("Xrotation Yrotation Zrotation", "0 0 0")))
    with pytest.raises(BvhError, match=message) as info:
        read_bvh(path)
    assert str(path) in str(info.value)


def test_resample_linear_golden():
    ramp = np.arange(7, dtype=float)[:, None] * np.array([1.0, 2.0])  # 7 frames at 30 fps = 0.2 s
    out = resample_linear(ramp, 30.0, 20.0)
    assert out.shape == (5, 2)  # t = 0, .05, .1, .15, .2
    np.testing.assert_allclose(out[:, 0], [0, 1.5, 3, 4.5, 6])
    np.testing.assert_allclose(resample_linear(ramp, 20.0, 20.0), ramp)


def test_mapping_must_cover_the_file(tmp_path):
    motion = parse_bvh(_two_joints("Xrotation Yrotation Zrotation", "0 0 0"), source="tiny.bvh")
    with pytest.raises(BvhError, match="tiny.bvh: joints .* not in the file"):
        bvh_to_hml22(motion, BANDAI_TO_HML22)
    with pytest.raises(ValueError, match="mapping lacks"):
        bvh_to_hml22(motion, {"Pelvis": ("root",)})


def test_bandai_raw_samples_match_converted_joints(bandai_root):
    paths = sorted((bandai_root / "raw_samples").glob("*.bvh"))
    assert len(paths) == 2
    errors = {}
    for path in paths:
        motion = read_bvh(path)
        assert len(motion.joint_names) == 22 and motion.joint_names[0] == "joint_Root"  # 21 joints + the root
        assert set(BANDAI_TO_HML22) == set(HUMANML3D.joint_names)
        ours = bvh_to_hml22(motion, BANDAI_TO_HML22, target_fps=20.0, scale=0.01)
        reference = np.load(bandai_root / "joints" / f"{path.stem}.npy", allow_pickle=False)
        assert ours.dtype == np.float32 and ours.shape == reference.shape
        error = np.linalg.norm(ours - reference, axis=-1)  # (T, 22) metres
        errors[path.stem] = (float(error.mean()), float(error.max()))
        assert ours[..., 1].min() == pytest.approx(0.0, abs=1e-6)
        np.testing.assert_allclose(ours[0, 0, [0, 2]], 0.0, atol=1e-6)
        assert ours[0, 1, 0] > ours[0, 2, 0]  # left hip on +X
    print("bvh vs joints (mean, max joint error in m):", errors)
    assert max(mean for mean, _ in errors.values()) <= 0.01  # acceptance: <= 1 cm mean joint error
