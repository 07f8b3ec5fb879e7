"""The embedded procedural dataset: deterministic bytes, constant bone lengths, grounded feet, a consistent gait,
the required vocabulary, and features that the data pipeline can compute."""

import csv
import filecmp
import time

import numpy as np
import pytest

from easytune.core.motion.captions import parse_caption_line
from easytune.core.motion.features import joints_to_features
from easytune.core.motion.skeleton import HUMANML3D
from easytune.core.motion.synthetic import (
    ACTIONS,
    STYLES,
    SyntheticConfig,
    clip_plan,
    ensure_dataset,
    generate_clip,
    read_manifest,
    write_dataset,
)

PARENTS = np.array(HUMANML3D.parents[1:])
TEMPLATE = np.array(HUMANML3D.bone_lengths[1:])
FEET = [7, 10, 8, 11]  # left ankle, left toe, right ankle, right toe


def _clip(content, style="normal", index=3, **overrides):
    return generate_clip(index, content, style, SyntheticConfig(seed=11, **overrides))


def _foot_speed(joints):
    """(T-1, 4) per-frame displacement (m) of the ankle and toe joints."""
    return np.linalg.norm(np.diff(joints[:, FEET].astype(np.float64), axis=0), axis=-1)


def test_required_vocabulary_and_styles():
    required = {"walk-forward", "walk-backward", "run", "walk-turn-left", "walk-turn-right", "raise-left-hand",
                "raise-right-hand", "raise-both-hands", "wave-left-hand", "wave-right-hand", "wave-both-hands",
                "jump", "squat", "kick-left", "kick-right"}
    assert required <= set(ACTIONS)
    assert {"slowly", "quickly", "tiredly", "energetically"} <= set(STYLES)
    plan = clip_plan(SyntheticConfig(num_clips=150, seed=1))
    counts = {c: sum(p[0] == c for p in plan) for c in ACTIONS}
    assert set(counts.values()) == {10}  # balanced over the labels


@pytest.mark.parametrize("content", sorted(ACTIONS))
def test_bone_lengths_are_the_template_and_feet_touch_the_floor(content):
    clip = _clip(content, "energetically")
    joints = clip.joints.astype(np.float64)
    assert joints.shape[1:] == (22, 3) and joints.dtype == np.float64 and clip.joints.dtype == np.float32
    lengths = np.linalg.norm(joints[:, 1:] - joints[:, PARENTS], axis=-1)  # (T, 21)
    np.testing.assert_allclose(lengths, np.broadcast_to(TEMPLATE, lengths.shape), atol=2e-5)
    assert abs(joints[..., 1].min()) < 1e-6  # floor at y = 0
    assert joints[:, FEET, 1].min(axis=1).max() < 0.5 or content == "jump"
    assert 2 <= len(clip.captions) <= 3 and len(set(clip.captions)) == len(clip.captions)
    assert all(c.endswith(".") for c in clip.captions)


@pytest.mark.parametrize("content", ["raise-both-hands", "wave-left-hand", "squat"])
def test_standing_actions_keep_both_feet_planted(content):
    speed = _foot_speed(_clip(content).joints)
    assert speed.max() < 1e-4  # both feet still for the whole clip
    hands = np.linalg.norm(np.diff(_clip(content).joints[:, [20, 21]], axis=0), axis=-1)
    assert hands.max() > 0.01  # ... while the body moves


def test_kick_moves_only_the_kicking_foot():
    speed = _foot_speed(_clip("kick-left", index=5).joints)
    assert speed[:, 2:].max() < 1e-4 and speed[:, :2].max() > 0.05


def test_gait_always_has_a_planted_foot_and_alternates():
    joints = _clip("walk-forward", index=8, min_frames=120).joints
    ankles = np.linalg.norm(np.diff(joints[:, [7, 8]].astype(np.float64), axis=0), axis=-1)  # (T-1, 2)
    planted = ankles < 1e-3
    assert planted.any(axis=1).mean() > 0.95  # walking: one foot on the ground at (almost) every frame
    assert planted[:, 0].mean() > 0.4 and planted[:, 1].mean() > 0.4  # both feet take turns
    assert not planted.all(axis=1).all()
    travel = np.linalg.norm(joints[-1, 0, [0, 2]] - joints[0, 0, [0, 2]])
    assert travel > 0.5 * (len(joints) / 20.0)  # moves at >= 0.5 m/s
    run = _clip("run", index=8, min_frames=120).joints
    flight = (np.linalg.norm(np.diff(run[:, [7, 8]].astype(np.float64), axis=0), axis=-1) > 1e-3).all(axis=1)
    assert flight.mean() > 0.05  # running has flight phases


