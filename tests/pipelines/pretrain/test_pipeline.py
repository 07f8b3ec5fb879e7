"""The pretrain pipeline end to end on tiny synthetic data with the tiny configuration (in-memory catalog)."""

import io

import numpy as np
import pytest
import torch
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from PIL import Image

from easytune.core.data.dataset import FeatureStats, MotionSplit, TextEmbeddings
from easytune.core.data.text import TextBatch
from easytune.core.infra.checkpoint import build_from_checkpoint
from easytune.core.sampling.generator import MotionGenerator
from easytune.pipelines.pretrain import create_pipeline

D = 263


@pytest.fixture(scope="module")
def pretrain_params(project_root):
    loader = OmegaConfigLoader(str(project_root / "conf"), base_env="base", default_run_env="tiny",
                               merge_strategy={"parameters": "soft"},
                               config_patterns={"parameters": ["parameters_pretrain*"]})
    return loader["parameters"]["pretrain"]


def make_split(n: int, seed: int) -> MotionSplit:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(6, 24, n)
    t = np.arange(24)[None, :, None]
    feats = (np.sin(0.3 * t + rng.normal(size=(n, 1, D))) + 0.1 * rng.normal(size=(n, 24, D))).astype(np.float32)
    feats[np.arange(24)[None] >= lengths[:, None]] = 0.0
    return MotionSplit(np.array([f"m{seed}_{i}" for i in range(n)]), feats, lengths.astype(np.int64),
                       np.arange(n + 1, dtype=np.int64), (np.arange(n) % 6).astype(np.int64), np.array([""] * n))


def make_text() -> TextEmbeddings:
    rng = np.random.default_rng(5)
    sentence = rng.normal(size=(6, 384)).astype(np.float32)
    return TextEmbeddings(np.array([f"a person does motion {i}" for i in range(6)]), sentence,
                          np.zeros((6, 3, 384), np.float16), np.full(6, 3, np.int64))


class KeptDataset(MemoryDataset):
    """In-memory dataset the runner does not release, so the test can read intermediate outputs."""

    def _release(self) -> None:
        pass


OUTPUTS = ("motion_vae", "pretrained_latent_denoiser", "pretrained_frame_denoiser", "motion_vae_training_history",
           "latent_denoiser_training_history", "frame_denoiser_training_history", "pretrain_samples",
           "pretrain_sample_gifs", "pretrain_report", "motion_vae_evaluation", "pretrain_metrics",
           "pretrained_consistency_model", "consistency_model_training", "consistency_model_training_history")


