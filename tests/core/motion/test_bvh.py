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


# ------------------------------------------------------------------------------------------------ export
def _generated_like(index: int = 3, content: str = "jump") -> np.ndarray:
    """A motion as a generator outputs it: synthetic clip -> 263-d features -> recover_from_ric (T, 22, 3)."""
    from easytune.core.motion.features import joints_to_features, recover_from_ric
    from easytune.core.motion.synthetic import SyntheticConfig, generate_clip

    clip = generate_clip(index, content, "normal", SyntheticConfig(min_frames=40, max_frames=60))
    return recover_from_ric(joints_to_features(clip.joints, HUMANML3D, retarget=False), 22).astype(np.float64)


def _rest_pose(offsets: np.ndarray) -> np.ndarray:
    """(22, 3) joint positions of bone vectors (22, 3) along the tree, root at the origin."""
    pose = np.zeros((22, 3))
    for j, p in enumerate(HUMANML3D.parents):
        pose[j] = 0.0 if p < 0 else pose[p] + offsets[j]
    return pose


def _fk_hml(motion) -> np.ndarray:
    """Reader FK of an exported file, in HumanML3D joint order and the file's units."""
    return motion.global_positions()[:, [motion.joint_names.index(n) for n in HUMANML3D.joint_names]]


@pytest.mark.parametrize("unit", ["cm", "m"])
@pytest.mark.parametrize("offsets", ["fitted", "template"])
def test_export_round_trips_through_the_ingest_reader(tmp_path, unit, offsets):
    from easytune.core.motion.bvh import BVH_UNITS, HML22_IDENTITY, joints_to_bvh, write_bvh
    from easytune.core.motion.features import canonicalise

    joints = _generated_like()
    path = tmp_path / f"clip_{unit}.bvh"
    write_bvh(path, joints_to_bvh(joints, unit=unit, offsets=offsets))
    motion = read_bvh(path)
    assert motion.frame_time == pytest.approx(0.05) and motion.num_frames == len(joints)
    scale = 1.0 / BVH_UNITS[unit]
    back = bvh_to_hml22(motion, HML22_IDENTITY, target_fps=20.0, scale=scale, canonical=False)
    assert np.linalg.norm(back - joints, axis=-1).max() < 1e-4  # metres: float32 output, 6-decimal text
    ingested = bvh_to_hml22(motion, HML22_IDENTITY, target_fps=20.0, scale=scale)  # what `bvh_ingest` writes
    assert np.linalg.norm(ingested - canonicalise(joints), axis=-1).mean() < 1e-4


@pytest.mark.parametrize("order", ["XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX"])
def test_every_euler_order_reproduces_the_motion(order):
    from easytune.core.motion.bvh import format_bvh, joints_to_bvh

    joints = _generated_like(5, "kick-left")
    motion = parse_bvh(format_bvh(joints_to_bvh(joints, euler_order=order, unit="m")))
    assert motion.channels[0] == ("Xposition", "Yposition", "Zposition", *(f"{a}rotation" for a in order))
    assert all(c == tuple(f"{a}rotation" for a in order) for c in motion.channels[1:])
    np.testing.assert_allclose(_fk_hml(motion), joints, atol=1e-5)


def test_independent_reader_sees_the_same_joints_frames_and_values():
    bvh = pytest.importorskip("bvh")  # the `bvh` package from PyPI (pinned in requirements.txt)
    from easytune.core.motion.bvh import format_bvh, joints_to_bvh

    joints = _generated_like()
    ours = joints_to_bvh(joints)
    text = format_bvh(ours)
    theirs = bvh.Bvh(text)
    assert theirs.get_joints_names() == list(ours.joint_names) and len(ours.joint_names) == 22
    assert sorted(theirs.get_joints_names()) == sorted(HUMANML3D.joint_names)
    assert theirs.nframes == len(joints) and theirs.frame_time == pytest.approx(0.05)
    assert theirs.joint_offset("L_Hip") == pytest.approx((10.31, 0.0, 0.0), abs=1e-6)  # template: 0.1031 m on +X
    assert theirs.joint_channels("Pelvis")[:3] == ["Xposition", "Yposition", "Zposition"]
    frame = 7
    pelvis = theirs.frame_joint_channels(frame, "Pelvis", ["Xposition", "Yposition", "Zposition"])
    np.testing.assert_allclose(pelvis, joints[frame, 0] * 100, atol=1e-5)
    elbow = theirs.frame_joint_channels(frame, "R_Elbow", ["Zrotation", "Xrotation", "Yrotation"])
    column = sum(len(c) for c in ours.channels[: ours.joint_names.index("R_Elbow")])
    np.testing.assert_allclose(elbow, ours.motion[frame, column:column + 3], atol=1e-6)


