"""Embedded default dataset: deterministic procedural motion on the HumanML3D template skeleton (20 fps).

Every clip is built kinematically, never from noise:

- pelvis, spine, head and arms by forward kinematics of joint angles (``G_j = G_parent(j) R_j``,
  ``p_j = p_parent(j) + G_parent(j) o_j`` with the template bone vectors ``o_j = HUMANML3D.template_offsets()``);
- each leg by analytic two-bone inverse kinematics from the hip to an ankle target (knee bending forward, foot
  perpendicular to the shin in the air, flat on the ground), so bone lengths stay exactly the template's;
- locomotion from a footstep plan: each foot alternates stance (planted on a footprint, zero velocity) and swing
  (arc to the next footprint) with one shared gait phase; the pelvis height follows the stance leg
  (inverted pendulum), so feet are grounded while in stance and the body bobs twice per stride;
- standing actions (raise / wave hands, squat, jump, kick) keep both feet planted except the moving one.

:func:`write_dataset` writes the joints-folder layout read by :class:`easytune.core.motion.sources.JointsFolderSource`:
``joints/<id>.npy`` (T, 22, 3) float32, ``texts/<id>.txt`` (2-3 paraphrased captions, HumanML3D line format) and
``index.csv`` (``id,content,style,frames``). Same config -> byte-identical files.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.ndimage import gaussian_filter1d

from easytune.core.infra.config import AT_LEAST_1, FRACTION, POSITIVE, SEED, Range
from easytune.core.motion.captions import format_caption_line
from easytune.core.motion.skeleton import HUMANML3D

GRAVITY = 9.81
ANKLE_HEIGHT = 0.06  # metres above the floor when the foot is planted
UP = np.array([0.0, 1.0, 0.0])

# content label -> caption templates (a style phrase is appended before the final full stop)
ACTIONS: dict[str, tuple[str, ...]] = {
    "walk-forward": ("a person walks forward", "someone walks straight ahead", "the person takes steps forward",
                     "a man walks forward in a straight line"),
    "walk-backward": ("a person walks backward", "someone steps backwards", "the person walks backwards",
                      "a man moves backward step by step"),
    "run": ("a person runs forward", "someone is running", "the person jogs ahead", "a man runs in a straight line"),
    "walk-turn-left": ("a person walks while turning left", "someone walks in a curve to the left",
                       "the person walks and turns to the left", "a man walks forward and gradually turns left"),
    "walk-turn-right": ("a person walks while turning right", "someone walks in a curve to the right",
                        "the person walks and turns to the right", "a man walks forward and gradually turns right"),
    "raise-left-hand": ("a person raises the left hand", "someone lifts their left arm up",
                        "the person puts the left hand up in the air", "a man raises his left arm"),
    "raise-right-hand": ("a person raises the right hand", "someone lifts their right arm up",
                         "the person puts the right hand up in the air", "a man raises his right arm"),
    "raise-both-hands": ("a person raises both hands", "someone lifts both arms up",
                         "the person puts both hands up in the air", "a man raises his arms above his head"),
    "wave-left-hand": ("a person waves the left hand", "someone waves with their left arm",
                       "the person raises the left hand and waves", "a man waves hello with his left hand"),
    "wave-right-hand": ("a person waves the right hand", "someone waves with their right arm",
                        "the person raises the right hand and waves", "a man waves hello with his right hand"),
    "wave-both-hands": ("a person waves both hands", "someone waves with both arms",
                        "the person raises both hands and waves", "a man waves both hands above his head"),
    "jump": ("a person jumps", "someone jumps up in place", "the person jumps into the air",
             "a man bends his knees and jumps"),
    "squat": ("a person squats", "someone squats down and stands back up", "the person does a squat",
              "a man bends his knees into a squat"),
    "kick-left": ("a person kicks with the left leg", "someone kicks forward with their left foot",
                  "the person does a kick with the left leg", "a man kicks with his left leg"),
    "kick-right": ("a person kicks with the right leg", "someone kicks forward with their right foot",
                   "the person does a kick with the right leg", "a man kicks with his right leg"),
}

# style -> (caption phrases, speed factor, amplitude factor, forward lean [rad])
STYLES: dict[str, tuple[tuple[str, ...], float, float, float]] = {
    "normal": (("",), 1.0, 1.0, 0.0),
    "slowly": (("slowly", "at a slow pace"), 0.62, 0.9, 0.0),
    "quickly": (("quickly", "fast", "at a quick pace"), 1.45, 1.0, 0.03),
    "tiredly": (("tiredly", "in a tired way", "as if exhausted"), 0.75, 0.65, 0.22),
    "energetically": (("energetically", "with a lot of energy", "in an energetic way"), 1.2, 1.35, 0.0),
}
STYLE_PROBS = {"normal": 0.4, "slowly": 0.15, "quickly": 0.15, "tiredly": 0.15, "energetically": 0.15}


@dataclass
class SyntheticConfig:
    """Embedded default dataset.

    Attributes:
        num_clips: number of clips (balanced over the 15 content labels).
        seed: generator seed (clip i uses ``default_rng([seed, i])``).
        min_frames, max_frames: range of most clip lengths in feature frames (frames at ``fps``; the joint
            arrays have one frame more, as features are one frame shorter than the positions).
        short_fraction: fraction of clips drawn shorter (``short_min_frames .. min_frames - 1``).
        short_min_frames: shortest clip (feature frames).
        fps: frame rate (the HumanML3D convention is 20).
    """

    num_clips: Annotated[int, AT_LEAST_1] = 2000
    seed: Annotated[int, SEED] = 0
    min_frames: Annotated[int, Range(ge=2)] = 40
    max_frames: Annotated[int, Range(ge=2)] = 196
    short_fraction: Annotated[float, FRACTION] = 0.03
    short_min_frames: Annotated[int, Range(ge=2)] = 24
    fps: Annotated[float, POSITIVE] = 20.0

    def __post_init__(self) -> None:
        if self.num_clips < 1:
            raise ValueError(f"num_clips must be >= 1, got {self.num_clips}")
        if not 2 <= self.short_min_frames <= self.min_frames <= self.max_frames:
            raise ValueError("need 2 <= short_min_frames <= min_frames <= max_frames")
        if not 0.0 <= self.short_fraction <= 1.0 or self.fps <= 0:
            raise ValueError("short_fraction must be in [0, 1] and fps > 0")


@dataclass
class SyntheticClip:
    """One generated clip: joints (T, 22, 3) float32 metres (Y up), captions, content label and style."""

    id: str
    joints: np.ndarray
    captions: list[str]
    content: str
    style: str


# ----------------------------------------------------------------------------------------------- rotations
def _rot(axis: str, angle: np.ndarray) -> np.ndarray:
    """(T,) angles -> (T, 3, 3) rotation matrices about a principal axis."""
    c, s = np.cos(angle), np.sin(angle)
    o, z = np.ones_like(c), np.zeros_like(c)
    rows = {
        "x": ((o, z, z), (z, c, -s), (z, s, c)),
        "y": ((c, z, s), (z, o, z), (-s, z, c)),
        "z": ((c, -s, z), (s, c, z), (z, z, o)),
    }[axis]
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)  # (T, 3, 3)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def _smooth_keys(times: list[float], values: list[float], t: np.ndarray) -> np.ndarray:
    """Shape-preserving interpolation of keyframes, held constant outside the key range."""
    return PchipInterpolator(np.asarray(times), np.asarray(values), extrapolate=False)(
        np.clip(t, times[0], times[-1]))


# --------------------------------------------------------------------------------------------- body state
class _Pose:
    """Per-frame control signals of one clip (all (T,) arrays unless noted)."""

    def __init__(self, t: np.ndarray, yaw0: float, origin: np.ndarray, stand_height: float):
        n = len(t)
        self.t = t
        self.root_xz = np.tile(origin, (n, 1))  # (T, 2)
        self.pelvis_y = np.full(n, stand_height)
        self.yaw = np.full(n, yaw0)
        self.pitch = np.zeros(n)  # whole-torso lean forward
        self.roll = np.zeros(n)
        self.spine_bend = np.zeros(n)
        self.spine_twist = np.zeros(n)
        self.head_pitch = np.zeros(n)
        # arms: index 0 = left, 1 = right
        self.flex = np.zeros((2, n))  # shoulder flexion (forward/up)
        self.abd = np.full((2, n), 0.12)  # shoulder abduction (sideways)
        self.elbow_flex = np.full((2, n), 0.2)
        self.elbow_side = np.zeros((2, n))  # elbow rotation in the frontal plane (waving)
        self.ankles: np.ndarray | None = None  # (2, T, 3) ankle targets, set by the motion

    def forward(self) -> np.ndarray:
        return np.stack([np.sin(self.yaw), np.zeros_like(self.yaw), np.cos(self.yaw)], axis=-1)  # (T, 3)

    def left(self) -> np.ndarray:
        return np.stack([np.cos(self.yaw), np.zeros_like(self.yaw), -np.sin(self.yaw)], axis=-1)  # (T, 3)


_LEGS = ((1, 4, 7, 10), (2, 5, 8, 11))  # (hip, knee, ankle, toe) left, right


def _leg_lengths() -> list[tuple[float, float, float]]:
    lengths = HUMANML3D.bone_lengths
    return [(lengths[k], lengths[a], lengths[f]) for _, k, a, f in _LEGS]


def standing_hip_height() -> float:
    """Hip height above the ankle when standing (knees just short of straight)."""
    return 0.985 * min(a + b for a, b, _ in _leg_lengths())


def _footprints_under_hips(pose: _Pose) -> np.ndarray:
    """(2, 3) ankle positions directly below the hips at frame 0."""
    left = pose.left()[0]
    out = []
    for hip, *_rest in _LEGS:
        offset = HUMANML3D.template_offsets()[hip][0]  # +x for the left hip, -x for the right
        xz = pose.root_xz[0]
        p = np.array([xz[0], ANKLE_HEIGHT, xz[1]]) + offset * left
        out.append(p)
    return np.stack(out)


def forward_kinematics(pose: _Pose) -> np.ndarray:
    """Joint positions (T, 22, 3): FK of the control angles, legs by two-bone IK onto ``pose.ankles``."""
    n = len(pose.t)
    offsets = HUMANML3D.template_offsets()  # (22, 3)
    parents = HUMANML3D.parents
    eye = np.broadcast_to(np.eye(3), (n, 3, 3))
    local = [eye] * HUMANML3D.num_joints
    local[0] = _rot("y", pose.yaw) @ _rot("x", pose.pitch) @ _rot("z", pose.roll)
    local[3] = _rot("x", 0.4 * pose.spine_bend)
    local[6] = _rot("x", 0.3 * pose.spine_bend) @ _rot("y", 0.5 * pose.spine_twist)
    local[9] = _rot("x", 0.3 * pose.spine_bend) @ _rot("y", 0.5 * pose.spine_twist)
    local[12] = _rot("x", 0.5 * pose.head_pitch)
    local[15] = _rot("x", 0.5 * pose.head_pitch)
    for side, (shoulder, elbow) in enumerate(((16, 18), (17, 19))):
        sign = 1.0 if side == 0 else -1.0  # left arm abducts towards +x
        local[shoulder] = _rot("z", sign * pose.abd[side]) @ _rot("x", -pose.flex[side])
        local[elbow] = _rot("z", sign * pose.elbow_side[side]) @ _rot("x", -pose.elbow_flex[side])
    glob = [None] * HUMANML3D.num_joints
    pos = np.zeros((n, HUMANML3D.num_joints, 3))
    pos[:, 0] = np.stack([pose.root_xz[:, 0], pose.pelvis_y, pose.root_xz[:, 1]], axis=-1)
    glob[0] = local[0]
    for j in range(1, HUMANML3D.num_joints):
        p = parents[j]
        glob[j] = glob[p] @ local[j]
        pos[:, j] = pos[:, p] + glob[p] @ offsets[j]  # (T, 3)
    forward = pose.forward()
    for side, (hip, knee, ankle, toe) in enumerate(_LEGS):
        thigh, shin, foot = _leg_lengths()[side]
        k, a, f = _two_bone_ik(pos[:, hip], pose.ankles[side], forward, thigh, shin, foot)
        pos[:, knee], pos[:, ankle], pos[:, toe] = k, a, f
    return pos


def _two_bone_ik(hip: np.ndarray, target: np.ndarray, forward: np.ndarray, thigh: float, shin: float,
                 foot: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Knee, ankle, toe (each (T, 3)) reaching ``target`` from ``hip`` with exact bone lengths.

    The knee bends towards ``forward`` (projected perpendicular to the leg); an unreachable target is pulled
    onto the reachable sphere. The foot is flat (along ``forward``) on the ground and perpendicular to the shin
    in the air.
    """
    d = target - hip  # (T, 3)
    dist = np.linalg.norm(d, axis=-1)
    u = d / np.maximum(dist, 1e-9)[:, None]
    dist = np.clip(dist, abs(thigh - shin) + 1e-3, 0.999 * (thigh + shin))
    ankle = hip + u * dist[:, None]
    cos_a = np.clip((thigh**2 + dist**2 - shin**2) / (2 * thigh * dist), -1.0, 1.0)
    bend = forward - np.sum(forward * u, axis=-1, keepdims=True) * u
    bend_norm = np.linalg.norm(bend, axis=-1, keepdims=True)
    bend = np.where(bend_norm > 1e-6, bend / np.maximum(bend_norm, 1e-9), UP)
    knee = hip + thigh * (cos_a[:, None] * u + np.sqrt(1.0 - cos_a**2)[:, None] * bend)
    shin_dir = _unit(ankle - knee)
    free = _unit(forward - np.sum(forward * shin_dir, axis=-1, keepdims=True) * shin_dir)
    w = np.clip((ankle[:, 1] - ANKLE_HEIGHT) / 0.08, 0.0, 1.0)[:, None]
    toe = ankle + foot * _unit((1.0 - w) * forward + w * free)
    return knee, ankle, toe


