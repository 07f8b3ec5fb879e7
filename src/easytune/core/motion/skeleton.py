"""Skeleton constants of the two standard text-to-motion datasets.

HumanML3D uses 22 SMPL joints (263-d features), KIT-ML 21 MMM joints (251-d features). Values follow the
published ``paramUtil`` of HumanML3D (restated in ``docs``: HUMANML3D.md section 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SkeletonSpec:
    """A kinematic tree and the constants feature extraction needs.

    Attributes:
        name: dataset name (``humanml3d`` or ``kit``).
        joint_names: J names in array order.
        parents: (J,) parent index per joint, -1 for the root.
        kinematic_chains: chains from the root used for inverse kinematics.
        raw_offsets: (J, 3) unit direction of each bone in the rest pose (root row zero).
        bone_lengths: (J,) template bone length per joint (root 0) or None when the dataset has no template here.
        face_joints: (r_hip, l_hip, r_shoulder, l_shoulder) indices for the facing direction.
        feet_left, feet_right: (ankle, toe) indices for foot contacts.
        fps: frame rate of the processed dataset.
        contact_threshold: squared frame-to-frame displacement below which a foot joint is in contact.
    """

    name: str
    joint_names: tuple[str, ...]
    parents: tuple[int, ...]
    kinematic_chains: tuple[tuple[int, ...], ...]
    raw_offsets: tuple[tuple[float, float, float], ...]
    bone_lengths: tuple[float, ...] | None
    face_joints: tuple[int, int, int, int]
    feet_left: tuple[int, int]
    feet_right: tuple[int, int]
    fps: float
    contact_threshold: float = 0.002

    @property
    def num_joints(self) -> int:
        return len(self.parents)

    @property
    def feature_dim(self) -> int:
        """4 + (J-1)*3 + (J-1)*6 + J*3 + 4 (263 for 22 joints, 251 for 21)."""
        j = self.num_joints
        return 4 + (j - 1) * 3 + (j - 1) * 6 + j * 3 + 4

    def raw_offsets_array(self) -> np.ndarray:
        return np.asarray(self.raw_offsets, dtype=np.float64)

    def template_offsets(self) -> np.ndarray:
        """(J, 3) bone vectors of the template skeleton in metres (raw direction x template length)."""
        if self.bone_lengths is None:
            raise ValueError(f"skeleton {self.name!r} has no template bone lengths")
        return self.raw_offsets_array() * np.asarray(self.bone_lengths, dtype=np.float64)[:, None]

    def feature_slices(self) -> dict[str, slice]:
        """Slices of the feature groups: root_rot_vel, root_lin_vel, root_y, ric, rot, vel, contacts."""
        j = self.num_joints
        ric_end = 4 + (j - 1) * 3
        rot_end = ric_end + (j - 1) * 6
        vel_end = rot_end + j * 3
        return {
            "root_rot_vel": slice(0, 1),
            "root_lin_vel": slice(1, 3),
            "root_y": slice(3, 4),
            "ric": slice(4, ric_end),
            "rot": slice(ric_end, rot_end),
            "vel": slice(rot_end, vel_end),
            "contacts": slice(vel_end, vel_end + 4),
        }


HUMANML3D = SkeletonSpec(
    name="humanml3d",
    joint_names=(
        "Pelvis", "L_Hip", "R_Hip", "Spine1", "L_Knee", "R_Knee", "Spine2", "L_Ankle", "R_Ankle", "Spine3",
        "L_Foot", "R_Foot", "Neck", "L_Collar", "R_Collar", "Head", "L_Shoulder", "R_Shoulder", "L_Elbow",
        "R_Elbow", "L_Wrist", "R_Wrist",
    ),
    parents=(-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19),
    kinematic_chains=((0, 2, 5, 8, 11), (0, 1, 4, 7, 10), (0, 3, 6, 9, 12, 15), (9, 14, 17, 19, 21),
                      (9, 13, 16, 18, 20)),
    raw_offsets=(
        (0, 0, 0), (1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, -1, 0), (0, 1, 0), (0, -1, 0), (0, -1, 0),
        (0, 1, 0), (0, 0, 1), (0, 0, 1), (0, 1, 0), (1, 0, 0), (-1, 0, 0), (0, 0, 1), (0, -1, 0), (0, -1, 0),
        (0, -1, 0), (0, -1, 0), (0, -1, 0), (0, -1, 0),
    ),
    bone_lengths=(
        0.0, 0.1031, 0.1099, 0.1316, 0.3936, 0.3902, 0.1432, 0.4324, 0.4256, 0.0574, 0.1434, 0.1494, 0.2194,
        0.1375, 0.1434, 0.1030, 0.1316, 0.1230, 0.2568, 0.2631, 0.2660, 0.2699,
    ),
    face_joints=(2, 1, 17, 16),
    feet_left=(7, 10),
    feet_right=(8, 11),
    fps=20.0,
)

KIT = SkeletonSpec(
    name="kit",
    joint_names=(
        "root", "BP", "BT", "BLN", "BUN", "LS", "LE", "LW", "RS", "RE", "RW", "LH", "LK", "LA", "LMrot", "LF",
        "RH", "RK", "RA", "RMrot", "RF",
    ),
    parents=(-1, 0, 1, 2, 3, 3, 5, 6, 3, 8, 9, 0, 11, 12, 13, 14, 0, 16, 17, 18, 19),
    kinematic_chains=((0, 11, 12, 13, 14, 15), (0, 16, 17, 18, 19, 20), (0, 1, 2, 3, 4), (3, 5, 6, 7),
                      (3, 8, 9, 10)),
    raw_offsets=(
        (0, 0, 0), (0, 1, 0), (0, 1, 0), (0, 1, 0), (0, 1, 0), (1, 0, 0), (0, -1, 0), (0, -1, 0), (-1, 0, 0),
        (0, -1, 0), (0, -1, 0), (1, 0, 0), (0, -1, 0), (0, -1, 0), (0, 0, 1), (0, 0, 1), (-1, 0, 0), (0, -1, 0),
        (0, -1, 0), (0, 0, 1), (0, 0, 1),
    ),
    bone_lengths=None,
    face_joints=(11, 16, 5, 8),
    feet_left=(19, 20),
    feet_right=(14, 15),
    fps=12.5,
    contact_threshold=0.05,
)

SKELETONS: dict[str, SkeletonSpec] = {"humanml3d": HUMANML3D, "kit": KIT}


def get_skeleton(name: str) -> SkeletonSpec:
    """Skeleton by dataset name; raises ``ValueError`` listing the known names."""
    try:
        return SKELETONS[name]
    except KeyError:
        raise ValueError(f"unknown skeleton {name!r}; known: {sorted(SKELETONS)}") from None
