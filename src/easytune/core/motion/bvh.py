"""BVH motion capture ingest: parse, forward kinematics, map to the 22 HumanML3D joints.

``read_bvh(path)`` parses HIERARCHY (ROOT/JOINT/End Site, OFFSET, per-joint CHANNELS with Euler rotations in any
order) and MOTION. ``BvhMotion.global_positions()`` runs forward kinematics. ``bvh_to_hml22`` maps the joints to the
HumanML3D/SMPL order with a table (each target joint = mean of one or more BVH joints), converts units (default
centimetres -> metres), resamples linearly to ``target_fps`` and canonicalises like HumanML3D (floor at y = 0, root
XZ at the origin on frame 0, frame 0 facing +Z, the subject's left on +X).

Conventions: Euler channels compose in the order listed (``Zrotation Xrotation Yrotation`` -> R = Rz Rx Ry, angles
in degrees); a joint's local translation is its OFFSET, except on the axes it has position channels for, where the
channel value replaces the OFFSET component (as the Bandai Namco, MotionBuilder and Blender exports use it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .features import canonicalise
from .skeleton import HUMANML3D

_ROTATION_CHANNELS = {"Xrotation": 0, "Yrotation": 1, "Zrotation": 2}
_POSITION_CHANNELS = {"Xposition": 0, "Yposition": 1, "Zposition": 2}

#: Bandai Namco Research Motiondataset (21 joints under ``joint_Root``) -> HumanML3D 22 joints, in HumanML3D
#: order. Spine2 has no counterpart: it is the midpoint of Spine and Chest (as in ``bandai_namco_hml22``).
BANDAI_TO_HML22: dict[str, tuple[str, ...]] = {
    "Pelvis": ("Hips",),
    "L_Hip": ("UpperLeg_L",),
    "R_Hip": ("UpperLeg_R",),
    "Spine1": ("Spine",),
    "L_Knee": ("LowerLeg_L",),
    "R_Knee": ("LowerLeg_R",),
    "Spine2": ("Spine", "Chest"),
    "L_Ankle": ("Foot_L",),
    "R_Ankle": ("Foot_R",),
    "Spine3": ("Chest",),
    "L_Foot": ("Toes_L",),
    "R_Foot": ("Toes_R",),
    "Neck": ("Neck",),
    "L_Collar": ("Shoulder_L",),
    "R_Collar": ("Shoulder_R",),
    "Head": ("Head",),
    "L_Shoulder": ("UpperArm_L",),
    "R_Shoulder": ("UpperArm_R",),
    "L_Elbow": ("LowerArm_L",),
    "R_Elbow": ("LowerArm_R",),
    "L_Wrist": ("Hand_L",),
    "R_Wrist": ("Hand_R",),
}


class BvhError(ValueError):
    """A malformed BVH file; the message names the file and, where known, the line."""


@dataclass(frozen=True)
class BvhMotion:
    """A parsed BVH file.

    Attributes:
        source: file path (or a label) used in error messages.
        joint_names: J names in file order (parents before children; End Sites are not joints).
        parents: (J,) parent index, -1 for the root.
        offsets: (J, 3) OFFSET of every joint in file units.
        channels: per joint, the channel names in file order.
        frame_time: seconds per frame.
        motion: (F, C) channel values, columns in the joint/channel order above.
    """

    source: str
    joint_names: tuple[str, ...]
    parents: tuple[int, ...]
    offsets: np.ndarray
    channels: tuple[tuple[str, ...], ...]
    frame_time: float
    motion: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.motion.shape[0])

    @property
    def fps(self) -> float:
        return 1.0 / self.frame_time

    def global_positions(self) -> np.ndarray:
        """(F, J, 3) float64 world positions of every joint by forward kinematics, in file units."""
        f, j = self.num_frames, len(self.joint_names)
        rotations = np.empty((f, j, 3, 3))  # global rotation per joint
        positions = np.empty((f, j, 3))
        column = 0
        for k, (names, parent) in enumerate(zip(self.channels, self.parents)):
            values = self.motion[:, column : column + len(names)]  # (F, n_channels)
            column += len(names)
            translation = np.broadcast_to(self.offsets[k], (f, 3)).copy()  # (F, 3)
            local = np.broadcast_to(np.eye(3), (f, 3, 3))
            for c, name in enumerate(names):
                if name in _POSITION_CHANNELS:
                    translation[:, _POSITION_CHANNELS[name]] = values[:, c]
                else:
                    local = local @ _axis_rotation(_ROTATION_CHANNELS[name], np.deg2rad(values[:, c]))
            if parent < 0:
                rotations[:, k] = local
                positions[:, k] = translation
            else:
                rotations[:, k] = rotations[:, parent] @ local
                positions[:, k] = positions[:, parent] + np.einsum("fij,fj->fi", rotations[:, parent], translation)
        return positions


def _axis_rotation(axis: int, angle: np.ndarray) -> np.ndarray:
    """(F, 3, 3) right-handed rotations by ``angle`` (F,) radians about axis 0/1/2 (X/Y/Z)."""
    c, s = np.cos(angle), np.sin(angle)
    m = np.zeros(angle.shape + (3, 3))
    m[:, axis, axis] = 1.0
    i, k = [(1, 2), (2, 0), (0, 1)][axis]
    m[:, i, i] = c
    m[:, k, k] = c
    m[:, i, k] = -s
    m[:, k, i] = s
    return m


class _Tokens:
    """Whitespace tokens of the HIERARCHY part with their line numbers."""

    def __init__(self, lines: list[str], source: str):
        self.items = [(tok, n + 1) for n, line in enumerate(lines) for tok in line.split()]
        self.pos = 0
        self.source = source

    def error(self, message: str) -> BvhError:
        line = self.items[min(self.pos, len(self.items) - 1)][1] if self.items else 0
        return BvhError(f"{self.source}: line {line}: {message}")

    def next(self, what: str) -> str:
        if self.pos >= len(self.items):
            raise self.error(f"unexpected end of HIERARCHY, expected {what}")
        tok = self.items[self.pos][0]
        self.pos += 1
        return tok

    def expect(self, word: str) -> None:
        tok = self.next(repr(word))
        if tok != word:
            self.pos -= 1
            raise self.error(f"expected {word!r}, found {tok!r}")

    def number(self, what: str) -> float:
        tok = self.next(what)
        try:
            value = float(tok)
        except ValueError:
            self.pos -= 1
            raise self.error(f"expected a number for {what}, found {tok!r}") from None
        if not np.isfinite(value):
            self.pos -= 1
            raise self.error(f"non-finite {what}: {tok!r}")
        return value

    def peek(self) -> str | None:
        return self.items[self.pos][0] if self.pos < len(self.items) else None


def _parse_joint(tokens: _Tokens, name: str, parent: int, out: dict) -> None:
    index = len(out["names"])
    out["names"].append(name)
    out["parents"].append(parent)
    tokens.expect("{")
    tokens.expect("OFFSET")
    out["offsets"].append([tokens.number(f"OFFSET of {name}") for _ in range(3)])
    channels: list[str] = []
    if tokens.peek() == "CHANNELS":
        tokens.next("CHANNELS")
        count = tokens.number(f"channel count of {name}")
        if count != int(count) or count < 0:
            raise tokens.error(f"invalid channel count {count} for joint {name!r}")
        for _ in range(int(count)):
            channel = tokens.next(f"a channel name of {name}")
            if channel not in _ROTATION_CHANNELS and channel not in _POSITION_CHANNELS:
                tokens.pos -= 1
                raise tokens.error(f"unknown channel {channel!r} for joint {name!r}")
            channels.append(channel)
        if len(set(channels)) != len(channels):
            raise tokens.error(f"repeated channel for joint {name!r}: {channels}")
    out["channels"].append(tuple(channels))
    while True:
        tok = tokens.next(f"JOINT, End Site or '}}' in {name}")
        if tok == "}":
            return
        if tok == "JOINT":
            _parse_joint(tokens, tokens.next("a joint name"), index, out)
        elif tok == "End":
            tokens.expect("Site")
            tokens.expect("{")
            tokens.expect("OFFSET")
            for _ in range(3):
                tokens.number(f"End Site OFFSET of {name}")
            tokens.expect("}")
        else:
            tokens.pos -= 1
            raise tokens.error(f"unexpected {tok!r} in joint {name!r}")


def parse_bvh(text: str, source: str = "<string>") -> BvhMotion:
    """Parse BVH text; ``source`` names the file in error messages. Raises ``BvhError`` on malformed input."""
    lines = text.splitlines()
    motion_line = next((n for n, line in enumerate(lines) if line.strip() == "MOTION"), None)
    if motion_line is None:
        raise BvhError(f"{source}: no MOTION section")
    tokens = _Tokens(lines[:motion_line], source)
    tokens.expect("HIERARCHY")
    tokens.expect("ROOT")
    out: dict = {"names": [], "parents": [], "offsets": [], "channels": []}
    _parse_joint(tokens, tokens.next("the root name"), -1, out)
    if tokens.peek() is not None:
        raise tokens.error(f"unexpected {tokens.peek()!r} after the root joint (one ROOT per file is supported)")
    if len(set(out["names"])) != len(out["names"]):
        raise BvhError(f"{source}: duplicate joint names")

    header = {}
    body_start = motion_line + 1
    for key in ("Frames:", "Frame Time:"):
        while body_start < len(lines) and not lines[body_start].strip():
            body_start += 1
        line = lines[body_start].strip() if body_start < len(lines) else ""
        if not line.startswith(key):
            raise BvhError(f"{source}: line {body_start + 1}: expected {key!r}, found {line[:40]!r}")
        try:
            header[key] = float(line[len(key):])
        except ValueError:
            raise BvhError(f"{source}: line {body_start + 1}: invalid value in {line[:40]!r}") from None
        body_start += 1
    frames, frame_time = header["Frames:"], header["Frame Time:"]
    if frames != int(frames) or frames < 1:
        raise BvhError(f"{source}: invalid frame count {frames}")
    if not (np.isfinite(frame_time) and frame_time > 0):
        raise BvhError(f"{source}: invalid frame time {frame_time}")
    n_channels = sum(len(c) for c in out["channels"])
    try:
        values = np.array(" ".join(lines[body_start:]).split(), dtype=np.float64)
    except ValueError as err:
        raise BvhError(f"{source}: non-numeric value in the MOTION data ({err})") from None
    if values.size != int(frames) * n_channels:
        raise BvhError(
            f"{source}: MOTION has {values.size} values, expected Frames ({int(frames)}) x channels ({n_channels})"
        )
    if not np.isfinite(values).all():
        raise BvhError(f"{source}: MOTION contains non-finite values")
    return BvhMotion(
        source=source,
        joint_names=tuple(out["names"]),
        parents=tuple(out["parents"]),
        offsets=np.asarray(out["offsets"], dtype=np.float64),
        channels=tuple(out["channels"]),
        frame_time=float(frame_time),
        motion=values.reshape(int(frames), n_channels),
    )


def read_bvh(path: str | Path) -> BvhMotion:
    """Parse the BVH file at ``path``. Raises ``BvhError`` naming the file on malformed content."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError as err:
        raise BvhError(f"{path}: not a text file ({err})") from None
    return parse_bvh(text, source=str(path))


