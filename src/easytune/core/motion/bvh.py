"""BVH motion capture: parse, forward kinematics, map to the 22 HumanML3D joints; export joints to BVH.

``read_bvh(path)`` parses HIERARCHY (ROOT/JOINT/End Site, OFFSET, per-joint CHANNELS with Euler rotations in any
order) and MOTION. ``BvhMotion.global_positions()`` runs forward kinematics. ``bvh_to_hml22`` maps the joints to the
HumanML3D/SMPL order with a table (each target joint = mean of one or more BVH joints), converts units (default
centimetres -> metres), resamples linearly to ``target_fps`` and canonicalises like HumanML3D (floor at y = 0, root
XZ at the origin on frame 0, frame 0 facing +Z, the subject's left on +X).

``joints_to_bvh(joints)`` solves a BVH of the 22-joint HumanML3D skeleton from joint positions (template bone
offsets, root translation, per-joint local rotations; see its docstring) and ``format_bvh`` / ``write_bvh`` write it.

Conventions: Euler channels compose in the order listed (``Zrotation Xrotation Yrotation`` -> R = Rz Rx Ry, angles
in degrees); a joint's local translation is its OFFSET, except on the axes it has position channels for, where the
channel value replaces the OFFSET component (as the Bandai Namco, MotionBuilder and Blender exports use it).
"""

from __future__ import annotations

import stat
import warnings
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


#: default bound on the joint nesting depth of a HIERARCHY (real skeletons, fingers included, stay under ~25)
DEFAULT_MAX_DEPTH = 64


class BvhError(ValueError):
    """A malformed BVH file; the message names the file and, where known, the line. ``reason`` is a short key a
    folder ingest counts its skips by (``unreadable_bvh``, ``hierarchy_too_deep``, ``file_too_large``, ...)."""

    def __init__(self, message: str, reason: str = "unreadable_bvh"):
        super().__init__(message)
        self.reason = reason


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
        end_sites: (joint index, (3,) End Site OFFSET) of every joint that ends in an End Site, in file order.
    """

    source: str
    joint_names: tuple[str, ...]
    parents: tuple[int, ...]
    offsets: np.ndarray
    channels: tuple[tuple[str, ...], ...]
    frame_time: float
    motion: np.ndarray
    end_sites: tuple[tuple[int, tuple[float, float, float]], ...] = ()

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
        for k, (names, parent) in enumerate(zip(self.channels, self.parents, strict=True)):
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

    def error(self, message: str, reason: str = "unreadable_bvh") -> BvhError:
        line = self.items[min(self.pos, len(self.items) - 1)][1] if self.items else 0
        return BvhError(f"{self.source}: line {line}: {message}", reason)

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


def _open_joint(tokens: _Tokens, name: str, parent: int, out: dict) -> int:
    """Read a joint's ``{``, OFFSET and CHANNELS (not its children); returns its index."""
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
    return index


def _parse_hierarchy(tokens: _Tokens, out: dict, max_depth: int) -> None:
    """The ROOT joint and everything nested in it, with an explicit stack (no recursion: a file of 10,000 nested
    JOINTs is a :class:`BvhError`, not a ``RecursionError``); nesting deeper than ``max_depth`` joints is refused."""
    root = tokens.next("the root name")
    stack = [(_open_joint(tokens, root, -1, out), root)]  # the open joints, root first
    while stack:
        index, name = stack[-1]
        tok = tokens.next(f"JOINT, End Site or '}}' in {name}")
        if tok == "}":
            stack.pop()
        elif tok == "JOINT":
            if len(stack) >= max_depth:
                raise tokens.error(f"joints nested deeper than {max_depth} levels (the nesting-depth limit)",
                                   "hierarchy_too_deep")
            child = tokens.next("a joint name")
            stack.append((_open_joint(tokens, child, index, out), child))
        elif tok == "End":
            tokens.expect("Site")
            tokens.expect("{")
            tokens.expect("OFFSET")
            out["end_sites"].append((index, tuple(tokens.number(f"End Site OFFSET of {name}") for _ in range(3))))
            tokens.expect("}")
        else:
            tokens.pos -= 1
            raise tokens.error(f"unexpected {tok!r} in joint {name!r}")


