"""HumanML3D motion features: joint positions <-> the 263-d (22 joints) / 251-d (21 joints) vector.

Follows the published HumanML3D ``motion_process`` / ``recover_from_ric`` (facts restated in docs HUMANML3D.md
section 2). Layout per frame (J joints): root angular velocity about Y (1), root XZ velocity in the facing frame (2),
root height (1), ric positions of joints 1..J-1 (3(J-1)), local 6D rotations of joints 1..J-1 (6(J-1)), velocities
of all joints in the facing frame (3J), foot contacts left ankle/toe, right ankle/toe (4). Features have one frame
fewer than the positions they come from.

The facing used for the local rotations, velocities and ric is the published one, quirk included: the IK's
"across" vector is (l_hip - r_hip) + (r_shoulder - l_shoulder) (the published IK unpacks the face joints in a
different order than the canonicalisation step does), Gaussian-smoothed over time (sigma 20 frames, 'nearest'
edges), with frame 0's root rotation set to the identity as the released features have it. Recomputing the
released sample features from the released ``new_joints`` then agrees to about 1e-4 mean abs error per group (the
residue sits in the last ~80 frames: the released joints lack the source's final frame, which the smoothing saw);
the "proper" across vector gives about 1e-2 (ric, rot).

Everything here is numpy in float64 except ``recover_from_ric``, which is torch (differentiable, batched) and also
accepts numpy (numpy in -> numpy out).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d

from .quaternion import qbetween, qinv, qmul, qrot, quat_to_cont6d
from .skeleton import HUMANML3D, SkeletonSpec

Array = np.ndarray | torch.Tensor

FACING_SMOOTH_SIGMA = 20.0  # frames, published ``smooth_forward`` Gaussian
_UP = np.array([0.0, 1.0, 0.0])
_FORWARD = np.array([0.0, 0.0, 1.0])


# ----------------------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------------------
def _validate_joints(joints: np.ndarray, skeleton: SkeletonSpec, min_frames: int = 1) -> np.ndarray:
    """Joint positions as float64 (T, J, 3); ValueError naming the problem otherwise."""
    joints = np.asarray(joints)
    j = skeleton.num_joints
    if joints.ndim != 3 or joints.shape[1:] != (j, 3):
        raise ValueError(
            f"joints must have shape (T, {j}, 3) for skeleton {skeleton.name!r}; got {tuple(joints.shape)}"
        )
    if joints.shape[0] < min_frames:
        raise ValueError(f"joints need at least {min_frames} frames; got T={joints.shape[0]}")
    if not np.issubdtype(joints.dtype, np.floating):
        raise ValueError(f"joints must be a float array; got dtype {joints.dtype}")
    if not np.isfinite(joints).all():
        bad = np.unique(np.nonzero(~np.isfinite(joints))[0])
        raise ValueError(f"joints contain non-finite values in {len(bad)} frame(s), first at frame {bad[0]}")
    return joints.astype(np.float64)


def _normalise(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


# ----------------------------------------------------------------------------------------------------------------
# kinematics
# ----------------------------------------------------------------------------------------------------------------
def bone_lengths(joints: np.ndarray, skeleton: SkeletonSpec) -> np.ndarray:
    """(..., J) distance of every joint to its parent (root 0) of positions (..., J, 3)."""
    parents = np.asarray(skeleton.parents)
    lengths = np.linalg.norm(joints[..., 1:, :] - joints[..., parents[1:], :], axis=-1)  # (..., J-1)
    return np.concatenate([np.zeros_like(lengths[..., :1]), lengths], axis=-1)


def facing_quaternions(joints: np.ndarray, skeleton: SkeletonSpec, smooth_sigma: float | None) -> np.ndarray:
    """(T, 4) yaw quaternions rotating each frame's facing direction onto +Z (the published IK root rotation).

    across = (j[l_hip] - j[r_hip]) + (j[r_sho] - j[l_sho]) with face joints (r_hip, l_hip, r_sho, l_sho): the
    published ``inverse_kinematics_np`` unpacks the face joints as (l_hip, r_hip, sdr_r, sdr_l), so its hip term
    has the opposite sign of the canonicalisation's. Kept because the released features were made with it.
    forward = normalise(gaussian(cross(up, normalise(across)), sigma)).
    """
    r_hip, l_hip, r_sho, l_sho = skeleton.face_joints
    across = (joints[:, l_hip] - joints[:, r_hip]) + (joints[:, r_sho] - joints[:, l_sho])  # (T, 3)
    forward = np.cross(_UP, _normalise(across))  # (T, 3)
    if smooth_sigma:
        forward = gaussian_filter1d(forward, smooth_sigma, axis=0, mode="nearest")
    forward = _normalise(forward)
    return qbetween(forward, np.broadcast_to(_FORWARD, forward.shape))  # (T, 4)


def inverse_kinematics(joints: np.ndarray, skeleton: SkeletonSpec, root_quat: np.ndarray) -> np.ndarray:
    """Local joint quaternions (T, J, 4) of positions (T, J, 3) on the skeleton's raw offset directions.

    Root entry = ``root_quat`` (T, 4). Along each kinematic chain R starts at the root rotation (for every chain,
    including the arm chains that start at the spine: published convention); the bone to joint c[k+1] has global
    rotation qbetween(raw_offset, bone direction) and local rotation inv(R) * global; R <- R * local.
    """
    raw = skeleton.raw_offsets_array()  # (J, 3)
    t = joints.shape[0]
    quats = np.zeros((t, skeleton.num_joints, 4))  # (T, J, 4)
    quats[..., 0] = 1.0
    quats[:, 0] = root_quat
    for chain in skeleton.kinematic_chains:
        r = root_quat  # (T, 4)
        for parent, child in zip(chain[:-1], chain[1:], strict=True):
            direction = _normalise(joints[:, child] - joints[:, parent])  # (T, 3)
            global_rot = qbetween(np.broadcast_to(raw[child], direction.shape), direction)  # (T, 4)
            local = qmul(qinv(r), global_rot)  # (T, 4)
            quats[:, child] = local
            r = qmul(r, local)
    return quats


def forward_kinematics(
    quats: np.ndarray, root_pos: np.ndarray, offsets: np.ndarray, skeleton: SkeletonSpec
) -> np.ndarray:
    """Positions (T, J, 3) from local quaternions (T, J, 4), root positions (T, 3) and bone offsets (J, 3)."""
    t = quats.shape[0]
    joints = np.zeros((t, skeleton.num_joints, 3))  # (T, J, 3)
    joints[:, 0] = root_pos
    for chain in skeleton.kinematic_chains:
        r = quats[:, 0]  # (T, 4)
        for parent, child in zip(chain[:-1], chain[1:], strict=True):
            r = qmul(r, quats[:, child])
            joints[:, child] = qrot(r, np.broadcast_to(offsets[child], (t, 3))) + joints[:, parent]
    return joints


def _leg_bones(skeleton: SkeletonSpec) -> tuple[int, int]:
    """(thigh, shin) bone indices of the right leg: the ankle's parent bone and the ankle bone."""
    ankle = skeleton.feet_right[0]
    return skeleton.parents[ankle], ankle


