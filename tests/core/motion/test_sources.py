"""Data sources and build_dataset: every bad input is a counted skip (or one clear error), sub-clips, mirrors,
deterministic stratified splits, train statistics, and the real HumanML3D / Bandai files when present."""

import shutil

import numpy as np
import pytest

from easytune.core.data.dataset import MotionSplit
from easytune.core.motion.captions import InputLimits, SkipLog
from easytune.core.motion.features import joints_to_features
from easytune.core.motion.skeleton import HUMANML3D, KIT
from easytune.core.motion.sources import (
    DataProcessingConfig,
    DataSourceError,
    HumanML3DSource,
    JointsFolderSource,
    LengthFilterConfig,
    SourceConfig,
    SplitConfig,
    build_dataset,
    ensure_source,
    open_source,
    resolve_root,
    stratified_split,
)
from easytune.core.motion.synthetic import ACTIONS, SyntheticConfig, generate_clip

LINE = "a person {}#a/X person/X#0.0#0.0\n"


def _good_joints(index: int, frames: int = 50) -> np.ndarray:
    """(frames, 22, 3) generated joints (-> frames - 1 feature frames)."""
    content = ["walk-forward", "squat", "raise-left-hand"][index % 3]
    return generate_clip(index, content, "normal", SyntheticConfig(seed=0, min_frames=frames - 1,
                                                                    max_frames=frames - 1)).joints


def _joints_folder(root, n_good=6, labels=True):
    (root / "joints").mkdir(parents=True)
    (root / "texts").mkdir()
    rows = ["id,content"]
    for i in range(n_good):
        np.save(root / "joints" / f"good{i}.npy", _good_joints(i))
        (root / "texts" / f"good{i}.txt").write_text(LINE.format(f"moves {i}") + "someone moves\n")
        rows.append(f"good{i},{['walk', 'squat', 'raise'][i % 3] if labels else ''}")
    (root / "index.csv").write_text("\n".join(rows) + "\n")
    return root


def _config(**split):
    return DataProcessingConfig(length=LengthFilterConfig(min_length=40, max_length=196),
                                split=SplitConfig(**{"train": 0.5, "val": 0.25, "test": 0.25, **split}))


def _add(root, name, array=None, text=None, raw=None, text_bytes=None):
    if raw is not None:
        (root / "joints" / f"{name}.npy").write_bytes(raw)
    elif array is not None:
        np.save(root / "joints" / f"{name}.npy", array)
    if text_bytes is not None:
        (root / "texts" / f"{name}.txt").write_bytes(text_bytes)
    elif text is not None:
        (root / "texts" / f"{name}.txt").write_text(text)


def test_every_bad_input_is_a_counted_skip(tmp_path, caplog):
    root = _joints_folder(tmp_path / "data")
    good = _good_joints(0)
    nan = good.copy()
    nan[5, 3, 1] = np.nan
    inf = good.copy()
    inf[7, 0, 0] = np.inf
    _add(root, "nan", nan, LINE.format("a"))
    _add(root, "inf", inf, LINE.format("b"))
    _add(root, "joints21", good[:, :21], LINE.format("c"))
    _add(root, "flat", good[:, 0, 0], LINE.format("d"))
    _add(root, "empty_motion", np.zeros((0, 22, 3), np.float32), LINE.format("e"))
    _add(root, "ints", np.zeros((50, 22, 3), np.int32), LINE.format("f"))
    _add(root, "corrupt", raw=b"\x93NUMPY garbage", text=LINE.format("g"))
    _add(root, "pickled", np.array([{"a": 1}], dtype=object), LINE.format("h"))
    _add(root, "no_text", good)
    _add(root, "empty_text", good, "\n\n")
    _add(root, "all_malformed", good, "bad#line\nx#y#one#2\n")
    _add(root, "some_malformed", good, "bad#line\n" + LINE.format("fine"))
    _add(root, "reversed", good, "x#y#2.0#1.0\n")
    _add(root, "latin1", good, text_bytes="\xe9t\xe9#x#0.0#0.0\n".encode("latin-1"))
    _add(root, "short", _good_joints(1, frames=30), LINE.format("short"))
    source = JointsFolderSource(root, HUMANML3D, SkipLog())
    built = build_dataset(source, _config(), fps=20.0)
    skipped = built.report["skipped"]
    assert skipped == {
        "bad_shape": 3, "empty_caption_file": 1, "malformed_caption_line": 4, "missing_text": 1,
        "no_valid_caption": 2, "non_finite": 2, "not_float": 1, "text_not_utf8": 1, "too_short": 1,
        "unreadable_npy": 2,
    }
    assert built.report["clips_found"] == 6 + 15
    assert built.report["clips_kept"] == 7  # 6 good + some_malformed
    assert "nan.npy" in caplog.text and "non_finite" in caplog.text and "short.npy" in caplog.text
    assert "some_malformed.txt:1" in caplog.text