def parse_bvh(text: str, source: str = "<string>", *, max_depth: int = DEFAULT_MAX_DEPTH,
              max_frames: int | None = None) -> BvhMotion:
    """Parse BVH text; ``source`` names the file in error messages. Raises ``BvhError`` on malformed input, on
    joints nested deeper than ``max_depth`` and on more than ``max_frames`` frames (None: no limit; checked on the
    ``Frames:`` header, before the MOTION values are read)."""
    lines = text.splitlines()
    motion_line = next((n for n, line in enumerate(lines) if line.strip() == "MOTION"), None)
    if motion_line is None:
        raise BvhError(f"{source}: no MOTION section")
    tokens = _Tokens(lines[:motion_line], source)
    tokens.expect("HIERARCHY")
    tokens.expect("ROOT")
    out: dict = {"names": [], "parents": [], "offsets": [], "channels": [], "end_sites": []}
    _parse_hierarchy(tokens, out, max_depth)
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
    if max_frames is not None and frames > max_frames:
        raise BvhError(f"{source}: {int(frames)} frames, more than the limit of {max_frames} (max_frames)",
                       "too_many_frames")
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
        end_sites=tuple(out["end_sites"]),
    )


def read_bvh(path: str | Path, *, max_bytes: int | None = None, max_depth: int = DEFAULT_MAX_DEPTH,
             max_frames: int | None = None) -> BvhMotion:
    """Parse the BVH file at ``path``. Raises ``BvhError`` naming the file on malformed content, on a path that is
    not a regular file (a folder named ``*.bvh``, a dangling link), on an unreadable file and on a file larger than
    ``max_bytes`` (checked before reading; None: no limit); ``max_depth``, ``max_frames``: :func:`parse_bvh`."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError as err:
        dangling = path.is_symlink()
        raise BvhError(f"{path}: {'a dangling symbolic link' if dangling else 'cannot be read'} ({err.strerror or err})",
                       "dangling_link" if dangling else "unreadable_file") from None
    if not stat.S_ISREG(info.st_mode):
        raise BvhError(f"{path}: not a regular file ({'a folder' if stat.S_ISDIR(info.st_mode) else 'a special file'})",
                       "not_a_file")
    if max_bytes is not None and info.st_size > max_bytes:
        raise BvhError(f"{path}: {info.st_size} bytes, larger than the limit of {max_bytes} (max_file_bytes)",
                       "file_too_large")
    try:
        with open(path, "rb") as handle:
            data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
    except OSError as err:
        raise BvhError(f"{path}: cannot be read ({err.strerror or err})", "unreadable_file") from None
    if max_bytes is not None and len(data) > max_bytes:  # it grew after the stat
        raise BvhError(f"{path}: larger than the limit of {max_bytes} bytes (max_file_bytes)", "file_too_large")
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as err:
        raise BvhError(f"{path}: not a text file ({err})") from None
    return parse_bvh(text, source=str(path), max_depth=max_depth, max_frames=max_frames)


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
    canonical: bool = True,
    skeleton=HUMANML3D,
) -> np.ndarray:
    """(T, 22, 3) float32 HumanML3D-order joint positions in metres of a BVH motion.

    Forward kinematics -> per HumanML3D joint the mean of its mapped BVH joints -> x ``scale`` (cm -> m by default)
    -> linear resampling to ``target_fps`` -> canonicalisation (floor y = 0, frame-0 root XZ at the origin, frame 0
    facing +Z, left on +X; ``canonical=False`` keeps the file's placement). ``mapping`` maps every joint name of
    ``skeleton`` (HumanML3D by default) to one or more BVH joint names (:data:`HML22_IDENTITY` for exported files).
    """
    missing = [name for name in skeleton.joint_names if name not in mapping]
    if missing:
        raise ValueError(f"mapping lacks {skeleton.name} joints {missing}")
    index = {name: k for k, name in enumerate(motion.joint_names)}
    unknown = sorted({src for name in skeleton.joint_names for src in mapping[name] if src not in index})
    if unknown:
        raise BvhError(f"{motion.source}: joints {unknown} required by the mapping are not in the file "
                       f"(it has {list(motion.joint_names)})", "missing_joints")
    world = motion.global_positions()  # (F, J_bvh, 3)
    joints = np.stack(
        [world[:, [index[src] for src in mapping[name]]].mean(axis=1) for name in skeleton.joint_names], axis=1
    ) * scale  # (F, J, 3)
    joints = resample_linear(joints, motion.fps, target_fps)  # (T, J, 3)
    return (canonicalise(joints, skeleton) if canonical else joints).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# export: joint positions -> BVH
# ----------------------------------------------------------------------------------------------------------------
#: Euler channel orders a BVH can have (``"ZXY"``: ``Zrotation Xrotation Yrotation``, R = Rz Rx Ry).
EULER_ORDERS = ("XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX")
#: file units -> factor from metres
BVH_UNITS = {"m": 1.0, "cm": 100.0}
#: where the hierarchy's OFFSETs come from (:func:`joints_to_bvh`)
BVH_OFFSETS = ("fitted", "template")
#: the 22 HumanML3D joints of an exported file map to themselves (read back with ``bvh_to_hml22``)
HML22_IDENTITY: dict[str, tuple[str, ...]] = {name: (name,) for name in HUMANML3D.joint_names}


def _children(parents: Sequence[int]) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in parents]
    for j, p in enumerate(parents):
        if p >= 0:
            out[p].append(j)
    return out


def _depth_first(parents: Sequence[int]) -> list[int]:
    """Joint indices in depth-first order from the root, children in index order (the BVH file order)."""
    children = _children(parents)
    order, stack = [], [j for j, p in enumerate(parents) if p < 0][::-1]
    while stack:
        j = stack.pop()
        order.append(j)
        stack.extend(children[j][::-1])
    return order


def fit_rotations(rest: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotations R minimising sum_k |R rest_k - target_k|^2; rest (K, 3), target (..., K, 3).

    K = 1: the shortest arc from rest to target (``qbetween``, as the HumanML3D IK aligns a bone); K >= 2: the
    least-squares rotation (Kabsch, SVD of sum_k target_k rest_k^T with the reflection removed).
    """
    from .quaternion import qbetween, quat_to_matrix

    rest = np.asarray(rest, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if rest.shape[0] == 1:
        return quat_to_matrix(qbetween(np.broadcast_to(rest[0], target[..., 0, :].shape), target[..., 0, :]))
    cov = np.einsum("...ki,kj->...ij", target, rest)  # (..., 3, 3)
    u, _, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))  # (...,)
    fix = np.ones(cov.shape[:-1])
    fix[..., 2] = np.where(d == 0, 1.0, d)
    return (u * fix[..., None, :]) @ vt


