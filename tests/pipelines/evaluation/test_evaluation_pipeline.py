"""The evaluation pipeline end to end on tiny synthetic data (in-memory catalog, tiny parameters)."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from easytune.core.evaluation.protocol import METRIC_NAMES
from easytune.core.infra.checkpoint import make_checkpoint
from tests.core.evaluation.synthetic import make_split, make_stats, make_text

pytest.importorskip("easytune.core.motion.features")
pytest.importorskip("easytune.core.sampling.generator")
pytest.importorskip("easytune.core.export.render")

ROOT = Path(__file__).resolve().parents[3]


class KeptDataset(MemoryDataset):
    """In-memory dataset that keeps its data after the run (the runner releases intermediate datasets)."""

    def _release(self) -> None:
        pass


def tiny_params() -> dict:
    base = yaml.safe_load((ROOT / "conf/base/parameters_evaluation.yml").read_text())["evaluation"]
    tiny = yaml.safe_load((ROOT / "conf/tiny/parameters_evaluation.yml").read_text())["evaluation"]

    def merge(a, b):
        return {k: merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
                for k, v in {**a, **b}.items()}
    return merge(base, tiny)


def tiny_mdm_checkpoint(text_dim: int, method: str | None = None) -> dict:
    from easytune.core.models.frame_denoiser import FrameDenoiser, FrameDenoiserConfig
    from easytune.core.sampling.diffusion import MDM_DIFFUSION, Diffusion
    from easytune.core.sampling.generator import MotionGenerator

    torch.manual_seed(0)
    den = FrameDenoiser(FrameDenoiserConfig(preset="tiny", feature_dim=263, text_dim=text_dim))
    gen = MotionGenerator(den, Diffusion(MDM_DIFFUSION), "mdm", max_length=16, feature_dim=263)
    meta = gen.checkpoint_metadata() | ({"method": method} if method else {})
    return make_checkpoint("frame_denoiser", gen.denoiser, meta)


def test_evaluation_pipeline_runs_on_tiny_data(tmp_path):
    from easytune.pipelines.evaluation import create_pipeline

    torch.set_num_threads(1)
    text = make_text()
    ckpt = tiny_mdm_checkpoint(text.dim)
    data = {
        "train_motions": make_split(48, seed=0).to_arrays(),
        "val_motions": make_split(24, seed=2).to_arrays(),
        "test_motions": make_split(24, seed=1).to_arrays(),
        "text_embeddings": text.to_arrays(),
        "feature_stats": make_stats().to_arrays(),
        "finetune_report": {},
        # base_mdm exists, base_mld's files are missing (skipped), one fine-tuned model
        "base_model_checkpoints": {"pretrained_frame_denoiser": lambda: ckpt},
        "finetuned_denoisers": {"easytune_step": lambda: tiny_mdm_checkpoint(text.dim, "easytune_step")},
        "params:evaluation": tiny_params(),
        "params:dataset": {"skeleton": "humanml3d", "fps": 20.0},
        "params:runtime": {"device": "cpu", "seed": 0},
    }
    pipeline = create_pipeline()
    catalog = DataCatalog({name: KeptDataset(value, copy_mode="assign") for name, value in data.items()})
    for name in pipeline.all_outputs():
        catalog[name] = KeptDataset(copy_mode="assign")
    SequentialRunner().run(pipeline, catalog)
    get = catalog.load
    metrics = get("evaluation_metrics")
    assert list(metrics) == ["real", "base_mdm", "easytune_step"]
    for row in metrics.values():
        assert set(row) == set(METRIC_NAMES)
    assert metrics["real"]["MultiModality"]["mean"] is None
    assert metrics["base_mdm"]["MultiModality"]["mean"] is not None
    assert 0.0 <= metrics["real"]["content_accuracy"]["mean"] <= 1.0
    generated = get("generated_motions")
    assert generated["base_mdm"]["joints"].shape == (24, 16, 22, 3)
    assert np.isfinite(generated["easytune_step"]["joints"]).all()
    report = get("evaluation_report")
    assert report["models"] == ["real", "base_mdm", "easytune_step"]
    assert set(report["sanity"]["checks"]) == {"real_R@1_far_above_chance", "shuffled_R@1_near_chance",
                                               "noise_raises_fid", "noise_worsens_plausibility"}
    table = get("evaluation_table_csv")
    assert list(table["model"]) == ["real", "base_mdm", "easytune_step"]
    assert get("evaluation_table_md").startswith("| model | R@1 ↑")
    renders = get("evaluation_renders")
    assert renders["caption_0.gif"][:6] in (b"GIF89a", b"GIF87a") and "captions.txt" in renders
    history = get("evaluation_mlflow_metrics")
    assert "base_mdm.R_at_1" in history and "evaluator" in catalog.load("evaluator")["kind"]


def test_evaluation_pipeline_scores_a_released_mld_with_the_standard_evaluator(tmp_path):
    """``scored_by: t2m`` and ``published.models``: the T2M evaluator (released format, tiny random weights) scores
    ``real`` and a released MLD (tiny, CLIP text encoder from a folder); sanity checks use it too."""
    from easytune.pipelines.evaluation import create_pipeline
    from tests.core.published.tiny_assets import published_folders

    torch.set_num_threads(1)
    text = make_text()
    root, data_dir = published_folders(tmp_path, text.captions.tolist())
    params = tiny_params() | {"scored_by": "t2m", "published": {
        "root": str(root), "root_variable": "EASYTUNE_PUBLISHED_DIR", "dataset_dir": str(data_dir),
        "models": {"released_mld": {"checkpoint": "checkpoints/mld_humanml3d_checkpoint/mld.ckpt",
                                    "text_encoder": "clip", "text_encoder_path": "deps/clip-vit-large-patch14",
                                    "num_steps": 2}}}}
    data = {
        "train_motions": make_split(48, seed=0).to_arrays(),
        "val_motions": make_split(24, seed=2).to_arrays(),
        "test_motions": make_split(24, seed=1).to_arrays(),
        "text_embeddings": text.to_arrays(),
        "feature_stats": make_stats().to_arrays(),
        "finetune_report": {},
        "base_model_checkpoints": {},
        "finetuned_denoisers": {},
        "params:evaluation": params,
        "params:dataset": {"skeleton": "humanml3d", "fps": 20.0},
        "params:runtime": {"device": "cpu", "seed": 0},
    }
    pipeline = create_pipeline()
    catalog = DataCatalog({name: KeptDataset(value, copy_mode="assign") for name, value in data.items()})
    for name in pipeline.all_outputs():
        catalog[name] = KeptDataset(copy_mode="assign")
    SequentialRunner().run(pipeline, catalog)
    metrics = catalog.load("evaluation_metrics")
    assert list(metrics) == ["real", "released_mld"]
    assert np.isfinite(metrics["released_mld"]["FID"]["mean"]) and metrics["released_mld"]["MultiModality"]["mean"]
    report = catalog.load("evaluation_report")
    assert report["evaluator"]["scored_by"] == "t2m" and report["evaluator"]["checkpoint"].endswith("finest.tar")
    assert np.isfinite(report["sanity"]["fid_train_vs_test"])