def retarget_to_template(joints: np.ndarray, skeleton: SkeletonSpec) -> np.ndarray:
    """Positions (T, J, 3) on the template skeleton (published ``uniform_skeleton``).

    IK on the source bones (lengths measured on frame 0), FK with ``skeleton.template_offsets()``; the root
    trajectory is scaled by template leg length / source leg length (thigh + shin of the right leg).
    """
    joints = _validate_joints(joints, skeleton)
    target = skeleton.template_offsets()  # (J, 3)
    src_len = bone_lengths(joints[0], skeleton)  # (J,)
    tgt_len = np.linalg.norm(target, axis=-1)  # (J,)
    thigh, shin = _leg_bones(skeleton)
    src_leg = src_len[thigh] + src_len[shin]
    if src_leg <= 1e-8:
        raise ValueError("cannot retarget: the source leg has zero length on frame 0")
    scale = (tgt_len[thigh] + tgt_len[shin]) / src_leg
    root_quat = facing_quaternions(joints, skeleton, smooth_sigma=None)  # (T, 4), cancels out in FK
    quats = inverse_kinematics(joints, skeleton, root_quat)
    return forward_kinematics(quats, joints[:, 0] * scale, target, skeleton)


def canonicalise(joints: np.ndarray, skeleton: SkeletonSpec = HUMANML3D) -> np.ndarray:
    """Floor at min y = 0, frame-0 root XZ at the origin, frame 0 facing +Z: (T, J, 3) -> (T, J, 3) float64.

    Facing of frame 0: across = (r_hip - l_hip) + (r_sho - l_sho), forward = cross(up, across); the whole clip is
    rotated about Y (through the origin) so that forward maps to +Z (the subject's left ends up on +X).
    """
    joints = _validate_joints(joints, skeleton).copy()
    joints[..., 1] -= joints[..., 1].min()
    joints -= joints[0, 0] * np.array([1.0, 0.0, 1.0])
    r_hip, l_hip, r_sho, l_sho = skeleton.face_joints
    first = joints[0]
    across = _normalise((first[r_hip] - first[l_hip]) + (first[r_sho] - first[l_sho]))  # (3,)
    forward = _normalise(np.cross(_UP, across))  # (3,)
    quat = qbetween(forward, _FORWARD)  # (4,)
    return qrot(np.broadcast_to(quat, joints.shape[:-1] + (4,)), joints)