def fitted_offsets(joints: np.ndarray, skeleton=HUMANML3D, iterations: int = 10) -> np.ndarray:
    """(J, 3) bone vectors in metres of the clip's own skeleton, posed like the template (T-pose facing +Z, Y up).

    Lengths: the median over frames of each bone's length in ``joints`` (T, J, 3). Directions: the template's
    (HumanML3D raw offsets), except for the children of a joint with several (hips and Spine1 under the Pelvis,
    Neck and collars under Spine3), which move rigidly with their parent's single BVH rotation: their vectors are
    the clip's mean shape of that group (generalised Procrustes: align every frame to the shape, average, repeat),
    turned to best match the template's vectors.
    """
    joints = np.asarray(joints, dtype=np.float64)
    children = _children(skeleton.parents)
    parents = np.asarray(skeleton.parents)
    lengths = np.median(np.linalg.norm(joints[:, 1:] - joints[:, parents[1:]], axis=-1), axis=0)  # (J-1,)
    offsets = skeleton.raw_offsets_array() * np.concatenate([[0.0], lengths])[:, None]  # (J, 3)
    template = skeleton.template_offsets()
    for b, group in enumerate(children):
        if len(group) < 2:
            continue
        observed = joints[:, group] - joints[:, b, None]  # (T, K, 3)
        shape = offsets[group]  # (K, 3)
        for _ in range(iterations):
            frame_rot = fit_rotations(shape, observed)  # (T, 3, 3)
            shape = np.einsum("tji,tkj->tki", frame_rot, observed).mean(0)  # frames turned onto the shape
        turn = fit_rotations(shape, template[group][None])[0]  # the shape's pose closest to the template's
        offsets[group] = shape @ turn.T
    return offsets


