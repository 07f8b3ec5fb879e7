"""HumanML3D features: round trips on the released sample files and on Bandai mocap, golden constructed poses."""

from pathlib import Path

import numpy as np
import pytest
import torch

from easytune.core.motion.features import (
    canonicalise,
    feature_group_std,
    fidelity_report,
    forward_kinematics,
    joints_to_features,
    recover_from_ric,
    retarget_to_template,
)
from easytune.core.motion.quaternion import qrot, yaw_quat
from easytune.core.motion.skeleton import HUMANML3D

SK = HUMANML3D
SL = SK.feature_slices()
GROUPS = {
    "root": np.r_[0:4],
    "ric": np.r_[SL["ric"]],
    "rot": np.r_[SL["rot"]],
    "vel": np.r_[SL["vel"]],
}


def _load_samples(root: Path) -> tuple[dict, dict]:
    ids = sorted(p.stem for p in (root / "new_joints").glob("*.npy"))
    assert ids, f"no sample clips under {root}"
    feats = {i: np.load(root / "new_joint_vecs" / f"{i}.npy", allow_pickle=False) for i in ids}
    joints = {i: np.load(root / "new_joints" / f"{i}.npy", allow_pickle=False) for i in ids}
    return feats, joints


def _rest_pose() -> np.ndarray:
    """(J, 3) template skeleton with identity local rotations: standing, facing +Z, left on +X, arms down."""
    quats = np.zeros((1, SK.num_joints, 4))
    quats[..., 0] = 1.0
    return forward_kinematics(quats, np.zeros((1, 3)), SK.template_offsets(), SK)[0]


# ------------------------------------------------------------------------------------------------------------------
# released HumanML3D sample files
# ------------------------------------------------------------------------------------------------------------------
def test_recover_reproduces_released_joints(humanml3d_samples):
    feats, joints = _load_samples(humanml3d_samples)
    errors = {i: float(np.abs(recover_from_ric(feats[i], 22) - joints[i]).max()) for i in feats}
    print("recover max abs err per clip:", errors)
    assert max(errors.values()) <= 1e-4
    out = recover_from_ric(feats["012314"], 22)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == joints["012314"].shape


def test_features_reproduce_released_features(humanml3d_samples):
    feats, joints = _load_samples(humanml3d_samples)
    for clip_id in feats:
        ours = joints_to_features(joints[clip_id], SK, retarget=False)
        assert ours.shape == (len(joints[clip_id]) - 1, 263) and ours.dtype == np.float32
        ref = feats[clip_id][: len(ours)]
        for name, cols in GROUPS.items():
            mae = float(np.abs(ours[:, cols] - ref[:, cols]).mean())
            assert mae <= 0.03, (clip_id, name, mae)
        agreement = float((ours[:, SL["contacts"]] == ref[:, SL["contacts"]]).mean())
        assert agreement >= 0.98, (clip_id, agreement)
        # Frame 0 is not touched by the missing final source frame: it must match (identity root rotation).
        np.testing.assert_allclose(ours[0, :259], ref[0, :259], atol=1e-5, err_msg=clip_id)


def test_fidelity_report_on_samples(humanml3d_samples):
    feats, joints = _load_samples(humanml3d_samples)
    report = fidelity_report(feats, joints, SK)
    print("fidelity_report:", report)
    assert report["clips"] == len(feats) and report["unmatched"] == 0
    assert report["recover_max_abs_err"] <= 1e-4
    assert set(report["feature_mae"]) == {"root", "ric", "rot", "vel"}
    assert max(report["feature_mae_worst_clip"].values()) <= 0.03
    assert report["contact_agreement"] >= 0.98
    # a corrupted clip must show up in the report
    bad = dict(feats)
    bad["012314"] = feats["012314"].copy()
    bad["012314"][:, SL["ric"]] += 0.5
    worse = fidelity_report(bad, joints, SK)
    assert worse["recover_max_abs_err"] > 0.4 and worse["feature_mae_worst_clip"]["ric"] > 0.4


def test_early_format_float64_file(humanml3d_samples):
    folder = humanml3d_samples / "early_format_000000"
    feats = np.load(folder / "new_joint_vecs_000000.npy", allow_pickle=False)
    joints = np.load(folder / "new_joints_000000.npy", allow_pickle=False)
    assert feats.dtype == np.float64 and feats.shape == (len(joints), 263)
    recovered = recover_from_ric(feats, 22)
    assert recovered.dtype == np.float64
    assert np.abs(recovered - joints).max() <= 1e-4
    report = fidelity_report({"000000": feats}, {"000000": joints}, SK)
    assert max(report["feature_mae"].values()) <= 0.03 and report["contact_agreement"] >= 0.98


# ------------------------------------------------------------------------------------------------------------------
# recover_from_ric in torch
# ------------------------------------------------------------------------------------------------------------------
def test_torch_recover_is_differentiable():
    gen = torch.Generator().manual_seed(0)
    feats = (0.3 * torch.randn(2, 5, 4 + 3 * 3, dtype=torch.float64, generator=gen)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: recover_from_ric(x, 4), (feats,))


