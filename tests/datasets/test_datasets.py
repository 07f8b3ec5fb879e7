import numpy as np
import pytest
import torch
from kedro.io import DatasetError

from easytune.datasets import CheckpointDataset, FileBundleDataset, NpzDataset


def test_npz_roundtrip_and_refuses_objects(tmp_path):
    ds = NpzDataset(str(tmp_path / "a.npz"))
    ds.save({"x": np.arange(3), "s": np.array(["a", "bb"])})
    out = ds.load()
    assert out["x"].tolist() == [0, 1, 2] and out["s"].tolist() == ["a", "bb"]
    with pytest.raises(DatasetError, match="dtype object"):
        ds.save({"o": np.array([{"a": 1}], dtype=object)})


def test_npz_with_pickled_payload_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, o=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DatasetError, match="not a readable"):
        NpzDataset(str(path)).load()


def test_checkpoint_roundtrip_weights_only(tmp_path):
    ds = CheckpointDataset(str(tmp_path / "m.pt"))
    ckpt = {"kind": "motion_vae", "config": {"a": 1}, "state_dict": {"w": torch.ones(2)}, "metadata": {"step": 3}}
    ds.save(ckpt)
    assert torch.equal(ds.load()["state_dict"]["w"], torch.ones(2))
    with pytest.raises(DatasetError, match="keys"):
        ds.save({"state_dict": {}})


def test_checkpoint_refuses_arbitrary_pickles(tmp_path):
    path = tmp_path / "evil.pt"

    import argparse

    torch.save({"kind": argparse.Namespace(cmd="rm -rf /")}, path)  # any non-allow-listed class
    with pytest.raises(DatasetError, match="weights-only"):
        CheckpointDataset(str(path)).load()


def test_optional_checkpoint_loads_none_when_missing(tmp_path):
    missing = str(tmp_path / "absent.pt")
    assert CheckpointDataset(missing, optional=True).load() is None
    assert not CheckpointDataset(missing, optional=True).exists()  # existence stays truthful for the upstream check
    with pytest.raises(DatasetError, match="checkpoint not found"):
        CheckpointDataset(missing).load()


def test_file_bundle_roundtrip(tmp_path):
    ds = FileBundleDataset(str(tmp_path / "renders"))
    ds.save({"a.gif": b"GIF89a", "b.txt": b"x"})
    assert ds.load() == {"a.gif": b"GIF89a", "b.txt": b"x"}
    with pytest.raises(DatasetError, match="bad file name"):
        ds.save({"../x": b""})


def test_file_bundle_subfolders_replace_only_their_own_folder(tmp_path):
    ds = FileBundleDataset(str(tmp_path / "bundle"), subfolders=True)
    ds.save({"base_mld/a.bvh": b"1", "base_mld/index.csv": b"x", "easytune_step/a.bvh": b"2"})
    ds.save({"easytune_step/b.bvh": b"3"})  # a second run of one model
    assert ds.load() == {"base_mld/a.bvh": b"1", "base_mld/index.csv": b"x", "easytune_step/b.bvh": b"3"}
    assert sorted(p.name for p in (tmp_path / "bundle").iterdir()) == ["base_mld", "easytune_step"]  # no temp left
    for bad in ({"a.bvh": b"1"}, {"m/../x": b"1"}, {".hidden/a": b"1"}, {"m/": b"1"}):
        with pytest.raises(DatasetError, match="bad file name"):
            ds.save(bad)


def test_file_bundle_subfolder_failed_save_keeps_the_previous_files(tmp_path):
    ds = FileBundleDataset(str(tmp_path / "bundle"), subfolders=True)
    ds.save({"m/a.bvh": b"old"})
    with pytest.raises(DatasetError, match="Failed while saving"):  # kedro wraps the TypeError of the bad payload
        ds.save({"m/a.bvh": b"new", "m/b.bvh": "not bytes"})
    assert ds.load() == {"m/a.bvh": b"old"}
    assert [p.name for p in (tmp_path / "bundle").iterdir()] == ["m"]