def test_rest_pose_golden_channels():
    """The template T-pose turned 90 degrees about Y: the root's Yrotation is 90, every other angle 0."""
    from easytune.core.motion.bvh import joints_to_bvh

    rest = _rest_pose(HUMANML3D.template_offsets()) + np.array([0.5, 0.9, -1.0])
    turn = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # Ry(90): +Z -> +X
    pelvis = rest[0]
    joints = np.stack([rest, (rest - pelvis) @ turn.T + pelvis])  # (2, 22, 3)
    motion = joints_to_bvh(joints, unit="m", offsets="template")
    np.testing.assert_allclose(motion.motion[0], [0.5, 0.9, -1.0] + [0.0] * 66, atol=1e-9)
    np.testing.assert_allclose(motion.motion[1, :6], [0.5, 0.9, -1.0, 0.0, 0.0, 90.0], atol=1e-9)  # Z X Y
    np.testing.assert_allclose(motion.motion[1, 6:], 0.0, atol=1e-9)
    np.testing.assert_allclose(motion.offsets[motion.joint_names.index("L_Knee")], [0.0, -0.3936, 0.0])


def test_continuous_angles_for_a_spinning_motion():
    from easytune.core.motion.bvh import joints_to_bvh

    rest = _rest_pose(HUMANML3D.template_offsets()) + np.array([0.0, 0.9, 0.0])
    yaw = np.deg2rad(np.linspace(0.0, 720.0, 49))  # two full turns, 15 degrees per frame
    rot = np.stack([np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]) for a in yaw])
    joints = np.einsum("tij,kj->tki", rot, rest - rest[0]) + rest[0]
    motion = joints_to_bvh(joints, unit="m")
    root_yaw = motion.motion[:, 5]  # Yrotation of ZXY
    assert np.abs(np.diff(root_yaw)).max() < 16.0  # no 360-degree jumps
    assert root_yaw[-1] - root_yaw[0] == pytest.approx(720.0, abs=1e-6)
    np.testing.assert_allclose(_fk_hml(motion), joints, atol=1e-9)


def test_fitted_offsets_follow_the_motion_skeleton_template_offsets_do_not():
    """A rigid motion on a different skeleton (bones 10 % longer, hips lower than the template's): ``fitted``
    reproduces it exactly, ``template`` misses it by about the length difference."""
    from easytune.core.motion.bvh import fitted_offsets, joints_to_bvh
    from easytune.core.motion.features import forward_kinematics, inverse_kinematics

    source = _generated_like(8, "walk-forward")
    bones = HUMANML3D.template_offsets() * 1.1
    bones[1] += [0.0, -0.06, 0.0]  # hips below the pelvis, as in real mocap
    bones[2] += [0.0, -0.06, 0.0]
    root = np.tile([1.0, 0.0, 0.0, 0.0], (len(source), 1))
    quats = inverse_kinematics(source, HUMANML3D, root)
    joints = forward_kinematics(quats, source[:, 0], bones, HUMANML3D)  # (T, 22, 3) rigid, other skeleton
    fitted_bones = fitted_offsets(joints)
    np.testing.assert_allclose(np.linalg.norm(fitted_bones, axis=-1), np.linalg.norm(bones, axis=-1), atol=1e-6)
    for group in ([1, 2, 3], [12, 13, 14]):  # the girdles: same shape, turned to the template's pose
        shape = fitted_bones[group][:, None] - fitted_bones[group][None]
        np.testing.assert_allclose(np.linalg.norm(shape, axis=-1),
                                   np.linalg.norm(bones[group][:, None] - bones[group][None], axis=-1), atol=1e-6)
    single = [j for j in range(1, 22) if j not in (1, 2, 3, 12, 13, 14)]
    np.testing.assert_allclose(fitted_bones[single], bones[single], atol=1e-6)
    fitted = _fk_hml(joints_to_bvh(joints, unit="m", offsets="fitted"))
    template = _fk_hml(joints_to_bvh(joints, unit="m", offsets="template"))
    assert np.linalg.norm(fitted - joints, axis=-1).max() < 1e-6
    assert np.linalg.norm(template - joints, axis=-1).mean() > 0.02


def test_writer_and_reader_agree_on_a_parsed_file():
    from easytune.core.motion.bvh import format_bvh

    motion = parse_bvh(_two_joints("Zrotation Xrotation Yrotation", "10 20 30"), source="tiny.bvh")
    assert motion.end_sites == ((1, (0.0, 0.0, 2.0)),)
    again = parse_bvh(format_bvh(motion), source="tiny.bvh")
    assert again.joint_names == motion.joint_names and again.channels == motion.channels
    assert again.end_sites == motion.end_sites and again.frame_time == motion.frame_time
    np.testing.assert_allclose(again.motion, motion.motion)
    np.testing.assert_allclose(again.offsets, motion.offsets)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"unit": "mm"}, "unit must be one of"),
    ({"euler_order": "XXY"}, "euler_order must be one of"),
    ({"offsets": "mean"}, "offsets must be one of"),
    ({"fps": 0.0}, "fps must be positive"),
])
def test_export_refuses_bad_options(kwargs, message):
    from easytune.core.motion.bvh import joints_to_bvh

    with pytest.raises(ValueError, match=message):
        joints_to_bvh(_generated_like()[:3], **kwargs)


def test_export_refuses_bad_joints():
    from easytune.core.motion.bvh import joints_to_bvh

    with pytest.raises(ValueError, match=r"shape \(T>=1, 22, 3\)"):
        joints_to_bvh(np.zeros((4, 21, 3)))
    bad = _generated_like()[:3].copy()
    bad[1, 4, 2] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        joints_to_bvh(bad)
