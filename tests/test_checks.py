"""Start-of-run checks: every parameter group of every environment builds, unknown top-level keys are errors, and
checkpoint headers are compared with what consumes them (file named, nothing loaded)."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from easytune.checks import checkpoint_problems, npz_array_shape, parameter_groups, parameter_problems
from easytune.core.infra.checkpoint import make_checkpoint
from easytune.datasets import CheckpointDataset, NpzDataset
from easytune.datasets.checkpoint_folder_dataset import CheckpointFolderDataset


def test_every_parameter_file_of_every_environment_builds():
    """conf/base and each environment merged over it: every group builds as its config dataclass."""
    from kedro.config import OmegaConfigLoader

    from easytune.settings import CONFIG_LOADER_ARGS

    conf = Path(__file__).resolve().parents[1] / "conf"
    groups = parameter_groups()
    assert {"dataset", "runtime", "data_processing", "pretrain", "reward", "finetune", "evaluation",
            "bvh_ingest"} <= {k for k, v in groups.items() if v is not None}
    for env in ("local", "tiny", "paper", "bandai", "humanml3d", "kit", "humanml3d_published"):
        params = OmegaConfigLoader(str(conf), env=env, **{k: v for k, v in CONFIG_LOADER_ARGS.items()
                                                         if k != "default_run_env"})["parameters"]
        assert parameter_problems(params) == [], env
    params["finetune"]["common"]["num_steps"] = 0
    params["typo"] = 1
    problems = parameter_problems(params)
    assert "unknown top-level parameter key(s) ['typo']" in problems[0]
    assert "finetune.common.num_steps = 0: must be in [1, 1000]" in problems[1]


def _models():
    from easytune.core.models.consistency_denoiser import LatentConsistencyDenoiser, LatentConsistencyDenoiserConfig
    from easytune.core.models.frame_denoiser import FrameDenoiser, FrameDenoiserConfig
    from easytune.core.models.latent_denoiser import LatentDenoiser, LatentDenoiserConfig
    from easytune.core.models.vae import MotionVAE, MotionVAEConfig

    torch.manual_seed(0)
    return {
        "vae": MotionVAE(MotionVAEConfig(preset="tiny")),  # latent (1, 32), feature_dim 263
        "latent_ok": LatentDenoiser(LatentDenoiserConfig(preset="tiny", latent_tokens=1, latent_dim=32)),
        "latent_other_size": LatentDenoiser(LatentDenoiserConfig(preset="tiny", latent_tokens=2, latent_dim=16)),
        "frame_ok": FrameDenoiser(FrameDenoiserConfig(preset="tiny")),
        "frame_kit": FrameDenoiser(FrameDenoiserConfig(preset="tiny", feature_dim=251)),
        "lcm_other_size": LatentConsistencyDenoiser(LatentConsistencyDenoiserConfig(
            preset="tiny", latent_tokens=2, latent_dim=16, guidance_embed_dim=8)),
    }


KIND = {"vae": "motion_vae", "latent_ok": "latent_denoiser", "latent_other_size": "latent_denoiser",
        "frame_ok": "frame_denoiser", "frame_kit": "frame_denoiser", "lcm_other_size": "latent_consistency_denoiser"}


def _catalog(tmp_path, files: dict, params: dict, text_dim: int = 384):
    from kedro.io import DataCatalog, MemoryDataset

    models = _models()
    entries = {}
    for name, (model, kinds) in files.items():
        ds = CheckpointDataset(str(tmp_path / f"{name}.pt"), kinds=kinds)
        ds.save(make_checkpoint(KIND[model], models[model]))
        entries[name] = ds
    text = NpzDataset(str(tmp_path / "text_embeddings.npz"))
    text.save({"sentence": np.zeros((3, text_dim), np.float32)})
    entries["text_embeddings"] = text
    entries.update({f"params:{k}": MemoryDataset(v) for k, v in params.items()})
    return DataCatalog(entries)


def _pipeline(*inputs):
    return SimpleNamespace(inputs=lambda: set(inputs))


def test_a_denoiser_of_another_latent_size_or_feature_dim_is_named_before_the_run(tmp_path):
    catalog = _catalog(tmp_path, {"motion_vae": ("vae", "motion_vae"),
                                  "pretrained_latent_denoiser": ("latent_other_size", "latent_denoiser"),
                                  "pretrained_frame_denoiser": ("frame_kit", "frame_denoiser")},
                       {"dataset": {"skeleton": "humanml3d", "fps": 20.0}})
    inputs = ("motion_vae", "pretrained_latent_denoiser", "pretrained_frame_denoiser", "text_embeddings")
    problems = checkpoint_problems(_pipeline(*inputs), catalog)
    assert len(problems) == 2
    assert problems[0].startswith(f"{tmp_path / 'pretrained_frame_denoiser.pt'} (pretrained_frame_denoiser): ")
    assert "feature_dim 251, the data has 263" in problems[0]
    assert problems[1].startswith(f"{tmp_path / 'pretrained_latent_denoiser.pt'} (pretrained_latent_denoiser): ")
    assert "latent shape (2, 16), the motion VAE's is (1, 32)" in problems[1]
    # fine-tuning reads only the chosen generator: with mdm chosen, the MLD files are not its business
    for generator, count in (("mdm", 0), ("mld", 1)):
        catalog = _catalog(tmp_path, {"motion_vae": ("vae", "motion_vae"),
                                      "pretrained_latent_denoiser": ("latent_other_size", "latent_denoiser"),
                                      "pretrained_frame_denoiser": ("frame_ok", "frame_denoiser")},
                           {"dataset": {"skeleton": "humanml3d", "fps": 20.0}, "finetune": {"generator": generator}})
        assert len(checkpoint_problems(_pipeline(*inputs, "params:finetune"), catalog)) == count, generator


def test_a_motionlcm_of_another_latent_size_is_named_when_fine_tuning_reads_it(tmp_path):
    """The consistency model decodes through the motion VAE like the MLD: its latent shape is checked; fine-tuning
    checks it (and the VAE) only with finetune.generator = mlcm, and then not the MLD or MDM files."""
    files = {"motion_vae": ("vae", "motion_vae"), "pretrained_latent_denoiser": ("latent_ok", "latent_denoiser"),
             "pretrained_consistency_model": ("lcm_other_size", "latent_consistency_denoiser"),
             "pretrained_frame_denoiser": ("frame_kit", "frame_denoiser")}
    inputs = (*files, "text_embeddings", "params:finetune")
    for generator, named in (("mlcm", ["pretrained_consistency_model"]), ("mld", []),
                             ("mdm", ["pretrained_frame_denoiser"])):
        catalog = _catalog(tmp_path, files, {"dataset": {"skeleton": "humanml3d", "fps": 20.0},
                                             "finetune": {"generator": generator}})
        problems = checkpoint_problems(_pipeline(*inputs), catalog)
        assert [p.split(" (", 1)[1].split(")", 1)[0] for p in problems] == named, generator
        if generator == "mlcm":
            assert "latent shape (2, 16), the motion VAE's is (1, 32)" in problems[0]


def test_kind_text_dim_format_version_and_weight_shapes(tmp_path):
    catalog = _catalog(tmp_path, {"pretrained_latent_denoiser": ("frame_ok", "latent_denoiser"),
                                  "motion_vae": ("vae", "motion_vae"),
                                  "pretrained_frame_denoiser": ("frame_ok", "frame_denoiser")},
                       {"dataset": {"skeleton": "humanml3d", "fps": 20.0}}, text_dim=16)
    problems = checkpoint_problems(_pipeline("pretrained_latent_denoiser", "pretrained_frame_denoiser",
                                             "text_embeddings"), catalog)
    assert "kind 'frame_denoiser', expected 'latent_denoiser'" in problems[1]
    assert "text_dim 384, text_embeddings have 16" in problems[0]
    path = tmp_path / "motion_vae.pt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["format_version"] = 99
    torch.save(ckpt, path)
    assert "format version 99" in checkpoint_problems(_pipeline("motion_vae"), catalog)[0]
    ckpt["format_version"] = 1
    ckpt["config"]["d_model"] = 64  # a config that does not describe its weights
    torch.save(ckpt, path)
    assert "weight(s) do not match a motion_vae built from its config" in \
        checkpoint_problems(_pipeline("motion_vae"), catalog)[0]


def test_fine_tuned_denoisers_are_checked_against_the_evaluation_vae(tmp_path):
    from kedro.io import DataCatalog, MemoryDataset

    models = _models()
    (tmp_path / "finetuned").mkdir()
    CheckpointDataset(str(tmp_path / "motion_vae.pt")).save(make_checkpoint("motion_vae", models["vae"]))
    CheckpointDataset(str(tmp_path / "finetuned" / "good.pt")).save(
        make_checkpoint("latent_denoiser", models["latent_ok"]))
    CheckpointDataset(str(tmp_path / "finetuned" / "other.pt")).save(
        make_checkpoint("latent_denoiser", models["latent_other_size"]))
    evaluation = {"base_models": {"base_mld": {"denoiser": "missing", "vae": "motion_vae"}},
                  "vae_checkpoint": "motion_vae"}
    catalog = DataCatalog({
        "base_model_checkpoints": CheckpointFolderDataset(str(tmp_path)),
        "finetuned_denoisers": CheckpointFolderDataset(str(tmp_path / "finetuned"),
                                                       kinds=["latent_denoiser", "frame_denoiser"]),
        "params:evaluation": MemoryDataset(SimpleNamespace(**evaluation)),
        "params:dataset": MemoryDataset({"skeleton": "humanml3d"}),
    })
    problems = checkpoint_problems(_pipeline("base_model_checkpoints", "finetuned_denoisers"), catalog)
    assert problems == [f"{tmp_path / 'finetuned' / 'other.pt'} (finetuned_denoisers/other): latent shape (2, 16), "
                        f"the motion VAE's is (1, 32)"]


def test_npz_array_shape_reads_the_header_only(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, sentence=np.zeros((5, 7), np.float32), o=np.array([{"a": 1}], dtype=object))
    assert npz_array_shape(path, "sentence") == (5, 7)
    assert npz_array_shape(path, "missing") is None and npz_array_shape(tmp_path / "none.npz", "x") is None


def test_numbers_out_of_range_are_named_before_any_node():
    """#27: runtime.seed=1e23 failed inside a node, generate.num_steps=1e8 in the node without the parameter's name,
    int parameters of 1e26 were accepted."""
    from easytune.checks import parameter_problems

    problems = "\n".join(parameter_problems({"runtime": {"seed": 10**13}, "generate": {"num_steps": 100_000_000},
                                             "evaluation": {"protocol": {"seed": 2**40}},
                                             "pretrain": {"motion_vae": {"train": {"max_steps": 10**26}}}}))
    assert "runtime.seed = 10000000000000: must be in [0, 4294967295]" in problems
    assert "generate.num_steps = 100000000: must be in [1, 1000]" in problems
    assert "evaluation.protocol.seed = 1099511627776: must be in [0, 4294967295]" in problems
    assert "pretrain.motion_vae.train.max_steps = " in problems and "must be within 64-bit integers" in problems