def test_turning_and_backward_walks_go_where_the_caption_says():
    def facing(j):
        across = (j[:, 2] - j[:, 1]) + (j[:, 17] - j[:, 16])  # right minus left
        fwd = np.cross([0.0, 1.0, 0.0], across)
        return np.arctan2(fwd[:, 0], fwd[:, 2])

    left = _clip("walk-turn-left", index=4, min_frames=100).joints.astype(np.float64)
    right = _clip("walk-turn-right", index=4, min_frames=100).joints.astype(np.float64)
    turn_l = np.unwrap(facing(left))
    turn_r = np.unwrap(facing(right))
    assert turn_l[-1] - turn_l[0] > np.radians(45) and turn_r[-1] - turn_r[0] < -np.radians(45)
    back = _clip("walk-backward", index=4, min_frames=100).joints.astype(np.float64)
    yaw0 = facing(back)[0]
    step = back[-1, 0] - back[0, 0]
    assert step[0] * np.sin(yaw0) + step[2] * np.cos(yaw0) < -0.5  # displacement against the facing


def test_raised_and_waving_hands_go_above_the_head():
    raised = _clip("raise-right-hand", index=2).joints
    assert (raised[:, 21, 1] > raised[:, 15, 1]).any() and not (raised[:, 20, 1] > raised[:, 15, 1]).any()
    wave = _clip("wave-left-hand", index=2, min_frames=80).joints
    up = wave[:, 20, 1] > wave[:, 15, 1] - 0.1
    assert up.mean() > 0.3
    lateral = wave[up, 20] - wave[up, 18]  # forearm swings: the wrist moves relative to the elbow
    assert np.ptp(lateral[:, 0]) + np.ptp(lateral[:, 2]) > 0.05


def test_jump_leaves_the_ground_and_squat_goes_down():
    jump = _clip("jump", index=6, min_frames=80).joints
    assert jump[:, FEET, 1].min(axis=1).max() > 0.1
    squat = _clip("squat", index=6, min_frames=80).joints
    assert squat[:, 0, 1].max() - squat[:, 0, 1].min() > 0.2


def test_features_are_computable_with_contacts():
    feats = joints_to_features(_clip("walk-forward", index=1).joints, HUMANML3D)
    assert np.isfinite(feats).all() and feats.shape[1] == 263
    contacts = feats[:, HUMANML3D.feature_slices()["contacts"]]
    assert 0.2 < contacts.mean() < 0.9


def test_lengths_in_range_with_a_few_short_ones():
    config = SyntheticConfig(num_clips=300, seed=2, short_fraction=0.05)
    lengths = np.array([generate_clip(i, c, s, config).joints.shape[0] for i, (c, s) in
                        enumerate(clip_plan(config))])
    features = lengths - 1  # features are one frame shorter than the joints
    assert features.max() <= 196 and features.min() >= 24 and features.max() > 180
    assert 0 < (features < 40).mean() < 0.12


def test_write_is_byte_identical_and_fast(tmp_path):
    config = SyntheticConfig(num_clips=40, seed=5)
    start = time.perf_counter()
    write_dataset(tmp_path / "a", config)
    assert time.perf_counter() - start < 10.0
    write_dataset(tmp_path / "b", config)
    cmp = filecmp.dircmp(tmp_path / "a", tmp_path / "b")
    assert not cmp.diff_files and not cmp.left_only
    for sub in ("joints", "texts"):
        names = sorted(p.name for p in (tmp_path / "a" / sub).iterdir())
        assert len(names) == 40
        _, mismatch, errors = filecmp.cmpfiles(tmp_path / "a" / sub, tmp_path / "b" / sub, names, shallow=False)
        assert not mismatch and not errors
    other = tmp_path / "c"
    write_dataset(other, SyntheticConfig(num_clips=40, seed=6))
    assert (other / "joints" / "synthetic_00000.npy").read_bytes() != (
        tmp_path / "a" / "joints" / "synthetic_00000.npy").read_bytes()
    rows = list(csv.DictReader((tmp_path / "a" / "index.csv").open()))
    assert len(rows) == 40 and set(rows[0]) == {"id", "content", "style", "frames"}
    joints = np.load(tmp_path / "a" / "joints" / f"{rows[0]['id']}.npy", allow_pickle=False)
    assert joints.shape == (int(rows[0]["frames"]), 22, 3)
    for line in (tmp_path / "a" / "texts" / f"{rows[0]['id']}.txt").read_text().splitlines():
        cap = parse_caption_line(line)  # HumanML3D line format
        assert cap.whole_clip and line.count("#") == 3 and "/X" in cap.tokens


def test_ensure_reuses_same_config_and_never_replaces_user_data(tmp_path):
    config = SyntheticConfig(num_clips=5, seed=1)
    _, generated = ensure_dataset(tmp_path / "emb", config)
    assert generated and read_manifest(tmp_path / "emb")["clips"] == 5
    assert ensure_dataset(tmp_path / "emb", config)[1] is False
    assert ensure_dataset(tmp_path / "emb", SyntheticConfig(num_clips=6, seed=1))[1] is True
    user = tmp_path / "user"
    (user / "joints").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="refusing"):
        ensure_dataset(user, config)
    assert (user / "joints").is_dir()


def test_config_validation():
    with pytest.raises(ValueError):
        SyntheticConfig(num_clips=0)
    with pytest.raises(ValueError):
        SyntheticConfig(min_frames=50, max_frames=40)