def test_torch_recover_batched_equals_per_clip_and_numpy(humanml3d_samples):
    feats, joints = _load_samples(humanml3d_samples)
    clips = [feats[i][:64] for i in sorted(feats) if len(feats[i]) >= 64][:4]
    batch = torch.from_numpy(np.stack(clips).reshape(2, 2, 64, 263))  # (2, 2, T, D)
    batch.requires_grad_(True)
    out = recover_from_ric(batch, 22)  # (2, 2, T, J, 3)
    assert out.shape == (2, 2, 64, 22, 3)
    flat = out.detach().reshape(4, 64, 22, 3)
    for k, clip in enumerate(clips):
        torch.testing.assert_close(flat[k], recover_from_ric(torch.from_numpy(clip), 22), rtol=0, atol=1e-6)
        np.testing.assert_allclose(flat[k].numpy(), recover_from_ric(clip, 22), atol=1e-6)
    out.square().sum().backward()
    assert batch.grad is not None and torch.isfinite(batch.grad).all()
    assert batch.grad[..., SL["rot"]].abs().max() == 0  # rotations do not enter recover_from_ric
    assert batch.grad[..., SL["ric"]].abs().max() > 0


def test_recover_rejects_short_feature_dim():
    with pytest.raises(ValueError, match="features must have shape"):
        recover_from_ric(np.zeros((5, 10), dtype=np.float32), 22)