def test_input_limits_bound_captions_labels_clip_length_and_file_sizes(tmp_path, caplog):
    """A 1 MB caption line, a huge label, an over-long clip and an over-large file: each a counted skip naming the
    file; the long caption's clip keeps its other caption, and the stored captions stay short."""
    root = _joints_folder(tmp_path / "data")
    good = _good_joints(0)
    _add(root, "long_caption", good, LINE.format("kicks") + "a person " + "x" * 1_000_000 + "#x#0.0#0.0\n")
    _add(root, "long_clip", _good_joints(1, frames=80), LINE.format("walks far"))
    _add(root, "big_file", np.zeros((100, 22, 3), np.float64) + good[:1], LINE.format("is big"))  # 52.9 kB
    with open(root / "index.csv", "a") as handle:
        handle.write("long_caption," + "L" * 500 + "\n")
    limits = InputLimits(max_caption_chars=200, max_label_chars=100, max_clip_frames=70,
                         max_motion_file_bytes=40_000)
    source = open_source(SourceConfig(kind="joints_folder", root=str(root)), HUMANML3D, SkipLog(), limits)
    with caplog.at_level("WARNING"):
        built = build_dataset(source, _config(), fps=20.0)
    skipped = built.report["skipped"]
    assert skipped == {"caption_too_long": 1, "clip_too_long": 1, "label_too_long": 1, "motion_file_too_large": 1}
    assert "long_caption.txt:2" in caplog.text and "long_clip.npy" in caplog.text and "big_file.npy" in caplog.text
    assert built.report["clips_kept"] == 7  # 6 good + long_caption (its first caption), unlabelled
    assert "a person kicks" in built.captions.tolist() and max(len(c) for c in built.captions) < 200
    assert built.report["input_limits"]["max_caption_chars"] == 200


def test_split_file_with_missing_id_and_ids_outside_split_files(tmp_path):
    root = _joints_folder(tmp_path / "data")
    (root / "train.txt").write_text("good0\ngood1\ngood2\nghost\n")
    (root / "val.txt").write_text("good3\n")
    (root / "test.txt").write_text("good4\n")
    built = build_dataset(JointsFolderSource(root, HUMANML3D, SkipLog()), _config(), fps=20.0)
    assert built.report["skipped"] == {"not_in_split_files": 1, "split_id_missing": 1}
    assert built.report["split_method"] == "split_files"
    assert sorted(built.splits["train"].ids) == ["good0", "good1", "good2"]
    assert list(built.splits["val"].ids) == ["good3"] and list(built.splits["test"].ids) == ["good4"]


