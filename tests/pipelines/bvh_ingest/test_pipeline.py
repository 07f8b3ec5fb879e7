import shutil

import numpy as np
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from easytune.datasets import JointsFolderDataset
from easytune.pipelines.bvh_ingest import create_pipeline


@pytest.fixture
def bvh_folder(bandai_root, tmp_path):
    folder = tmp_path / "bvh"
    folder.mkdir()
    for path in (bandai_root / "raw_samples").glob("*.bvh"):
        shutil.copy(path, folder / path.name)
    (folder / "broken.bvh").write_text("HIERARCHY\nROOT Hips\n{\n")
    return folder


def _run(params):
    catalog = DataCatalog({"params:bvh_ingest": MemoryDataset(params)})
    SequentialRunner().run(create_pipeline(), catalog)
    return catalog["bvh_joints_folder"].load(), catalog["bvh_ingest_report"].load()


def test_ingest_matches_reference_joints_and_writes_captions(bvh_folder, bandai_root, tmp_path):
    folder, report = _run({"input_dir": str(bvh_folder), "conversion": {"mapping": "bandai"}})
    assert report["files_found"] == 3 and report["clips_written"] == 2 and report["skipped"] == {"unreadable_bvh": 1}
    for clip_id, joints in folder["joints"].items():
        reference = np.load(bandai_root / "joints" / f"{clip_id}.npy", allow_pickle=False)
        assert joints.shape == reference.shape
        assert np.linalg.norm(joints - reference, axis=-1).mean() < 0.01  # acceptance: within 1 cm
    caption = folder["texts"]["dataset-1_walk_happy_001"][0]
    assert caption.startswith("a person walks forward happily.#") and caption.endswith("#0.0#0.0")
    assert set(folder["index"]["content"]) == {"walk", "raise-up-left-hand"}
    # the catalog dataset writes the layout the bandai env reads, and loads it back unchanged
    ds = JointsFolderDataset(str(tmp_path / "out"))
    ds.save(folder)
    back = ds.load()
    assert (tmp_path / "out" / "index.csv").exists()
    assert np.array_equal(back["joints"]["dataset-1_walk_happy_001"], folder["joints"]["dataset-1_walk_happy_001"])


def test_missing_input_folder_names_the_variable():
    with pytest.raises(Exception, match="EASYTUNE_BVH_DIR is not set"):
        _run({"input_dir": "", "conversion": {}})
    with pytest.raises(Exception, match="unknown key"):
        _run({"input_dir": "/nonexistent", "conversion": {"mappin": "bandai"}})


def test_same_named_files_become_separate_clips_and_bad_entries_are_counted(tmp_path):
    from tests.core.motion.test_ingest import _clip_text

    for folder, shift in (("a", 0.01), ("b", 0.05)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "walk.bvh").write_text(_clip_text(shift))
    (tmp_path / "z.bvh").mkdir()
    folder, report = _run({"input_dir": str(tmp_path), "conversion": {"mapping": "hml22", "write_captions": False}})
    assert sorted(folder["joints"]) == ["a__walk", "b__walk"]
    assert list(folder["index"]["src_path"]) == ["a/walk.bvh", "b/walk.bvh"]
    assert report["files_found"] == 3 and report["clips_written"] == 2
    assert report["name_collisions"] == 2 and report["skipped"] == {"not_a_file": 1}