def joints_to_bvh(joints: np.ndarray, skeleton=HUMANML3D, *, fps: float | None = None, unit: str = "cm",
                  euler_order: str = "ZXY", offsets: str = "fitted", source: str = "<generated>") -> BvhMotion:
    """A BVH of joint positions (T, J, 3) in metres, Y up, on the skeleton's hierarchy.

    Hierarchy: the skeleton's tree in depth-first order; OFFSETs in the template rest pose (T-pose facing +Z, Y up,
    the HumanML3D raw offset directions): ``offsets="template"`` the template bone vectors themselves (every file
    the same skeleton), ``"fitted"`` the clip's own bone lengths and hip/shoulder girdle shapes
    (:func:`fitted_offsets`). End Sites half a bone beyond each leaf. Channels: root ``X/Y/Zposition`` + three
    rotations, every other joint three rotations in ``euler_order`` (R = R_a R_b R_c for order "abc", degrees,
    unwrapped over time). Units: ``unit`` ("cm" or "m").

    Rotations are solved joint by joint from the root along the tree, following the HumanML3D IK: a joint's
    rotation aligns its rest bone(s) with the bone(s) to its child(ren) -- the shortest arc (``qbetween``) for one
    child, the least-squares rotation for the Pelvis and Spine3, whose three children fix the rotation; leaves keep
    their parent's orientation. Unlike the feature IK (which stores the rotation on the child and restarts every
    chain at the root rotation), a BVH joint carries the rotation of its outgoing bones and the parent's rotation
    is composed, so each bone is aimed from where forward kinematics actually placed its start: the error of a joint
    is the difference between its bone length in ``joints`` and the template's, not accumulated along the chain.
    Joints on the template skeleton (what the data pipeline trains on) round-trip to float precision with either
    ``offsets``; generated joints, whose bones stretch a little from frame to frame, round-trip with the error
    of that stretch (``fitted``) plus their deviation from the template's lengths and girdle shapes (``template``).
    """
    from scipy.spatial.transform import Rotation

    if unit not in BVH_UNITS:
        raise ValueError(f"unit must be one of {sorted(BVH_UNITS)}, got {unit!r}")
    if euler_order not in EULER_ORDERS:
        raise ValueError(f"euler_order must be one of {list(EULER_ORDERS)}, got {euler_order!r}")
    if offsets not in BVH_OFFSETS:
        raise ValueError(f"offsets must be one of {list(BVH_OFFSETS)}, got {offsets!r}")
    fps = float(skeleton.fps if fps is None else fps)
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be positive, got {fps}")
    joints = np.asarray(joints)
    n_joints = skeleton.num_joints
    if joints.ndim != 3 or joints.shape[1:] != (n_joints, 3) or joints.shape[0] < 1:
        raise ValueError(f"joints must have shape (T>=1, {n_joints}, 3), got {tuple(joints.shape)}")
    if not np.isfinite(joints).all():
        raise ValueError("joints contain non-finite values")
    joints = joints.astype(np.float64)
    bones = skeleton.template_offsets() if offsets == "template" else fitted_offsets(joints, skeleton)  # (J, 3) m
    parents = list(skeleton.parents)
    children = _children(parents)
    t = joints.shape[0]
    placed = np.zeros_like(joints)  # (T, J, 3) forward-kinematics positions
    world = np.zeros((t, n_joints, 3, 3))  # global rotations
    local = np.zeros((t, n_joints, 3, 3))
    for j in _depth_first(parents):
        p = parents[j]
        parent_rot = np.broadcast_to(np.eye(3), (t, 3, 3)) if p < 0 else world[:, p]
        placed[:, j] = joints[:, j] if p < 0 else placed[:, p] + parent_rot @ bones[j]
        if children[j]:
            # where the children are, from where this joint was placed, in the parent's frame: (T, K, 3)
            aim = np.einsum("tji,tkj->tki", parent_rot, joints[:, children[j]] - placed[:, j, None])
            local[:, j] = fit_rotations(bones[children[j]], aim)
        else:
            local[:, j] = np.eye(3)
        world[:, j] = parent_rot @ local[:, j]
    order = _depth_first(parents)
    with warnings.catch_warnings():  # gimbal lock: scipy still returns angles of the same rotation
        warnings.simplefilter("ignore", UserWarning)
        angles = Rotation.from_matrix(local[:, order].reshape(-1, 3, 3)).as_euler(euler_order, degrees=True)
    angles = np.unwrap(angles.reshape(t, n_joints, 3), period=360.0, axis=0)  # (T, J, 3) continuous in time
    scale = BVH_UNITS[unit]
    rotation_channels = tuple(f"{axis}rotation" for axis in euler_order)
    columns = [joints[:, 0] * scale, angles[:, 0]] + [angles[:, k] for k in range(1, n_joints)]
    file_index = {j: k for k, j in enumerate(order)}
    names = tuple(skeleton.joint_names[j] for j in order)
    return BvhMotion(
        source=source,
        joint_names=names,
        parents=tuple(-1 if parents[j] < 0 else file_index[parents[j]] for j in order),
        offsets=np.where(np.asarray([parents[j] < 0 for j in order])[:, None], 0.0, bones[order] * scale),
        channels=(("Xposition", "Yposition", "Zposition") + rotation_channels,)
        + (rotation_channels,) * (n_joints - 1),
        frame_time=1.0 / fps,
        motion=np.concatenate(columns, axis=1),
        end_sites=tuple((file_index[j], tuple(float(v) for v in 0.5 * bones[j] * scale))
                        for j in order if not children[j]),
    )