def foot_contacts(joints: np.ndarray, skeleton: SkeletonSpec) -> np.ndarray:
    """(T-1, 4) float32 contacts (l_ankle, l_toe, r_ankle, r_toe): squared displacement < contact_threshold."""
    feet = list(skeleton.feet_left) + list(skeleton.feet_right)
    disp2 = ((joints[1:, feet] - joints[:-1, feet]) ** 2).sum(-1)  # (T-1, 4)
    return (disp2 < skeleton.contact_threshold).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# joints -> features
# ----------------------------------------------------------------------------------------------------------------
def joints_to_features(joints: np.ndarray, skeleton: SkeletonSpec, retarget: bool = True) -> np.ndarray:
    """HumanML3D feature vectors (T-1, D) float32 of joint positions (T, J, 3) in metres, Y up.

    Steps (published ``process_file``): retarget to the template (optional), canonicalise, foot contacts, IK with the
    smoothed facing r[t] -> local 6D rotations, root angular velocity asin(y of r[t+1] * inv(r[t])) (half the yaw
    step, the published convention), root XZ velocity of step t -> t+1 rotated by r[t+1], joint velocities rotated
    by r[t], root height, ric = positions minus root XZ rotated into each frame's facing frame.

    Raises ValueError on a wrong shape, non-finite values or T < 2.
    """
    joints = _validate_joints(joints, skeleton, min_frames=2)
    if retarget:
        joints = retarget_to_template(joints, skeleton)
    positions = canonicalise(joints, skeleton)  # (T, J, 3)
    t, j, _ = positions.shape

    contacts = foot_contacts(positions, skeleton)  # (T-1, 4)

    root_quat = facing_quaternions(positions, skeleton, smooth_sigma=FACING_SMOOTH_SIGMA)  # (T, 4)
    # Published: frame 0's root rotation is the identity (canonicalise already turned frame 0 to face +Z, by the
    # unsmoothed, unquirked facing). The released features were made so: frame-0 error 1e-7 with it, 0.1 without.
    root_quat[0] = (1.0, 0.0, 0.0, 0.0)
    quats = inverse_kinematics(positions, skeleton, root_quat)  # (T, J, 4)
    rot = quat_to_cont6d(quats[:, 1:]).reshape(t, -1)  # (T, 6(J-1))

    r_step = qmul(root_quat[1:], qinv(root_quat[:-1]))  # (T-1, 4)
    root_rot_vel = np.arcsin(np.clip(r_step[:, 2:3], -1.0, 1.0))  # (T-1, 1)
    # Step t -> t+1 in the facing frame of frame t+1 (published; recover_from_ric undoes it with that frame).
    root_vel = qrot(root_quat[1:], positions[1:, 0] - positions[:-1, 0])  # (T-1, 3)
    root_y = positions[:-1, 0, 1:2]  # (T-1, 1)

    local = positions.copy()
    local[..., 0] -= positions[:, :1, 0]
    local[..., 2] -= positions[:, :1, 2]
    ric = qrot(np.repeat(root_quat[:, None], j, axis=1), local)[:, 1:].reshape(t, -1)  # (T, 3(J-1))

    vel = qrot(np.repeat(root_quat[:-1, None], j, axis=1), positions[1:] - positions[:-1])  # (T-1, J, 3)

    features = np.concatenate(
        [root_rot_vel, root_vel[:, [0, 2]], root_y, ric[:-1], rot[:-1], vel.reshape(t - 1, -1), contacts], axis=-1
    )  # (T-1, D)
    assert features.shape[1] == skeleton.feature_dim
    return features.astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# features -> joints
