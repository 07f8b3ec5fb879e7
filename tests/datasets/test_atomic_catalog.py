"""Every write of the catalog is atomic (#27, item 4): each catalog entry of every conf env writes through a
temporary name unique to its process and a rename, a failed save leaves the previous file intact, and a folder that
cannot be swapped in is an error that keeps the old folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from kedro.io import AbstractDataset, DatasetError
from kedro.io.core import parse_dataset_definition

from easytune.core.infra import atomic

CONF = Path(__file__).resolve().parents[2] / "conf"
CATALOGS = sorted(p for p in CONF.rglob("*.yml") if "catalog" in p.name)
#: types that write no file at all (memory, MLflow's store only); every other type must carry ATOMIC_SAVE
NO_FILE = {"MemoryDataset", "kedro_mlflow.io.metrics.MlflowMetricsHistoryDataset"}
WRAPPERS = {"kedro_mlflow.io.artifacts.MlflowArtifactDataset", "partitions.PartitionedDataset",
            "kedro_datasets.partitions.PartitionedDataset"}  # write only through their inner `dataset`


def _entries():
    """Every catalog entry of every env; an env's partial entry (no ``type``: Kedro soft-merges it over the base
    entry of the same name, see settings.CONFIG_LOADER_ARGS) is checked as merged."""
    base = {}
    for path in CATALOGS:
        if path.parent.name == "base":
            base.update(yaml.safe_load(path.read_text()) or {})
    for path in CATALOGS:
        for name, config in (yaml.safe_load(path.read_text()) or {}).items():
            if not name.startswith("_") and isinstance(config, dict):
                if "type" not in config:
                    assert name in base, f"{path.relative_to(CONF)}::{name} has no type and no base entry to merge onto"
                    config = {**base[name], **config}
                yield f"{path.relative_to(CONF)}::{name}", config


def _problem(config) -> str | None:
    config = {"type": config} if isinstance(config, str) else config
    kind = config["type"]
    if kind in NO_FILE:
        return None
    if kind in WRAPPERS:
        return _problem(config["dataset"])
    cls, _ = parse_dataset_definition(dict(config))
    if getattr(cls, "ATOMIC_SAVE", False) or getattr(cls, "SAVES_NO_FILE", False):
        return None
    return f"{kind} does not save atomically"


def test_every_catalog_entry_of_every_env_saves_atomically():
    entries = list(_entries())
    assert len(entries) > 50 and len(CATALOGS) >= 8
    problems = [f"{where}: {problem}" for where, config in entries if (problem := _problem(config))]
    assert not problems, "\n".join(problems)


def _catalog_entry(name: str) -> dict:
    for path in CATALOGS:
        entries = yaml.safe_load(path.read_text()) or {}
        if name in entries:
            return entries[name]
    raise KeyError(name)


@pytest.mark.parametrize("name", ["evaluation_metrics", "generate_report", "data_processing_report"])
def test_a_failed_save_leaves_the_previous_file_intact(name, tmp_path, monkeypatch):
    """The catalog's own entry, pointed into tmp_path: a save that fails half-way (a value json cannot write, after
    part of the document was written) leaves the previous report, and no temporary file."""
    monkeypatch.chdir(tmp_path)  # MlflowArtifactDataset logging is switched off below; nothing may land elsewhere
    config = json.loads(json.dumps(_catalog_entry(name)))
    inner = config["dataset"] if "dataset" in config else config
    inner["filepath"] = str(tmp_path / "report.json")
    dataset = AbstractDataset.from_config(name, config)
    if hasattr(dataset, "_logging_activated"):
        dataset._logging_activated = False
    dataset.save({"R@1": 0.5, "FID": 1.0})
    before = (tmp_path / "report.json").read_text()
    with pytest.raises(DatasetError):
        dataset.save({"R@1": 0.7, "FID": object()})  # fails after '{"R@1": 0.7, "FID": ' is written
    assert (tmp_path / "report.json").read_text() == before
    assert os.listdir(tmp_path) == ["report.json"]


def test_a_folder_that_cannot_be_swapped_in_is_an_error_and_the_old_folder_stays(tmp_path, monkeypatch):
    folder = tmp_path / "renders"
    folder.mkdir()
    (folder / "old.txt").write_text("old content")
    real_replace = os.replace

    def replace(src, dst):
        if ".tmpdir" in str(src):  # the swap-in rename fails every time
            raise OSError(39, "Directory not empty", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OSError, match=str(folder)):
        atomic.atomic_replace_folder(folder, lambda tmp: (tmp / "new.txt").write_text("new content"))
    assert sorted(p.name for p in folder.iterdir()) == ["old.txt"]
    assert (folder / "old.txt").read_text() == "old content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["renders"]  # nothing left aside