def format_bvh(motion: BvhMotion, decimals: int = 6) -> str:
    """BVH text of ``motion`` (joints must be in depth-first file order, as :func:`parse_bvh` returns them)."""
    j = len(motion.joint_names)
    if sum(p < 0 for p in motion.parents) != 1 or _depth_first(motion.parents) != list(range(j)):
        raise ValueError(f"{motion.source}: joints are not in depth-first order from one root")
    n_channels = sum(len(c) for c in motion.channels)
    if motion.motion.ndim != 2 or motion.motion.shape[1] != n_channels or motion.num_frames < 1:
        raise ValueError(f"{motion.source}: motion has shape {motion.motion.shape}, expected (F>=1, {n_channels})")
    if not np.isfinite(motion.motion).all():
        raise ValueError(f"{motion.source}: motion contains non-finite values")
    children = _children(motion.parents)
    end_sites = dict(motion.end_sites)

    def number(x: float) -> str:
        text = f"{x:.{decimals}f}"
        return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.000000"

    lines = ["HIERARCHY"]

    def emit(k: int, depth: int) -> None:
        pad = "  " * depth
        lines.append(f"{pad}{'ROOT' if motion.parents[k] < 0 else 'JOINT'} {motion.joint_names[k]}")
        lines.append(f"{pad}{{")
        lines.append(f"{pad}  OFFSET {' '.join(number(v) for v in motion.offsets[k])}")
        if motion.channels[k]:
            lines.append(f"{pad}  CHANNELS {len(motion.channels[k])} {' '.join(motion.channels[k])}")
        for c in children[k]:
            emit(c, depth + 1)
        if not children[k]:
            tail = end_sites.get(k, (0.0, 0.0, 0.0))
            lines.extend([f"{pad}  End Site", f"{pad}  {{", f"{pad}    OFFSET {' '.join(number(v) for v in tail)}",
                          f"{pad}  }}"])
        lines.append(f"{pad}}}")

    emit(0, 0)
    lines += ["MOTION", f"Frames: {motion.num_frames}", f"Frame Time: {motion.frame_time:.{decimals}f}"]
    lines += [" ".join(number(v) for v in row) for row in motion.motion]
    return "\n".join(lines) + "\n"


def write_bvh(path: str | Path, motion: BvhMotion, decimals: int = 6) -> None:
    """Write ``motion`` to ``path`` (UTF-8 text, written to a temporary file first, then renamed)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(format_bvh(motion, decimals), encoding="utf-8")
    tmp.replace(path)