# ----------------------------------------------------------------------------------------------------------------
def _recover_torch(data: torch.Tensor, num_joints: int) -> torch.Tensor:
    rot_vel = data[..., 0]  # (..., T)
    half_yaw = torch.cumsum(torch.cat([torch.zeros_like(rot_vel[..., :1]), rot_vel[..., :-1]], dim=-1), dim=-1)
    zero = torch.zeros_like(half_yaw)  # (..., T)
    r_quat = torch.stack([torch.cos(half_yaw), zero, torch.sin(half_yaw), zero], dim=-1)  # (..., T, 4)
    r_inv = qinv(r_quat)  # (..., T, 4)

    lin = torch.cat([torch.zeros_like(data[..., :1, 1:3]), data[..., :-1, 1:3]], dim=-2)  # (..., T, 2)
    steps = qrot(r_inv, torch.stack([lin[..., 0], zero, lin[..., 1]], dim=-1))  # (..., T, 3)
    root_xz = torch.cumsum(steps, dim=-2)  # (..., T, 3), y unused
    root = torch.stack([root_xz[..., 0], data[..., 3], root_xz[..., 2]], dim=-1)  # (..., T, 3)

    ric = data[..., 4:4 + (num_joints - 1) * 3]
    ric = ric.reshape(ric.shape[:-1] + (num_joints - 1, 3))  # (..., T, J-1, 3)
    ric = qrot(r_inv[..., None, :], ric)  # (..., T, J-1, 3)
    offset = torch.stack([root_xz[..., 0], zero, root_xz[..., 2]], dim=-1)  # (..., T, 3)
    return torch.cat([root[..., None, :], ric + offset[..., None, :]], dim=-2)  # (..., T, J, 3)


def recover_from_ric(features: Array, num_joints: int) -> Array:
    """Joint positions (..., T, J, 3) from features (..., T, D) (published ``recover_from_ric``).

    Integrates the root angular velocity to a (half) yaw starting at 0, rotates the root XZ velocities back to world
    and integrates them from the origin, takes the root height from dim 3, rotates the ric joints back and adds the
    root XZ. Torch in -> torch out (differentiable, no in-place ops, any leading dims); numpy in -> numpy out (same
    dtype, computed through torch on the CPU).
    """
    min_dim = 4 + (num_joints - 1) * 3
    if features.ndim < 2 or features.shape[-1] < min_dim or features.shape[-2] < 1:
        raise ValueError(
            f"features must have shape (..., T>=1, D>={min_dim}) for {num_joints} joints; got {tuple(features.shape)}"
        )
    if isinstance(features, torch.Tensor):
        return _recover_torch(features, num_joints)
    array = np.asarray(features)
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    return _recover_torch(torch.from_numpy(np.ascontiguousarray(array)), num_joints).numpy()


# ----------------------------------------------------------------------------------------------------------------
# statistics and fidelity
# ----------------------------------------------------------------------------------------------------------------
def feature_group_std(
    features: Sequence[np.ndarray] | np.ndarray, skeleton: SkeletonSpec, min_std: float = 1e-6
) -> tuple[np.ndarray, np.ndarray]:
    """Dataset mean (D,) and group-averaged std (D,) float32 (published ``cal_mean_variance``).

    ``features`` is a list of (T_i, D) clips or one stacked (N, D) array (frames of all clips). Mean and the
    population std (ddof 0) are taken per dim over all frames; the std is then replaced by its average within each
    group (root_rot_vel, root_lin_vel, root_y, ric, rot, vel, contacts). The published feature-weighting divisors
    are NOT applied (the released HumanML3D Std.npy has none either: it is constant within every group), so z-scores
    of all groups have comparable scale. Stds below ``min_std`` (e.g. contacts that never change in a tiny set) are
    raised to ``min_std`` so normalisation never divides by zero.
    """
    if isinstance(features, np.ndarray) and features.ndim == 2:
        clips = [features]
    elif isinstance(features, np.ndarray):
        raise ValueError(f"features must be a list of (T, D) clips or an (N, D) array; got {features.shape}")
    else:
        clips = list(features)
    if not clips:
        raise ValueError("features is empty")
    d = skeleton.feature_dim
    for i, clip in enumerate(clips):
        if np.ndim(clip) != 2 or np.shape(clip)[1] != d:
            raise ValueError(f"clip {i} must have shape (T, {d}); got {np.shape(clip)}")
        if not np.isfinite(clip).all():
            raise ValueError(f"clip {i} contains non-finite values")
    data = np.concatenate([np.asarray(c, dtype=np.float64) for c in clips], axis=0)  # (N, D)
    mean = data.mean(axis=0)
    std = data.std(axis=0)
    for sl in skeleton.feature_slices().values():
        std[sl] = std[sl].mean()
    return mean.astype(np.float32), np.maximum(std, min_std).astype(np.float32)