def test_outputs_are_normalised_padded_and_index_the_captions(tmp_path):
    root = _joints_folder(tmp_path / "data", n_good=8)
    built = build_dataset(JointsFolderSource(root, HUMANML3D, SkipLog()), _config(), fps=20.0)
    train = built.splits["train"]
    assert isinstance(train, MotionSplit) and train.features.shape == (len(train), 49, 263)
    assert set(train.lengths.tolist()) == {49}  # 50 joint frames -> 49 feature frames
    raw = np.concatenate([joints_to_features(np.load(root / "joints" / f"{i}.npy"), HUMANML3D)
                          for i in train.ids])
    np.testing.assert_allclose(built.stats.mean, raw.mean(0), atol=1e-4)
    valid = train.features.reshape(-1, 263)
    np.testing.assert_allclose(valid.mean(0), 0.0, atol=1e-3)  # train is z-normalised with its own mean
    np.testing.assert_allclose(built.stats.denormalise(train.features[0]),
                               joints_to_features(np.load(root / "joints" / f"{train.ids[0]}.npy"), HUMANML3D),
                               atol=1e-4)
    for split in built.splits.values():
        for i in range(len(split)):
            texts = set(built.captions[split.captions_of(i)])
            assert texts == {f"a person moves {split.ids[i][4:]}", "someone moves"}
    assert built.report["unique_captions"] == len(built.captions) == 9
    assert built.report["captions"] == 16 and built.report["frames_total"] == 8 * 49
    assert sum(built.report["splits"].values()) == 8


def test_subclip_captions_become_their_own_samples(tmp_path):
    root = _joints_folder(tmp_path / "data", n_good=4)
    long = _good_joints(0, frames=120)
    _add(root, "multi", long, LINE.format("whole") + "first part#x#0.5#3.0\nsecond part#x#2.0#5.5\n"
         "also first#x#0.5#3.0\ntoo short part#x#0.0#1.0\nbeyond the end#x#9.0#12.0\n")
    (root / "index.csv").write_text((root / "index.csv").read_text() + "multi,walk\n")
    built = build_dataset(JointsFolderSource(root, HUMANML3D, SkipLog()),
                          _config(use_split_files=False, train=1.0, val=0.0, test=0.0, allow_empty_eval_splits=True),
                          fps=20.0)
    train = built.splits["train"]
    index = {sid: i for i, sid in enumerate(train.ids)}
    assert {"multi", "multi#10#60", "multi#40#110"} <= set(index)
    assert train.lengths[index["multi"]] == 119 and train.lengths[index["multi#10#60"]] == 50
    assert train.lengths[index["multi#40#110"]] == 70
    assert set(built.captions[train.captions_of(index["multi#10#60"])]) == {"first part", "also first"}
    assert built.report["skipped"] == {"subclip_out_of_range": 1, "too_short": 1}


def test_stratified_split_is_deterministic_proportional_and_keeps_mirrors_together():
    labels = {f"{i:04d}": ["walk", "run", "jump", "rare"][min(i % 7, 3)] for i in range(200)}
    labels.update({f"M{i:04d}": labels[f"{i:04d}"] for i in range(0, 200, 5)})
    config = SplitConfig(seed=3)
    a, b = stratified_split(labels, config), stratified_split(labels, config)
    assert a == b and a != stratified_split(labels, SplitConfig(seed=4))
    counts = {s: sum(v == s for v in a.values()) for s in ("train", "val", "test")}
    assert abs(counts["train"] - 0.8 * len(labels)) <= 2 and abs(counts["val"] - 0.1 * len(labels)) <= 2
    for label in ("walk", "run", "jump", "rare"):
        ids = [k for k, v in labels.items() if v == label]
        share = sum(a[k] == "train" for k in ids) / len(ids)
        assert 0.7 < share < 0.9, (label, share)
        assert all(any(a[k] == s for k in ids) for s in ("val", "test"))
    assert all(a[f"M{i:04d}"] == a[f"{i:04d}"] for i in range(0, 200, 5))