# ------------------------------------------------------------------------------------------------------------------
# Bandai Namco mocap: features -> recover reproduces the retargeted, canonicalised input
# ------------------------------------------------------------------------------------------------------------------
def _yaw_aligned_error(recovered: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Max abs error after the single best yaw (least squares about Y through the origin), and that yaw."""
    a, b = reference.reshape(-1, 3), recovered.reshape(-1, 3)
    angle = np.arctan2((b[:, 2] * a[:, 0] - b[:, 0] * a[:, 2]).sum(), (b[:, 0] * a[:, 0] + b[:, 2] * a[:, 2]).sum())
    aligned = qrot(np.broadcast_to(yaw_quat(np.array(angle)), b.shape[:-1] + (4,)), b)
    return float(np.abs(aligned - a).max()), float(angle)


def test_bandai_round_trip(bandai_root):
    files = sorted((bandai_root / "joints").glob("*.npy"))
    assert files
    chosen = [f for f in files if "walk-turn" in f.name][:2] + [f for f in files if "run_" in f.name][:1]
    chosen += files[:: max(1, len(files) // 2)][:2]
    errors = {}
    for path in chosen:
        raw = np.load(path, allow_pickle=False)
        feats = joints_to_features(raw, SK, retarget=True)  # (T-1, 263)
        assert feats.shape == (len(raw) - 1, 263) and np.isfinite(feats).all()
        reference = canonicalise(retarget_to_template(raw, SK), SK)[:-1]  # frames the features cover
        recovered = recover_from_ric(feats.astype(np.float64), 22)
        errors[path.stem] = _yaw_aligned_error(recovered, reference)
    print("bandai round trip (max abs err m, fitted yaw rad):", errors)
    assert len(errors) == 5
    assert max(e for e, _ in errors.values()) <= 1e-4


def test_retarget_sets_template_lengths_and_keeps_directions(bandai_root):
    raw = np.load(sorted((bandai_root / "joints").glob("*.npy"))[0], allow_pickle=False).astype(np.float64)
    out = retarget_to_template(raw, SK)
    parents = np.array(SK.parents)
    bones_out = out[:, 1:] - out[:, parents[1:]]
    bones_in = raw[:, 1:] - raw[:, parents[1:]]
    np.testing.assert_allclose(np.linalg.norm(bones_out, axis=-1),
                               np.broadcast_to(SK.bone_lengths[1:], bones_out.shape[:2]), atol=1e-9)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    np.testing.assert_allclose(unit(bones_out), unit(bones_in), atol=1e-9)
    leg = lambda b: np.linalg.norm(b[5 - 1]) + np.linalg.norm(b[8 - 1])  # noqa: E731  right thigh + shin
    scale = leg(bones_out[0]) / leg(bones_in[0])
    np.testing.assert_allclose(out[:, 0], raw[:, 0] * scale, atol=1e-9)


# ------------------------------------------------------------------------------------------------------------------
# constructed inputs
# ------------------------------------------------------------------------------------------------------------------
def test_golden_standing_still():
    pose = _rest_pose()
    joints = np.repeat(pose[None], 6, axis=0) + np.array([0.7, 0.3, -1.2])  # (T, J, 3) off-origin
    feats = joints_to_features(joints, SK, retarget=False)
    assert feats.shape == (5, 263)
    np.testing.assert_allclose(feats[:, 0:3], 0.0, atol=1e-7)  # no root rotation or translation
    np.testing.assert_allclose(feats[:, SL["vel"]], 0.0, atol=1e-7)
    np.testing.assert_allclose(feats[:, SL["contacts"]], 1.0)
    np.testing.assert_allclose(feats[:, 3], 0.3936 + 0.4324, atol=1e-6)  # pelvis above the lowest (left) ankle
    ric = (pose[1:] - pose[0] * np.array([1, 0, 1])).reshape(-1) - np.array([0, pose[:, 1].min(), 0] * 21)
    np.testing.assert_allclose(feats[:, SL["ric"]], np.broadcast_to(ric, (5, 63)), atol=1e-6)
    np.testing.assert_allclose(feats[:, SL["rot"]], np.tile([1.0, 0, 0, 0, 1, 0], (5, 21)), atol=1e-6)
    rec = recover_from_ric(feats, 22)
    np.testing.assert_allclose(rec, canonicalise(joints, SK)[:-1], atol=1e-6)


def test_golden_walking_forward_and_invariance():
    pose = _rest_pose()
    t = np.arange(8)[:, None, None]
    walk = pose[None] + t * np.array([0.0, 0.0, 0.1])  # 0.1 m per frame along +Z, feet slide: no contact
    feats = joints_to_features(walk, SK, retarget=False)
    np.testing.assert_allclose(feats[:, 0], 0.0, atol=1e-7)
    np.testing.assert_allclose(feats[:, 1:3], np.tile([0.0, 0.1], (7, 1)), atol=1e-7)
    np.testing.assert_allclose(feats[:, SL["vel"]].reshape(7, 22, 3), np.tile([0.0, 0.0, 0.1], (7, 22, 1)), atol=1e-7)
    np.testing.assert_allclose(feats[:, SL["contacts"]], 0.0)  # 0.01 m^2 > 0.002
    # the same motion turned by any yaw, moved and lifted gives the same features
    q = yaw_quat(np.array(2.1))
    moved = qrot(np.broadcast_to(q, walk.shape[:-1] + (4,)), walk) + np.array([3.0, 0.5, -2.0])
    np.testing.assert_allclose(joints_to_features(moved, SK, retarget=False), feats, atol=1e-5)


def test_turning_motion_round_trip():
    pose = _rest_pose()
    angles = np.linspace(0.0, 1.5, 30)
    q = yaw_quat(angles)[:, None].repeat(22, 1)  # (T, J, 4)
    circle = np.stack([np.sin(angles), np.zeros_like(angles), np.cos(angles)], -1) * 2.0  # (T, 3)
    joints = qrot(q, np.broadcast_to(pose, (30, 22, 3))) + circle[:, None]
    feats = joints_to_features(joints, SK, retarget=False)
    assert np.abs(feats[:, 0]).max() > 0.01  # it does turn
    rec = recover_from_ric(feats, 22)
    np.testing.assert_allclose(rec, canonicalise(joints, SK)[:-1], atol=1e-5)


def test_invalid_inputs_raise():
    pose = _rest_pose()
    with pytest.raises(ValueError, match="shape"):
        joints_to_features(np.zeros((5, 21, 3)), SK)
    with pytest.raises(ValueError, match="at least 2 frames"):
        joints_to_features(pose[None], SK)
    bad = np.repeat(pose[None], 4, axis=0)
    bad[2, 3, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite.*frame 2"):
        joints_to_features(bad, SK)


def test_feature_group_std_golden():
    rng = np.random.default_rng(0)
    clips = [rng.normal(size=(n, 263)) * rng.uniform(0.5, 2.0, size=263) + 1.0 for n in (5, 9, 3)]
    mean, std = feature_group_std(clips, SK)
    stacked = np.concatenate(clips)
    assert mean.dtype == np.float32 and std.shape == (263,)
    np.testing.assert_allclose(mean, stacked.mean(0), rtol=1e-6)
    per_dim = stacked.std(0)
    for name, sl in SL.items():
        np.testing.assert_allclose(std[sl], per_dim[sl].mean(), rtol=1e-6, err_msg=name)
    mean2, std2 = feature_group_std(stacked, SK)
    np.testing.assert_array_equal(mean, mean2)
    np.testing.assert_array_equal(std, std2)
    # constant contacts -> floor instead of zero
    clips[0][:, SL["contacts"]] = clips[1][:, SL["contacts"]] = clips[2][:, SL["contacts"]] = 1.0
    assert feature_group_std(clips, SK)[1][SL["contacts"]].min() == pytest.approx(1e-6)
    with pytest.raises(ValueError, match="clip 1"):
        feature_group_std([clips[0], np.full((3, 263), np.nan)], SK)


def test_released_std_is_group_averaged_without_divisors(humanml3d_samples):
    std = np.load(humanml3d_samples / "Std.npy", allow_pickle=False)
    for name, sl in SL.items():
        assert np.ptp(std[sl]) <= 1e-6 * max(1.0, std[sl].max()), name