def fidelity_report(
    features_by_id: Mapping[str, np.ndarray], joints_by_id: Mapping[str, np.ndarray], skeleton: SkeletonSpec
) -> dict:
    """How faithfully the feature code reproduces a set of released (features, joints) pairs.

    Args:
        features_by_id: id -> released features (T, D).
        joints_by_id: id -> joint positions (T' >= T, J, 3) in the features' own frame (HumanML3D ``new_joints``,
            already retargeted). Ids present in only one mapping are ignored (counted in ``unmatched``).
    Returns a JSON-friendly dict:
        clips, unmatched,
        recover_max_abs_err: max |recover_from_ric(features) - joints[:T]| over the frames the features cover,
        feature_mae: {root, ric, rot, vel}: frame-weighted mean abs error of joints_to_features(joints,
            retarget=False) vs the released features on the frames both cover,
        feature_mae_worst_clip: {root, ric, rot, vel}: the largest per-clip mean abs error,
        contact_agreement: fraction of equal contact labels.
    """
    ids = sorted(set(features_by_id) & set(joints_by_id))
    unmatched = len(set(features_by_id) ^ set(joints_by_id))
    if not ids:
        raise ValueError("fidelity_report: no id has both features and joints")
    sl = skeleton.feature_slices()
    groups = {
        "root": np.r_[sl["root_rot_vel"], sl["root_lin_vel"], sl["root_y"]],
        "ric": np.arange(sl["ric"].start, sl["ric"].stop),
        "rot": np.arange(sl["rot"].start, sl["rot"].stop),
        "vel": np.arange(sl["vel"].start, sl["vel"].stop),
    }
    abs_sum = dict.fromkeys(groups, 0.0)
    count = dict.fromkeys(groups, 0)
    worst = dict.fromkeys(groups, 0.0)
    recover_err = 0.0
    contacts_equal = contacts_total = 0
    for clip_id in ids:
        feats = np.asarray(features_by_id[clip_id], dtype=np.float64)
        joints = np.asarray(joints_by_id[clip_id], dtype=np.float64)
        if feats.ndim != 2 or feats.shape[1] != skeleton.feature_dim:
            raise ValueError(f"features of {clip_id!r}: expected (T, {skeleton.feature_dim}); got {feats.shape}")
        if joints.shape[0] < feats.shape[0]:
            raise ValueError(f"joints of {clip_id!r} have {joints.shape[0]} frames, fewer than features ({len(feats)})")
        recovered = recover_from_ric(feats, skeleton.num_joints)  # (T, J, 3)
        recover_err = max(recover_err, float(np.abs(recovered - joints[: len(feats)]).max()))
        ours = joints_to_features(joints, skeleton, retarget=False).astype(np.float64)
        n = min(len(ours), len(feats))
        diff = np.abs(ours[:n] - feats[:n])  # (n, D)
        for name, cols in groups.items():
            abs_sum[name] += float(diff[:, cols].sum())
            count[name] += diff[:, cols].size
            worst[name] = max(worst[name], float(diff[:, cols].mean()))
        contacts_equal += int((ours[:n, sl["contacts"]] == feats[:n, sl["contacts"]]).sum())
        contacts_total += n * 4
    return {
        "clips": len(ids),
        "unmatched": unmatched,
        "recover_max_abs_err": recover_err,
        "feature_mae": {name: abs_sum[name] / count[name] for name in groups},
        "feature_mae_worst_clip": worst,
        "contact_agreement": contacts_equal / contacts_total,
    }