def test_pretrain_pipeline_runs_on_tiny_config(pretrain_params, tmp_path):
    torch.set_num_threads(1)
    params = dict(pretrain_params, resume_dir=str(tmp_path / "resume"))
    stats = FeatureStats(np.zeros(D, np.float32), np.full(D, 0.05, np.float32))
    data = {
        "train_motions": make_split(12, 0).to_arrays(), "val_motions": make_split(6, 1).to_arrays(),
        "test_motions": make_split(6, 2).to_arrays(), "text_embeddings": make_text().to_arrays(),
        "feature_stats": stats.to_arrays(), "params:pretrain": params,
        "params:runtime": {"device": "cpu", "seed": 3}, "params:dataset": {"skeleton": "humanml3d", "fps": 20.0},
        # the served-model nodes: no MLflow run is active here, so they log nothing
        "params:generate": {}, "params:serve": {}, "params:data_processing.text_encoder": {},
    }
    datasets = {name: MemoryDataset(value, copy_mode="assign") for name, value in data.items()}
    datasets.update({name: KeptDataset(copy_mode="assign") for name in OUTPUTS})
    catalog = DataCatalog(datasets)
    SequentialRunner().run(create_pipeline(), catalog)

    report = catalog.load("pretrain_report")
    for name in ("motion_vae", "latent_denoiser", "frame_denoiser"):
        entry = report[name]
        assert entry["steps"] == 6 and entry["params"] > 0 and entry["wall_s"] >= 0
        assert np.isfinite(entry["train_loss"]) and np.isfinite(entry["val_loss"])
    assert report["motion_vae"]["vae_mpjpe_m"] > 0 and np.isfinite(report["motion_vae"]["vae_mpjpe_m"])
    lcm = report["consistency_model"]  # MotionLCM distilled from the MLD: 4 tiny steps
    assert lcm == catalog.load("consistency_model_training")
    assert lcm["steps"] == 4 and lcm["params"] > report["latent_denoiser"]["params"] and lcm["wall_s"] >= 0
    assert np.isfinite(lcm["train_loss"]) and np.isfinite(lcm["val_loss"]) and lcm["num_inference_steps"] == 4
    assert [p["step"] for p in catalog.load("consistency_model_training_history")["val_loss"]] == [2, 4]
    metrics = catalog.load("pretrain_metrics")
    assert metrics["motion_vae.vae_mpjpe_m"] == [{"value": report["motion_vae"]["vae_mpjpe_m"], "step": 0}]
    assert metrics["frame_denoiser.steps"][0]["value"] == 6.0 and "frame_denoiser.stopped_early" not in metrics
    assert metrics["consistency_model.steps"][0]["value"] == 4.0
    assert not any((tmp_path / "resume").glob("*.pt"))  # completed runs remove their resume files

    history = catalog.load("latent_denoiser_training_history")
    assert [p["step"] for p in history["val_loss"]] == [3, 6] and len(history["train_loss"]) == 6

    gen = MotionGenerator.from_checkpoints(catalog.load("pretrained_latent_denoiser"), catalog.load("motion_vae"))
    assert gen.kind == "mld" and gen.guidance_scale == 7.5 and gen.max_length == 16
    assert gen.diffusion.config.num_inference_steps == 5
    mdm = MotionGenerator.from_checkpoints(catalog.load("pretrained_frame_denoiser"))
    assert mdm.kind == "mdm" and mdm.diffusion.config.prediction_type == "sample"
    assert catalog.load("pretrained_frame_denoiser")["metadata"]["result"]["steps"] == 6
    lcm_ckpt = catalog.load("pretrained_consistency_model")
    mlcm = MotionGenerator.from_checkpoints(lcm_ckpt, catalog.load("motion_vae"))
    assert lcm_ckpt["kind"] == "latent_consistency_denoiser" and mlcm.kind == "mlcm" and mlcm.guidance_scale == 7.5
    assert mlcm.diffusion.timesteps().tolist() == [999, 799, 499, 299] and mlcm.max_length == 16
    assert lcm_ckpt["metadata"]["distillation"]["ema_decay"] == 0.95
    vae = build_from_checkpoint(catalog.load("motion_vae"), "cpu")
    assert vae.config.feature_dim == D

    out = catalog.load("pretrain_samples")
    assert out["mld_features"].shape[0] == 3 and out["mdm_joints"].shape[2:] == (22, 3)
    assert out["mlcm_features"].shape == out["mld_features"].shape
    assert list(out["lengths"]) == [int(min(x, 16)) for x in make_split(6, 2).lengths[:3]]
    # generation through the node equals the rebuilt generator's fast path
    text = TextBatch.from_embeddings(make_text(), [0, 1, 2])
    again = mdm.generate(text, torch.as_tensor(out["lengths"]), generator=torch.Generator().manual_seed(7),
                         num_steps=5)
    np.testing.assert_allclose(again.numpy(), out["mdm_features"], rtol=1e-5, atol=1e-5)
    # MotionLCM samples with its own steps (consistency_num_steps: null = the checkpoint's 4), not num_steps = 5
    lcm_again = mlcm.generate(text, torch.as_tensor(out["lengths"]), generator=torch.Generator().manual_seed(7))
    np.testing.assert_allclose(lcm_again.numpy(), out["mlcm_features"], rtol=1e-5, atol=1e-5)
    gifs = catalog.load("pretrain_sample_gifs")
    assert list(gifs) == ["sample_00.gif"] and Image.open(io.BytesIO(gifs["sample_00.gif"])).format == "GIF"


def test_nodes_are_named_and_tagged_per_generator():
    pipe = create_pipeline()
    assert all(n.name for n in pipe.nodes)
    shared = {"generate_samples", "pretrain_report"}  # with any tag: they cover the generators that exist
    assert {n.name for n in pipe.only_nodes_with_tags("mdm").nodes} == {"train_frame_denoiser",
                                                                        "log_served_model_base_mdm", *shared}
    assert {n.name for n in pipe.only_nodes_with_tags("mld").nodes} == {
        "train_motion_vae", "evaluate_motion_vae", "train_latent_denoiser", "log_served_model_base_mld", *shared}
    mlcm = pipe.only_nodes_with_tags("mlcm")
    assert {n.name for n in mlcm.nodes} == {"train_consistency_model", "log_served_model_base_mlcm", *shared}
    distil = pipe.only_nodes("train_consistency_model")
    assert {"pretrained_latent_denoiser", "motion_vae"} <= distil.inputs()  # distilled from the MLD's checkpoints