def resample_linear(positions: np.ndarray, source_fps: float, target_fps: float) -> np.ndarray:
    """(F, ...) frames at ``source_fps`` -> (T, ...) at ``target_fps`` by linear interpolation in time.

    Output frame k is at time k / target_fps, for every k with that time within the source clip.
    """
    if source_fps <= 0 or target_fps <= 0:
        raise ValueError(f"frame rates must be positive; got {source_fps}, {target_fps}")
    n = positions.shape[0]
    duration = (n - 1) / source_fps
    count = int(np.floor(duration * target_fps + 1e-6)) + 1
    src = np.arange(count) / target_fps * source_fps  # fractional source frame of every output frame
    lo = np.minimum(np.floor(src).astype(int), n - 1)
    hi = np.minimum(lo + 1, n - 1)
    w = (src - lo).reshape((-1,) + (1,) * (positions.ndim - 1))
    return positions[lo] * (1.0 - w) + positions[hi] * w


def bvh_to_hml22(
    motion: BvhMotion,
    mapping: Mapping[str, Sequence[str]] = BANDAI_TO_HML22,
    target_fps: float = 20.0,
    scale: float = 0.01,
) -> np.ndarray:
    """(T, 22, 3) float32 HumanML3D-order joint positions in metres of a BVH motion.

    Forward kinematics -> per HumanML3D joint the mean of its mapped BVH joints -> x ``scale`` (cm -> m by default)
    -> linear resampling to ``target_fps`` -> canonicalisation (floor y = 0, frame-0 root XZ at the origin, frame 0
    facing +Z, left on +X). ``mapping`` maps every HumanML3D joint name to one or more BVH joint names.
    """
    missing = [name for name in HUMANML3D.joint_names if name not in mapping]
    if missing:
        raise ValueError(f"mapping lacks HumanML3D joints {missing}")
    index = {name: k for k, name in enumerate(motion.joint_names)}
    unknown = sorted({src for name in HUMANML3D.joint_names for src in mapping[name] if src not in index})
    if unknown:
        raise BvhError(f"{motion.source}: joints {unknown} required by the mapping are not in the file "
                       f"(it has {list(motion.joint_names)})")
    world = motion.global_positions()  # (F, J_bvh, 3)
    joints = np.stack(
        [world[:, [index[src] for src in mapping[name]]].mean(axis=1) for name in HUMANML3D.joint_names], axis=1
    ) * scale  # (F, 22, 3)
    joints = resample_linear(joints, motion.fps, target_fps)  # (T, 22, 3)
    return canonicalise(joints, HUMANML3D).astype(np.float32)