# ------------------------------------------------------------------------------------------- locomotion
def _path(t: np.ndarray, origin: np.ndarray, yaw0: float, speed: float, turn_rate: float):
    """Root XZ (len(t), 2) and yaw (len(t),) moving at ``speed`` (m/s, negative = backwards) while turning."""
    yaw = yaw0 + turn_rate * t
    if abs(turn_rate) < 1e-8:
        x = origin[0] + speed * t * np.sin(yaw0)
        z = origin[1] + speed * t * np.cos(yaw0)
    else:
        x = origin[0] + speed / turn_rate * (np.cos(yaw0) - np.cos(yaw))
        z = origin[1] + speed / turn_rate * (np.sin(yaw) - np.sin(yaw0))
    return np.stack([x, z], axis=-1), yaw


def _locomotion(pose: _Pose, rng: np.random.Generator, speed: float, cadence: float, stance: float,
                turn_rate: float, clearance: float, reach: float, arm_amp: float, elbow: float) -> None:
    """Footstep-planned gait: ``cadence`` steps/s, ``stance`` fraction of the stride on the ground."""
    t = pose.t
    period = 2.0 / cadence  # one stride = two steps
    duration = stance * period
    t0 = rng.uniform(0.0, period)  # gait phase at the first frame
    origin, yaw0 = pose.root_xz[0], pose.yaw[0]
    pose.root_xz, pose.yaw = _path(t, origin, yaw0, speed, turn_rate)
    hip_offsets = [HUMANML3D.template_offsets()[h][0] for h, *_ in _LEGS]
    ankles = np.zeros((2, len(t), 3))
    stance_height = np.full((2, len(t)), np.nan)
    leg_reach = reach * min(a + b for a, b, _ in _leg_lengths())
    for side in range(2):
        first = t0 + side * period / 2.0
        k_lo = int(np.floor((t[0] - first) / period)) - 1
        k_hi = int(np.ceil((t[-1] - first) / period)) + 1
        centres = first + period * np.arange(k_lo, k_hi + 1)  # mid-stance times
        xz, yaw = _path(centres, origin, yaw0, speed, turn_rate)
        lateral = np.stack([np.cos(yaw), -np.sin(yaw)], axis=-1) * (hip_offsets[side] + 0.01)
        prints = xz + lateral  # (K, 2)
        for i, ti in enumerate(t):
            k = int(np.floor((ti - centres[0] + duration / 2.0) / period))
            k = min(max(k, 0), len(centres) - 2)
            start_k = centres[k] - duration / 2.0
            if ti <= start_k + duration:  # stance on footprint k
                ankles[side, i] = (prints[k, 0], ANKLE_HEIGHT, prints[k, 1])
                hip_xz = pose.root_xz[i] + (np.array([np.cos(pose.yaw[i]), -np.sin(pose.yaw[i])])
                                            * hip_offsets[side])
                horiz = np.linalg.norm(prints[k] - hip_xz)
                stance_height[side, i] = np.sqrt(max(leg_reach**2 - horiz**2, 0.25 * leg_reach**2))
            else:  # swing from footprint k to k + 1
                u = (ti - start_k - duration) / (period - duration)
                s = u * u * (3 - 2 * u)
                xz_i = (1 - s) * prints[k] + s * prints[k + 1]
                ankles[side, i] = (xz_i[0], ANKLE_HEIGHT + clearance * np.sin(np.pi * u), xz_i[1])
    height = np.where(np.isnan(stance_height), np.inf, stance_height).min(axis=0)  # the lower leg decides
    height[np.isinf(height)] = np.nan  # flight (running): no foot on the ground
    valid = np.isfinite(height)
    if not valid.any():
        height = np.full(len(t), leg_reach * 0.95)
    else:  # flight phases: interpolate between stance heights plus a ballistic bump
        height = np.interp(t, t[valid], height[valid])
    pose.pelvis_y = ANKLE_HEIGHT + gaussian_filter1d(height, 1.0, mode="nearest")
    pose.ankles = ankles
    # arms swing against the legs, one swing per stride
    phase = 2 * np.pi * (t - t0 + duration / 2.0) / period
    pose.flex[0] = arm_amp * np.cos(phase - np.pi)
    pose.flex[1] = arm_amp * np.cos(phase)
    pose.elbow_flex = elbow + 0.4 * np.clip(pose.flex, 0.0, None)  # the forward arm bends more
    pose.spine_twist = 0.15 * arm_amp * np.cos(phase)


