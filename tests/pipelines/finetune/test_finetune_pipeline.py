"""The finetune pipelines end to end on tiny synthetic inputs with the tiny configuration (in-memory catalog)."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from easytune.core.infra.checkpoint import build_from_checkpoint, make_checkpoint
from easytune.pipelines.finetune import ALL_METHODS, create_compare_pipeline, create_pipeline
from tests.core.finetune.tiny import make_mdm, make_mlcm, make_mld, make_reward, make_splits


@pytest.fixture(scope="module")
def finetune_params(project_root):
    from easytune.settings import CONFIG_LOADER_ARGS

    loader = OmegaConfigLoader(str(project_root / "conf"), base_env="base", default_run_env="tiny",
                               merge_strategy={"parameters": "soft"},
                               custom_resolvers=CONFIG_LOADER_ARGS["custom_resolvers"])
    return loader["parameters"]["finetune"]


class KeptDataset(MemoryDataset):
    def _release(self) -> None:
        pass


class AbsentCheckpoint(MemoryDataset):
    def load(self):
        return None


def _catalog(params: dict, pipeline) -> DataCatalog:
    mld, mdm, mlcm = make_mld(steps=4), make_mdm(steps=4), make_mlcm(steps=4)
    train, val, text = make_splits(10)
    data = {
        "pretrained_latent_denoiser": make_checkpoint("latent_denoiser", mld.denoiser, mld.checkpoint_metadata()),
        "pretrained_frame_denoiser": make_checkpoint("frame_denoiser", mdm.denoiser, mdm.checkpoint_metadata()),
        "pretrained_consistency_model": make_checkpoint("latent_consistency_denoiser", mlcm.denoiser,
                                                        mlcm.checkpoint_metadata()),
        "motion_vae": make_checkpoint("motion_vae", mld.vae),
        "reward_model": make_checkpoint("retrieval_model", make_reward().model),
        "train_motions": train.to_arrays(), "val_motions": val.to_arrays(), "text_embeddings": text.to_arrays(),
        "params:finetune": params, "params:runtime": {"device": "cpu", "seed": 7},
        # the served-model node: no MLflow run is active here, so it logs nothing (tests/pipelines/generate/
        # test_served_model.py and tests/integration/test_serve.py log and serve models)
        "feature_stats": {"mean": np.zeros(263, np.float32), "std": np.ones(263, np.float32)},
        "params:generate": {}, "params:serve": {}, "params:data_processing.text_encoder": {},
        "params:dataset": {"skeleton": "humanml3d", "fps": 20.0},
    }
    for name in pipeline.inputs():
        if name.startswith("params:finetune.methods."):
            data[name] = params["methods"][name.rsplit(".", 1)[1]]
    datasets = {name: MemoryDataset(value, copy_mode="assign") for name, value in data.items()}
    # optional checkpoints never trained here (the catalog's `optional: true` loads them as None)
    datasets.update({name: AbsentCheckpoint() for name in ("reward_model_seed1", "reward_model_seed2",
                                                           "reward_model_no_spl", "realism_critic")})
    datasets.update({name: KeptDataset(copy_mode="assign") for name in pipeline.all_outputs()})
    return DataCatalog(datasets)


def test_tiny_config_merges_over_base(finetune_params):
    assert finetune_params["common"]["num_steps"] == 4 and finetune_params["common"]["lr"] == 1e-3
    assert finetune_params["methods"]["draft_k"]["policy"] == {"k": 4}
    assert finetune_params["common"]["grad_clip"] == 1.0  # from base


def test_default_pipeline_is_one_namespaced_template(finetune_params):
    pipe = create_pipeline()
    assert {n.name for n in pipe.nodes} == {"easytune_step.finetune_denoiser", "easytune_step.log_served_model",
                                            "build_finetune_report",
                                            "analyse_sampling_chain"}
    assert "params:finetune.methods.easytune_step" in pipe.inputs()
    assert {"easytune_step.finetuned_denoiser", "finetune_report"} <= pipe.all_outputs()
    assert "easytune_step.served_model" in pipe.outputs()
    assert "motion_vae" in pipe.inputs() and "easytune_step.motion_vae" not in pipe.all_inputs()


def test_finetune_report_lists_the_methods_that_have_a_summary():
    from easytune.pipelines.finetune.nodes import build_finetune_report

    ran = {"method": "draft_k", "updates": 3, "curves": {"train_reward": [1.0]}}
    report = build_finetune_report({}, ran, {})  # two methods never run (their optional summaries read as {})
    assert report == {"draft_k": {"method": "draft_k", "updates": 3}}
    assert build_finetune_report({}, {}) == {}


KINDS = {"mld": "latent_denoiser", "mdm": "frame_denoiser", "mlcm": "latent_consistency_denoiser"}


@pytest.mark.parametrize("generator", ["mld", "mlcm"])
def test_compare_pipeline_runs_every_method(finetune_params, generator):
    torch.set_num_threads(1)
    params = dict(finetune_params, generator=generator)
    pipe = create_compare_pipeline()
    catalog = _catalog(params, pipe)
    SequentialRunner().run(pipe, catalog)
    report = catalog.load("finetune_report")
    assert set(report) == set(ALL_METHODS)
    kind = KINDS[generator]
    for method in ALL_METHODS:
        summary = report[method]
        assert summary["updates"] == params["methods"][method].get("max_updates", params["common"]["max_updates"])
        assert summary["s_per_update"] > 0 and summary["peak_saved_bytes"] > 0 and summary["peak_cuda_bytes"] is None
        assert summary["best_val"] is not None and summary["generator"] == generator
        ckpt = catalog.load(f"{method}.finetuned_denoiser")
        assert ckpt["kind"] == kind and ckpt["metadata"]["method"] == method
        assert ckpt["metadata"]["generator"]["kind"] == generator  # sampler metadata copied from the pretrained one
        build_from_checkpoint(ckpt)
        history = catalog.load(f"{method}.finetune_history")
        assert history["train_reward"][0]["step"] == 1
        curves = catalog.load(f"{method}.finetune_summary")["curves"]  # what the notebook plots
        assert [v for _, v in curves["train_reward"]] == [r["value"] for r in history["train_reward"]]
        assert "curves" not in summary
    analysis = catalog.load("sampling_chain_analysis")
    assert len(analysis["jacobian_norm"]["chain"]) == 4
    assert isinstance(catalog.load("sampling_chain_plot"), plt.Figure)
    plt.close("all")


def test_default_pipeline_on_mdm_with_the_noise_aware_reward(finetune_params):
    torch.set_num_threads(1)
    params = dict(finetune_params, generator="mdm", common=dict(finetune_params["common"], reward_input="noisy"))
    pipe = create_pipeline()
    catalog = _catalog(params, pipe)
    SequentialRunner().run(pipe, catalog)
    report = catalog.load("finetune_report")
    assert list(report) == ["easytune_step"] and report["easytune_step"]["generator"] == "mdm"
    ckpt = catalog.load("easytune_step.finetuned_denoiser")
    assert ckpt["kind"] == "frame_denoiser" and ckpt["metadata"]["finetune"]["reward_input"] == "noisy"
    plt.close("all")