def test_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(DataSourceError, match="EASYTUNE_DATA_DIR is not set"):
        resolve_root("", "EASYTUNE_DATA_DIR")
    with pytest.raises(DataSourceError, match=r"'/no/such/dir' from EASYTUNE_DATA_DIR does not exist"):
        ensure_source(SourceConfig(kind="joints_folder", root="/no/such/dir", root_variable="EASYTUNE_DATA_DIR"), 20)
    (tmp_path / "nojoints").mkdir()
    with pytest.raises(DataSourceError, match="no joints/ folder"):
        open_source(SourceConfig(kind="joints_folder", root=str(tmp_path / "nojoints")), HUMANML3D, SkipLog())
    with pytest.raises(DataSourceError, match="neither new_joint_vecs/ nor new_joints/"):
        open_source(SourceConfig(kind="humanml3d", root=str(tmp_path / "nojoints")), HUMANML3D, SkipLog())
    root = _joints_folder(tmp_path / "short")
    for p in (root / "joints").iterdir():
        np.save(p, np.load(p)[:20])
    with pytest.raises(DataSourceError, match="no usable sample"):
        build_dataset(JointsFolderSource(root, HUMANML3D, SkipLog()), _config(), fps=20.0)
    root = _joints_folder(tmp_path / "twoclips", n_good=2)
    with pytest.raises(DataSourceError, match=r"split\(s\) \['test'\] are empty"):
        build_dataset(JointsFolderSource(root, HUMANML3D, SkipLog()), _config(train=0.5, val=0.5, test=0.0),
                      fps=20.0)
    (root / "val.txt").write_text("good0\ngood1\n")
    with pytest.raises(DataSourceError, match="train split is empty"):
        build_dataset(JointsFolderSource(root, HUMANML3D, SkipLog()), _config(allow_empty_eval_splits=True), 20.0)


def test_ensure_source_writes_the_embedded_folder(tmp_path):
    config = SourceConfig(kind="embedded", root=str(tmp_path / "emb"), embedded=SyntheticConfig(num_clips=16))
    info = ensure_source(config, fps=20.0)
    assert info == {"kind": "embedded", "root": str(tmp_path / "emb"), "generated": True}
    assert ensure_source(config, fps=20.0)["generated"] is False
    source = open_source(config, HUMANML3D, SkipLog())
    assert source.kind == "embedded" and len(source.clip_ids()) == 16
    assert source.retarget is False  # generated on the template skeleton: retargeting is a no-op
    clip = next(iter(source))
    joints = np.load(tmp_path / "emb" / "joints" / f"{clip.id}.npy")
    np.testing.assert_allclose(clip.features, joints_to_features(joints, HUMANML3D, retarget=True), atol=1e-5)
    assert open_source(SourceConfig(kind="joints_folder", root=str(tmp_path / "emb")), HUMANML3D,
                       SkipLog()).retarget is True
    assert set(source.labels.values()) <= set(ACTIONS)


@pytest.mark.needs_shared_data
def test_humanml3d_samples_fidelity_and_shipped_stats(humanml3d_samples):
    source = HumanML3DSource(humanml3d_samples, HUMANML3D, SkipLog(max_warnings=0))
    built = build_dataset(source, _config(allow_empty_eval_splits=True), fps=20.0)
    report = built.report
    assert report["clips_found"] == 6 and report["splits"] == {"train": 1, "val": 0, "test": 0}
    assert report["skipped"]["missing_text"] == 5 and report["skipped"]["split_id_missing"] == 29228 - 6
    fid = report["fidelity"]
    assert fid["clips"] == 6 and fid["recover_max_abs_err"] <= 1e-4
    assert max(fid["feature_mae"].values()) <= 0.03 and fid["contact_agreement"] >= 0.98
    assert report["shipped_stats_difference"]["std_ratio_median"] > 0
    np.testing.assert_allclose(built.stats.denormalise(built.splits["train"].features[0, :170]),
                               np.load(humanml3d_samples / "new_joint_vecs" / "012314.npy"), atol=1e-4)


