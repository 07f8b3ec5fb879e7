"""The evaluation pipeline's catalog datasets: a lazy folder of checkpoints and an optional JSON report."""

import pytest
import torch
from kedro.io import DatasetError

from easytune.datasets.checkpoint_folder_dataset import CheckpointFolderDataset
from easytune.datasets.optional_json_dataset import OptionalJSONDataset


def _ckpt(method: str) -> dict:
    return {"kind": "frame_denoiser", "config": {}, "state_dict": {"w": torch.ones(2)}, "metadata": {"method": method}}


def test_checkpoint_folder_lists_stems_and_loads_lazily(tmp_path):
    folder = tmp_path / "finetuned"
    assert CheckpointFolderDataset(str(folder)).load() == {}  # missing folder: no models
    folder.mkdir()
    assert CheckpointFolderDataset(str(folder)).load() == {}  # empty folder: no models
    torch.save(_ckpt("easytune_step"), folder / "easytune_step.pt")
    torch.save(_ckpt("draft_10"), folder / "draft_10.pt")
    (folder / "notes.txt").write_text("ignored")
    (folder / "broken.pt").write_bytes(b"not a checkpoint")
    ds = CheckpointFolderDataset(str(folder))
    loaders = ds.load()
    assert sorted(loaders) == ["broken", "draft_10", "easytune_step"]
    assert loaders["easytune_step"]()["metadata"]["method"] == "easytune_step"
    with pytest.raises(DatasetError, match="broken.pt"):
        loaders["broken"]()
    assert ds.exists()
    with pytest.raises(DatasetError, match="read-only"):
        ds.save({})


def test_optional_json_reads_empty_until_saved(tmp_path):
    ds = OptionalJSONDataset(str(tmp_path / "finetune_report.json"))
    assert ds.exists() and ds.load() == {}
    ds.save({"easytune_step": {"updates": 3}})
    assert ds.load() == {"easytune_step": {"updates": 3}}
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(DatasetError, match="not valid JSON"):
        OptionalJSONDataset(str(tmp_path / "bad.json")).load()
