"""The data_processing pipeline end to end on a tiny generated folder (in-memory catalog, SequentialRunner)."""

import numpy as np
import pytest
import torch
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from matplotlib.figure import Figure

from easytune.core.data.dataset import FeatureStats, MotionSplit, TextEmbeddings
from easytune.core.infra.config import ConfigError
from easytune.core.motion.sources import DataSourceError
from easytune.pipelines.data_processing import create_pipeline
from easytune.pipelines.data_processing.nodes import build_report, prepare_raw_dataset

OUTPUTS = ("train_motions", "val_motions", "test_motions", "feature_stats", "text_embeddings",
           "data_processing_report", "data_processing_metrics", "clip_length_histogram")
DATASET = {"skeleton": "humanml3d", "fps": 20.0}


def _loader(project_root, env):
    return OmegaConfigLoader(str(project_root / "conf"), base_env="base", default_run_env=env,
                             merge_strategy={"parameters": "soft"},
                             custom_resolvers={"env_or_empty": lambda name: "", "project_root": lambda: ""})


@pytest.fixture(scope="module")
def tiny_params(project_root):
    return _loader(project_root, "tiny")["parameters"]["data_processing"]


class KeptDataset(MemoryDataset):
    def _release(self) -> None:
        pass


def _run(params: dict) -> DataCatalog:
    data = {"params:data_processing": params, "params:dataset": DATASET,
            "params:runtime": {"device": "cpu", "seed": 0}}
    datasets = {name: MemoryDataset(value, copy_mode="assign") for name, value in data.items()}
    datasets.update({name: KeptDataset(copy_mode="assign") for name in OUTPUTS})
    catalog = DataCatalog(datasets)
    SequentialRunner().run(create_pipeline(), catalog)
    return catalog


def test_tiny_pipeline_writes_the_data_contract(tiny_params, tmp_path):
    torch.set_num_threads(1)
    params = {**tiny_params, "source": {**tiny_params["source"], "root": str(tmp_path / "tiny"),
                                        "embedded": {**tiny_params["source"]["embedded"], "num_clips": 30}}}
    catalog = _run(params)
    assert (tmp_path / "tiny" / "index.csv").is_file()  # the embedded folder was written
    text = TextEmbeddings.from_arrays(catalog.load("text_embeddings"))
    stats = FeatureStats.from_arrays(catalog.load("feature_stats"))
    report = catalog.load("data_processing_report")
    splits = {}
    for name in ("train", "val", "test"):
        split = MotionSplit.from_arrays(catalog.load(f"{name}_motions"), source=f"{name}_motions")
        split.check_against(text, name)
        splits[name] = split
        assert split.feature_dim == 263 == stats.mean.shape[0] and split.max_length <= 48
        assert report["splits"][name] == len(split) > 0
    assert sum(report["splits"].values()) == report["samples_kept"] == report["clips_kept"]
    assert report["source"] == "embedded" and report["clips_found"] == 30
    assert report["clips_kept"] + report["skipped"].get("too_short", 0) == 30
    assert report["unique_captions"] == len(text) == report["text_embeddings"]["captions"]
    assert report["feature_dim"] == 263 and report["frames_total"] == sum(int(s.lengths.sum())
                                                                         for s in splits.values())
    assert all(label for label in splits["train"].labels)
    train_ids, test_ids = set(splits["train"].ids), set(splits["test"].ids)
    assert not train_ids & test_ids
    metrics = catalog.load("data_processing_metrics")
    assert metrics["clips_found"] == [{"value": 30.0, "step": 0}]
    assert metrics["splits.train"][0]["value"] == len(splits["train"])
    assert isinstance(catalog.load("clip_length_histogram"), Figure)
    # the train split is z-normalised with the train statistics
    valid = np.concatenate([splits["train"].features[i, :n] for i, n in enumerate(splits["train"].lengths)])
    assert np.abs(valid.mean(0)).max() < 1e-3


def test_unknown_parameter_key_and_missing_env_folder_fail_clearly(tiny_params, project_root):
    with pytest.raises(ConfigError, match="unknown key"):
        prepare_raw_dataset({**tiny_params, "lenght": {}}, DATASET)
    bandai = _loader(project_root, "bandai")["parameters"]["data_processing"]
    assert bandai["source"]["kind"] == "joints_folder" and bandai["source"]["root"] == ""
    with pytest.raises(DataSourceError, match="EASYTUNE_DATA_DIR"):
        prepare_raw_dataset(bandai, DATASET)


def test_environment_overrides(project_root):
    kit = _loader(project_root, "kit")["parameters"]
    assert kit["dataset"] == {"skeleton": "kit", "fps": 12.5}
    assert kit["data_processing"]["length"]["min_length"] == 24
    assert kit["data_processing"]["source"]["kind"] == "humanml3d"
    hml = _loader(project_root, "humanml3d")["parameters"]["data_processing"]
    assert hml["split"]["allow_empty_eval_splits"] is True and hml["split"]["seed"] == 1234  # soft merge


def test_report_metrics_flatten_numbers_only():
    report, metrics = build_report({"source": "x", "clips_found": 3, "skipped": {"too_short": 2},
                                    "fidelity": {"feature_mae": {"ric": 0.01}, "x": float("nan")},
                                    "labels": {"": 3}}, {"captions": 4})
    assert report["skipped_total"] == 2 and report["text_embeddings"] == {"captions": 4}
    assert metrics["fidelity.feature_mae.ric"] == [{"value": 0.01, "step": 0}]
    assert "fidelity.x" not in metrics and "source" not in metrics and not any(k.startswith("labels") for k in metrics)