@pytest.mark.needs_shared_data
def test_humanml3d_layout_with_float64_features_joints_only_and_mirrors(humanml3d_samples, tmp_path):
    root = tmp_path / "hml"
    for sub in ("new_joint_vecs", "new_joints", "texts"):
        (root / sub).mkdir(parents=True)
    early = humanml3d_samples / "early_format_000000"
    shutil.copy(early / "new_joint_vecs_000000.npy", root / "new_joint_vecs" / "000000.npy")  # float64
    shutil.copy(early / "new_joints_000000.npy", root / "new_joints" / "000000.npy")
    shutil.copy(humanml3d_samples / "new_joints" / "M010655.npy", root / "new_joints" / "M010655.npy")  # joints only
    shutil.copy(early / "texts_000000.txt", root / "texts" / "000000.txt")
    (root / "texts" / "M010655.txt").write_text(LINE.format("mirrored"))
    source = HumanML3DSource(root, HUMANML3D, SkipLog())
    assert np.load(root / "new_joint_vecs" / "000000.npy").dtype == np.float64
    built = build_dataset(source, _config(use_split_files=False, train=1.0, val=0.0, test=0.0,
                                          allow_empty_eval_splits=True), fps=20.0)
    train = built.splits["train"]
    assert sorted(train.ids) == ["000000", "M010655"] and train.features.dtype == np.float32
    assert built.report["fidelity"]["clips"] == 1 and built.report["skipped"] == {}


@pytest.mark.needs_shared_data
def test_bandai_subset_as_joints_folder(bandai_root, tmp_path):
    root = tmp_path / "bandai"
    (root / "joints").mkdir(parents=True)
    (root / "texts").mkdir()
    ids = sorted(p.stem for p in (bandai_root / "joints").glob("*.npy"))[::300][:8]
    for clip_id in ids:
        shutil.copy(bandai_root / "joints" / f"{clip_id}.npy", root / "joints")
        shutil.copy(bandai_root / "texts" / f"{clip_id}.txt", root / "texts")
    shutil.copy(bandai_root / "index.csv", root / "index.csv")
    built = build_dataset(JointsFolderSource(root, HUMANML3D, SkipLog()),
                          _config(train=0.6, val=0.2, test=0.2, allow_empty_eval_splits=True), fps=20.0)
    report = built.report
    assert report["clips_found"] == 8
    assert report["clips_kept"] + sum(report["skipped"].values()) >= 8
    assert all(label for label in report["labels"])  # content labels from index.csv
    assert report["source"] == "joints_folder" and report["feature_dim"] == 263


def test_kit_layout_251d_features_at_12_5_fps_and_cropping(tmp_path):
    root = tmp_path / "kit"
    for sub in ("new_joint_vecs", "texts"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, frames in enumerate([40, 60, 90, 250, 20, 45]):
        feats = rng.normal(size=(frames, KIT.feature_dim)).astype(np.float32)
        np.save(root / "new_joint_vecs" / f"{i:05d}.npy", feats)
        (root / "texts" / f"{i:05d}.txt").write_text(LINE.format(f"kit {i}") + "a sub part#x#0.8#2.8\n")
    np.save(root / "new_joint_vecs" / "bad.npy", rng.normal(size=(40, 263)).astype(np.float32))  # HumanML3D dims
    (root / "texts" / "bad.txt").write_text(LINE.format("bad"))
    config = DataProcessingConfig(length=LengthFilterConfig(min_length=24, max_length=196, crop_longer=True),
                                  split=SplitConfig(use_split_files=False, train=0.5, val=0.25, test=0.25))
    built = build_dataset(HumanML3DSource(root, KIT, SkipLog()), config, fps=12.5)
    assert built.report["feature_dim"] == 251 and built.stats.mean.shape == (251,)
    assert built.report["skipped"] == {"bad_shape": 1, "too_short": 2}  # 263-d file; the 20-frame clip + its part
    lengths = {sid: n for split in built.splits.values() for sid, n in zip(split.ids, split.lengths, strict=True)}
    assert lengths["00003"] == 196  # cropped, not skipped
    assert lengths["00000#10#35"] == 25  # 0.8 s .. 2.8 s at 12.5 fps
    assert "fidelity" not in built.report and "shipped_stats_difference" not in built.report