# ------------------------------------------------------------------------------------- standing actions
def _repetitions(t: np.ndarray, cycle: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split the clip into repetitions of about ``cycle`` seconds: (rep index, phase u in [0, 1)) per frame."""
    step = float(t[1] - t[0]) if len(t) > 1 else 0.05
    total = float(t[-1] - t[0]) + step
    reps = max(1, int(round(total / cycle)))
    lead = rng.uniform(0.0, 0.12) * total
    span = (total - lead) / reps
    rel = np.clip((t - t[0] - lead) / span, 0.0, reps - 1e-9)
    return np.floor(rel), rel - np.floor(rel)


def _envelope(u: np.ndarray, rise: float, hold: float, fall: float) -> np.ndarray:
    """0 -> 1 -> 0 over one repetition with smooth ramps (fractions of the repetition)."""
    return _smooth_keys([0.0, rise, rise + hold, min(rise + hold + fall, 1.0)], [0.0, 1.0, 1.0, 0.0], u)


def _idle(pose: _Pose, rng: np.random.Generator) -> None:
    """Standing: feet planted under the hips, small breathing sway of the pelvis."""
    prints = _footprints_under_hips(pose)
    pose.ankles = np.repeat(prints[:, None, :], len(pose.t), axis=1)
    sway = 0.008 * np.sin(2 * np.pi * 0.3 * pose.t + rng.uniform(0, 2 * np.pi))
    pose.root_xz = pose.root_xz + sway[:, None] * pose.left()[:, [0, 2]]
    pose.pelvis_y = pose.pelvis_y - 0.005 * (1 + np.sin(2 * np.pi * 0.25 * pose.t))


def _raise(pose: _Pose, rng, sides: tuple[int, ...], speed: float, amp: float) -> None:
    _idle(pose, rng)
    _, u = _repetitions(pose.t, rng.uniform(2.5, 4.5) / speed, rng)
    env = _envelope(u, 0.25, 0.4, 0.25)
    top = min(np.pi * 0.93, rng.uniform(2.5, 2.9) * float(np.clip(amp, 0.85, 1.1)))
    for s in sides:
        pose.flex[s] = top * env
        pose.abd[s] = 0.12 + 0.15 * env
        pose.elbow_flex[s] = 0.2 + 0.1 * env


def _wave(pose: _Pose, rng, sides: tuple[int, ...], speed: float, amp: float) -> None:
    _idle(pose, rng)
    _, u = _repetitions(pose.t, rng.uniform(3.0, 6.0) / speed, rng)
    env = _envelope(u, 0.18, 0.62, 0.18)
    freq = rng.uniform(1.5, 2.2) * speed
    wave = 0.45 * min(amp, 1.3) * np.sin(2 * np.pi * freq * pose.t)
    for s in sides:
        pose.abd[s] = 0.12 + 1.6 * env
        pose.flex[s] = 0.35 * env
        pose.elbow_side[s] = (1.3 + wave) * env
        pose.elbow_flex[s] = 0.2 * (1 - env)


def _squat(pose: _Pose, rng, speed: float, amp: float) -> None:
    _idle(pose, rng)
    _, u = _repetitions(pose.t, rng.uniform(2.2, 3.5) / speed, rng)
    env = _envelope(u, 0.4, 0.15, 0.4)
    depth = rng.uniform(0.28, 0.42) * min(amp, 1.15)
    pose.pelvis_y = pose.pelvis_y - depth * env
    pose.root_xz = pose.root_xz - (0.12 * env)[:, None] * pose.forward()[:, [0, 2]]
    pose.spine_bend = pose.spine_bend + 0.6 * env
    pose.pitch = pose.pitch + 0.2 * env
    pose.flex[:] = 1.3 * env
    pose.head_pitch = pose.head_pitch - 0.4 * env


def _jump(pose: _Pose, rng, speed: float, amp: float) -> None:
    _idle(pose, rng)
    stand = pose.pelvis_y.copy()
    apex = rng.uniform(0.12, 0.3) * min(amp, 1.3)
    flight = 2.0 * np.sqrt(2.0 * apex / GRAVITY)
    crouch, land = rng.uniform(0.35, 0.55) / speed, rng.uniform(0.3, 0.5) / speed
    cycle = crouch + flight + land + rng.uniform(0.4, 1.2)
    _, u = _repetitions(pose.t, cycle, rng)
    tau = u * cycle  # seconds into the repetition (each repetition holds one whole crouch-flight-landing)
    lift = np.zeros_like(tau)
    dip = np.zeros_like(tau)
    in_crouch = tau < crouch
    dip[in_crouch] = 0.18 * np.sin(np.pi * tau[in_crouch] / crouch) ** 2
    fly = (tau >= crouch) & (tau < crouch + flight)
    tf = tau[fly] - crouch
    lift[fly] = np.sqrt(2 * GRAVITY * apex) * tf - 0.5 * GRAVITY * tf**2
    after = (tau >= crouch + flight) & (tau < crouch + flight + land)
    dip[after] = 0.15 * np.sin(np.pi * (tau[after] - crouch - flight) / land) ** 2
    pose.pelvis_y = stand - dip + lift
    pose.ankles[:, :, 1] += lift[None, :] + 0.08 * np.sin(np.pi * np.clip(
        (tau - crouch) / flight, 0, 1))[None, :] * fly[None, :]
    arms = np.where(in_crouch, -0.5 * np.sin(np.pi * tau / crouch), 0.0) + np.where(fly, 1.2 * np.sin(
        np.pi * np.clip((tau - crouch) / flight, 0, 1)), 0.0)
    pose.flex[:] = arms
    pose.spine_bend = pose.spine_bend + 2.0 * dip


def _kick(pose: _Pose, rng, side: int, speed: float, amp: float) -> None:
    _idle(pose, rng)
    _, u = _repetitions(pose.t, rng.uniform(1.8, 3.0) / speed, rng)
    top = rng.uniform(0.9, 1.35) * min(amp, 1.2)
    keys = [0.0, 0.15, 0.3, 0.45, 0.6, 0.75, 1.0]
    angle = _smooth_keys(keys, [0.0, 0.0, -0.3, top, 0.25, 0.0, 0.0], u)
    leg = sum(_leg_lengths()[side][:2])
    rest = standing_hip_height()
    length = _smooth_keys(keys, [rest, rest, 0.8 * leg, 0.97 * leg, 0.75 * leg, rest, rest], u)
    forward = pose.forward()
    direction = np.cos(angle)[:, None] * -UP + np.sin(angle)[:, None] * forward  # (T, 3) hip -> ankle
    target = pose.ankles[side] + length[:, None] * direction - rest * -UP  # = the footprint when at rest
    target[:, 1] = np.maximum(target[:, 1], ANKLE_HEIGHT)
    pose.ankles[side] = target
    active = np.clip(np.abs(angle) / max(top, 1e-3), 0, 1)
    pose.abd[:] = 0.12 + 0.35 * active
    pose.pitch = pose.pitch - 0.15 * np.clip(angle, 0, None)
    shift = 0.04 * active * (-1.0 if side == 0 else 1.0)  # weight onto the standing leg
    pose.root_xz = pose.root_xz + shift[:, None] * pose.left()[:, [0, 2]]


# ------------------------------------------------------------------------------------------ generation
def _clip_length(rng: np.random.Generator, config: SyntheticConfig) -> int:
    """Joint frames of a clip (= feature frames + 1)."""
    if config.short_fraction > 0 and rng.random() < config.short_fraction and config.short_min_frames < \
            config.min_frames:
        return int(rng.integers(config.short_min_frames, config.min_frames)) + 1
    return int(rng.integers(config.min_frames, config.max_frames + 1)) + 1


def generate_clip(index: int, content: str, style: str, config: SyntheticConfig) -> SyntheticClip:
    """Clip ``index`` of the dataset (deterministic in ``(config.seed, index)``)."""
    rng = np.random.default_rng([config.seed, index])
    n = _clip_length(rng, config)
    t = np.arange(n) / config.fps
    _, speed, amp, lean = STYLES[style]
    amp *= rng.uniform(0.9, 1.1)
    pose = _Pose(t, yaw0=rng.uniform(-np.pi, np.pi), origin=rng.uniform(-1.0, 1.0, size=2),
                 stand_height=ANKLE_HEIGHT + standing_hip_height())
    pose.pitch = pose.pitch + lean
    pose.head_pitch = pose.head_pitch - 1.2 * lean
    if content in ("walk-forward", "walk-backward", "walk-turn-left", "walk-turn-right"):
        v = rng.uniform(0.8, 1.0) * speed * (-0.75 if content == "walk-backward" else 1.0)
        total_turn = rng.uniform(0.5, 1.1) * np.pi  # 90..200 degrees over the clip, at most 1.2 rad/s
        turn = {"walk-turn-left": 1.0, "walk-turn-right": -1.0}.get(content, 0.0) * min(total_turn / t[-1], 1.2)
        _locomotion(pose, rng, speed=v, cadence=rng.uniform(1.6, 1.9) * np.sqrt(speed), stance=0.6,
                    turn_rate=turn, clearance=0.08 * amp, reach=0.985, arm_amp=0.35 * amp,
                    elbow=0.25)
    elif content == "run":
        _locomotion(pose, rng, speed=rng.uniform(2.4, 3.0) * speed, cadence=rng.uniform(2.6, 3.0) * np.sqrt(speed),
                    stance=0.38, turn_rate=0.0, clearance=0.18 * amp, reach=0.94, arm_amp=0.6 * amp, elbow=1.3)
        pose.pitch = pose.pitch + 0.12
    elif content.startswith("raise-"):
        _raise(pose, rng, {"left": (0,), "right": (1,), "both": (0, 1)}[content.split("-")[1]], speed, amp)
    elif content.startswith("wave-"):
        _wave(pose, rng, {"left": (0,), "right": (1,), "both": (0, 1)}[content.split("-")[1]], speed, amp)
    elif content == "squat":
        _squat(pose, rng, speed, amp)
    elif content == "jump":
        _jump(pose, rng, speed, amp)
    elif content.startswith("kick-"):
        _kick(pose, rng, 0 if content == "kick-left" else 1, speed, amp)
    else:
        raise ValueError(f"unknown content {content!r}; known: {sorted(ACTIONS)}")
    joints = forward_kinematics(pose)
    joints[..., 1] -= joints[..., 1].min() - 0.0  # floor at y = 0 (feet on the ground)
    phrases = STYLES[style][0]
    n_caps = int(rng.integers(2, 4))
    templates = rng.permutation(len(ACTIONS[content]))[:n_caps]
    captions = []
    for k in templates:
        phrase = phrases[int(rng.integers(len(phrases)))]
        captions.append(ACTIONS[content][k] + (f" {phrase}" if phrase else "") + ".")
    return SyntheticClip(f"synthetic_{index:05d}", joints.astype(np.float32), captions, content, style)


def clip_plan(config: SyntheticConfig) -> list[tuple[str, str]]:
    """(content, style) of every clip: contents balanced over :data:`ACTIONS`, styles drawn from ``STYLE_PROBS``."""
    rng = np.random.default_rng([config.seed, 2**31 - 1])
    contents = sorted(ACTIONS)
    order = rng.permutation(config.num_clips)
    styles = list(STYLE_PROBS)
    probs = np.array([STYLE_PROBS[s] for s in styles])
    drawn = rng.choice(len(styles), size=config.num_clips, p=probs / probs.sum())
    return [(contents[int(order[i]) % len(contents)], styles[int(drawn[i])]) for i in range(config.num_clips)]


def generate_dataset(config: SyntheticConfig):
    """Yield every :class:`SyntheticClip` in id order."""
    for i, (content, style) in enumerate(clip_plan(config)):
        yield generate_clip(i, content, style, config)


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


MANIFEST = "generator.json"


def write_dataset(root: str | Path, config: SyntheticConfig, progress: bool | None = None) -> dict:
    """Write the joints-folder layout to ``root`` (atomically: a temporary folder renamed into place).

    Returns the manifest ``{"generator": ..., "config": {...}, "clips": N}`` also stored as ``generator.json``.
    An existing folder is replaced only when it carries a manifest of this generator (never a user's data).
    """
    from tqdm.auto import tqdm

    root = Path(root)
    manifest = {"generator": "easytune.core.motion.synthetic", "version": 1, "config": asdict(config),
                "clips": config.num_clips}
    tmp = root.with_name(root.name + f".tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "joints").mkdir(parents=True)
    (tmp / "texts").mkdir()
    rows = ["id,content,style,frames"]
    for clip in tqdm(generate_dataset(config), total=config.num_clips, desc="embedded dataset", disable=progress
                     if progress is None else not progress):
        (tmp / "joints" / f"{clip.id}.npy").write_bytes(_npy_bytes(clip.joints))
        lines = [format_caption_line(c) for c in clip.captions]
        (tmp / "texts" / f"{clip.id}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        rows.append(f"{clip.id},{clip.content},{clip.style},{len(clip.joints)}")
    (tmp / "index.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    if root.exists():
        if read_manifest(root) is None:
            shutil.rmtree(tmp)
            raise FileExistsError(f"{root}: exists and is not a generated embedded dataset; refusing to replace it")
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(root)
    return manifest


def read_manifest(root: str | Path) -> dict | None:
    """The generator manifest of a folder written by :func:`write_dataset`, or None."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("generator") == "easytune.core.motion.synthetic" else None


def ensure_dataset(root: str | Path, config: SyntheticConfig) -> tuple[dict, bool]:
    """Write the embedded dataset to ``root`` unless a folder generated with the same config is there.

    Returns ``(manifest, generated_now)``.
    """
    existing = read_manifest(root)
    if existing is not None and existing.get("config") == asdict(config) and existing.get("version") == 1 \
            and (Path(root) / "index.csv").is_file():
        return existing, False
    return write_dataset(root, config), True
