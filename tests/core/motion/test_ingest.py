"""Folder-level BVH ingest (#27): unique clip ids per source path, and every bad file a counted, logged skip."""

import logging

import numpy as np
import pytest

from easytune.core.motion.bvh import BvhError, format_bvh, joints_to_bvh, parse_bvh, read_bvh
from easytune.core.motion.ingest import BvhIngestConfig, ingest_bvh_files
from easytune.core.motion.skeleton import HUMANML3D


def _clip_text(shift: float, frames: int = 3) -> str:
    """A small valid BVH of the 22 HumanML3D joints (T-pose, root moving along X by ``shift`` per frame)."""
    pose = np.zeros((22, 3))
    offsets = HUMANML3D.template_offsets()
    for j, p in enumerate(HUMANML3D.parents):
        pose[j] = 0.0 if p < 0 else pose[p] + offsets[j]
    pose[:, 1] -= pose[:, 1].min()
    joints = np.stack([pose + [shift * t, 0.0, 0.0] for t in range(frames)])
    return format_bvh(joints_to_bvh(joints, offsets="template"))


def _nested(depth: int) -> str:
    opening = "".join(f"JOINT j{k}\n{{\nOFFSET 0 0 1\nCHANNELS 3 Zrotation Xrotation Yrotation\n"
                      for k in range(depth))
    return ("HIERARCHY\nROOT r\n{\nOFFSET 0 0 0\nCHANNELS 3 Zrotation Xrotation Yrotation\n" + opening
            + "End Site\n{\nOFFSET 0 0 1\n}\n" + "}\n" * (depth + 1)
            + f"MOTION\nFrames: 1\nFrame Time: 0.05\n{' '.join(['0'] * 3 * (depth + 1))}\n")


CONFIG = BvhIngestConfig(mapping="hml22", write_captions=False)


def test_same_named_files_in_two_folders_become_two_clips(tmp_path):
    """a/walk.bvh and b/walk.bvh used to give one joints/walk.npy and two identical index rows."""
    for folder, shift in (("a", 0.01), ("b", 0.05)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "walk.bvh").write_text(_clip_text(shift))
    (tmp_path / "run.bvh").write_text(_clip_text(0.02))
    paths = sorted(tmp_path.rglob("*.bvh"))
    out = ingest_bvh_files(paths, CONFIG, root=tmp_path)
    assert sorted(out.joints) == ["a__walk", "b__walk", "run"]
    assert not np.allclose(out.joints["a__walk"], out.joints["b__walk"])  # each clip its own file's motion
    assert [row["id"] for row in out.index] == ["a__walk", "b__walk", "run"]
    assert [row["src_path"] for row in out.index] == ["a/walk.bvh", "b/walk.bvh", "run.bvh"]
    assert out.renamed == {str(tmp_path / "a" / "walk.bvh"): "a__walk", str(tmp_path / "b" / "walk.bvh"): "b__walk"}
    assert not out.skipped


def test_one_bad_file_is_a_counted_logged_skip_not_a_crash_of_the_folder(tmp_path, caplog):
    (tmp_path / "good.bvh").write_text(_clip_text(0.01))
    (tmp_path / "deep.bvh").write_text(_nested(2_000))  # used to be a RecursionError naming no file
    (tmp_path / "z.bvh").mkdir()  # a folder named like a BVH file
    (tmp_path / "gone.bvh").symlink_to(tmp_path / "nowhere.bvh")  # a dangling link
    (tmp_path / "long.bvh").write_text(_clip_text(0.01, frames=30))
    (tmp_path / "big.bvh").write_text(_clip_text(0.01) + " " * 400_000)
    config = BvhIngestConfig(mapping="hml22", write_captions=False, max_frames=20, max_file_bytes=400_000)
    with caplog.at_level(logging.WARNING, logger="easytune.core.motion.ingest"):
        out = ingest_bvh_files(sorted(tmp_path.glob("*.bvh")), config, root=tmp_path)
    assert list(out.joints) == ["good"]
    assert out.skipped == {"hierarchy_too_deep": 1, "not_a_file": 1, "dangling_link": 1, "too_many_frames": 1,
                           "file_too_large": 1}
    for name in ("deep.bvh", "z.bvh", "gone.bvh", "long.bvh", "big.bvh"):
        assert any(str(tmp_path / name) in record.getMessage() for record in caplog.records), name


def test_nesting_depth_limit_names_the_file_and_line():
    parse_bvh(_nested(20), "ok.bvh", max_depth=21)
    with pytest.raises(BvhError, match=r"deep\.bvh: line \d+: joints nested deeper than 20 levels") as info:
        parse_bvh(_nested(20), "deep.bvh", max_depth=20)
    assert info.value.reason == "hierarchy_too_deep"
    with pytest.raises(BvhError, match="nested deeper than 64"):  # the default limit, not a RecursionError
        parse_bvh(_nested(10_000), "deeper.bvh")


def test_frame_and_byte_limits_are_checked_before_the_data_is_read(tmp_path):
    path = tmp_path / "clip.bvh"
    path.write_text(_clip_text(0.01, frames=5))
    assert read_bvh(path, max_bytes=path.stat().st_size, max_frames=5).num_frames == 5
    with pytest.raises(BvhError, match=r"clip\.bvh: 5 frames, more than the limit of 4 \(max_frames\)"):
        read_bvh(path, max_frames=4)
    with pytest.raises(BvhError, match=rf"clip\.bvh: {path.stat().st_size} bytes, larger than the limit of 100"):
        read_bvh(path, max_bytes=100)


@pytest.mark.parametrize("field", ["max_file_bytes", "max_frames", "max_depth"])
def test_limits_are_typed_parameters(field):
    from easytune.core.infra.config import ConfigError, from_dict
    from easytune.core.motion.ingest import BvhIngestParameters

    assert getattr(from_dict(BvhIngestParameters, {}).conversion, field) >= 1
    with pytest.raises(ConfigError, match=rf"bvh_ingest\.conversion\.{field} = 0: must be"):
        from_dict(BvhIngestParameters, {"conversion": {field: 0}})
