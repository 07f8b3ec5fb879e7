"""conf/humanml3d_published: the finetune pipeline fine-tunes a released MLD (a tiny folder in the released layouts)
with the released SPM, and the evaluation scores the fine-tuned denoiser with the released sampler beside the
released model."""

import numpy as np
import pytest
import torch
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from easytune.core.data.dataset import FeatureStats, TextEmbeddings
from easytune.core.evaluation.protocol import EvaluationConfig
from easytune.core.infra.config import from_dict
from easytune.core.published.containers import PublishedAssetError
from easytune.pipelines.evaluation.nodes import _released_sources
from easytune.pipelines.finetune import create_pipeline
from easytune.pipelines.finetune.nodes import finetune_method
from tests.core.finetune.tiny import make_splits
from tests.core.published.tiny_assets import released_finetune_folder


def _params(project_root, monkeypatch, published, data):
    from easytune.settings import CONFIG_LOADER_ARGS

    monkeypatch.setenv("EASYTUNE_PUBLISHED_DIR", str(published))
    monkeypatch.setenv("EASYTUNE_DATA_DIR", str(data))
    args = {k: v for k, v in CONFIG_LOADER_ARGS.items() if k != "default_run_env"}
    return OmegaConfigLoader(str(project_root / "conf"), env="humanml3d_published", **args)["parameters"]


class Kept(MemoryDataset):
    def _release(self) -> None:
        pass


class Absent(MemoryDataset):
    def load(self):
        return None


def _smoke(params: dict) -> dict:
    finetune = dict(params["finetune"])
    finetune["released"] = dict(finetune["released"], num_steps=4)
    finetune["common"] = dict(finetune["common"], num_steps=4, max_updates=2, max_frames=12, val_every=1, lr=1e-2,
                              val_captions=2)
    finetune["methods"] = {"easytune_step": dict(finetune["methods"]["easytune_step"],
                                                 policy={"steps": "last_k", "k": 2})}
    finetune["resume_dir"] = None
    return finetune


@pytest.fixture
def folders(tmp_path):
    published, data = tmp_path / "published", tmp_path / "HumanML3D"
    released_finetune_folder(published)
    data.mkdir()
    rng = np.random.default_rng(0)
    np.save(data / "Mean.npy", rng.normal(size=263).astype(np.float32))
    np.save(data / "Std.npy", rng.uniform(0.5, 2, size=263).astype(np.float32))
    return published, data


def test_the_environment_fine_tunes_the_released_mld_and_the_evaluation_scores_it(project_root, monkeypatch,
                                                                                  folders):
    params = _params(project_root, monkeypatch, *folders)
    assert params["finetune"]["generator"] == "released_mld"
    assert params["finetune"]["released"]["reward"]["kind"] == "spm"
    finetune = _smoke(params)
    pipeline = create_pipeline()
    train, val, text = make_splits(10)
    data = {"train_motions": train.to_arrays(), "val_motions": val.to_arrays(), "text_embeddings": text.to_arrays(),
            "params:finetune": finetune, "params:runtime": {"device": "cpu", "seed": 7},
            "params:finetune.methods.easytune_step": finetune["methods"]["easytune_step"],
            "feature_stats": {"mean": np.zeros(263, np.float32), "std": np.ones(263, np.float32)},
            "params:generate": {}, "params:serve": {}, "params:data_processing.text_encoder": {},
            "params:dataset": {"skeleton": "humanml3d", "fps": 20.0}}
    datasets = {name: MemoryDataset(value, copy_mode="assign") for name, value in data.items()}
    datasets.update({name: Absent() for name in pipeline.inputs() if name not in data})  # no project checkpoints
    datasets.update({name: Kept(copy_mode="assign") for name in pipeline.all_outputs()})
    catalog = DataCatalog(datasets)
    SequentialRunner().run(pipeline, catalog)

    ckpt = catalog.load("easytune_step.finetuned_denoiser")
    summary = catalog.load("easytune_step.finetune_summary")
    assert ckpt["kind"] == "released_mld_denoiser" and summary["updates"] == 2 and summary["reward"] == "spm"
    assert catalog.load("easytune_step.served_model")["logged"] is False
    assert len(catalog.load("sampling_chain_analysis")["jacobian_norm"]["chain"]) == 4

    config = from_dict(EvaluationConfig, dict(params["evaluation"], published=dict(
        params["evaluation"]["published"], models={"published_mld_t5": {
            "family": "mld", "checkpoint": "checkpoints/mld_humanml/mld_humanml_v1.ckpt", "text_encoder": "t5",
            "text_encoder_path": "deps/sentence-t5-large", "num_steps": 4}})), where="params:evaluation")
    text_emb = TextEmbeddings.from_arrays(text.to_arrays())
    stats = FeatureStats(mean=np.zeros(263, np.float32), std=np.ones(263, np.float32))
    sources = _released_sources(config, text_emb, stats, torch.device("cpu"), {"easytune_step": ckpt})
    assert sorted(sources) == ["easytune_step", "published_mld_t5"]
    # the environment lists the CLIP MLD, whose files are not in this folder: left out with null, as
    # --params "evaluation.published.models.published_mld=null" does; the T5 base is added beside the fine-tuned one
    default = from_dict(EvaluationConfig, dict(params["evaluation"], published=dict(
        params["evaluation"]["published"], models={"published_mld": None})), where="params:evaluation")
    assert sorted(_released_sources(default, text_emb, stats, torch.device("cpu"), {"easytune_step": ckpt})) == [
        "easytune_step", "released_mld_humanml_v1"]
    rows, lengths = np.array([0, 3, 5]), np.array([12, 8, 20])
    tuned, tuned_lengths = sources["easytune_step"](rows, lengths, 0)
    base, _ = sources["published_mld_t5"](rows, lengths, 0)
    assert tuned.shape == base.shape == (3, 20, 263) and np.isfinite(tuned).all()
    assert np.array_equal(tuned_lengths, lengths) and np.abs(tuned - base).max() > 0


def test_a_missing_released_file_names_the_variable_and_what_to_put_there(project_root, monkeypatch, tmp_path):
    params = _params(project_root, monkeypatch, tmp_path / "nothing", tmp_path / "HumanML3D")
    finetune = _smoke(params)
    train, val, text = make_splits(10)
    with pytest.raises(PublishedAssetError, match=r"finetune\.released\.checkpoint = 'checkpoints/mld_humanml/"
                                                  r"mld_humanml_v1\.ckpt': no file .*EASYTUNE_PUBLISHED_DIR=.*"
                                                  r"mld_humanml_v1\.ckpt \(text_encoder: t5\)"):
        finetune_method(None, None, None, None, None, train.to_arrays(), val.to_arrays(), text.to_arrays(),
                        None, None, None, None, finetune, finetune["methods"]["easytune_step"],
                        {"device": "cpu", "seed": 0})


def test_the_upstream_check_does_not_ask_for_project_checkpoints_when_a_released_model_is_fine_tuned():
    from easytune.hooks import _fine_tunes_a_released_model

    pipeline = create_pipeline()
    for generator, expected in (("released_mld", True), ("mld", False)):
        catalog = DataCatalog({"params:finetune": MemoryDataset({"generator": generator})})
        assert _fine_tunes_a_released_model(pipeline, catalog) is expected
