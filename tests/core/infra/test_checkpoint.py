"""Checkpoint headers against their consumers (framework-free): kind, format version, config, weight shapes,
feature / text dimensions and the VAE's latent shape."""

import torch

from easytune.core.infra.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    compatibility_problems,
    latent_shape,
    make_checkpoint,
)
from easytune.core.models.latent_denoiser import LatentDenoiser, LatentDenoiserConfig
from easytune.core.models.vae import MotionVAE, MotionVAEConfig


def _header(ckpt: dict) -> dict:
    header = {k: ckpt[k] for k in ("kind", "config", "format_version")}
    header["shapes"] = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items()}
    return header


def test_a_fitting_checkpoint_has_no_problem_and_each_mismatch_is_named():
    torch.manual_seed(0)
    vae = make_checkpoint("motion_vae", MotionVAE(MotionVAEConfig(preset="tiny")))
    den = make_checkpoint("latent_denoiser", LatentDenoiser(LatentDenoiserConfig(preset="tiny", latent_tokens=1,
                                                                                 latent_dim=32)))
    assert vae["format_version"] == CHECKPOINT_FORMAT_VERSION
    assert latent_shape(vae["config"]) == (1, 32)
    assert compatibility_problems(_header(vae), kinds=["motion_vae"], feature_dim=263) == []
    assert compatibility_problems(_header(den), kinds=["latent_denoiser"], text_dim=384, vae_latent=(1, 32)) == []
    assert compatibility_problems(_header(vae), feature_dim=251) == ["feature_dim 263, the data has 251"]
    assert compatibility_problems(_header(den), vae_latent=(8, 64)) == [
        "latent shape (1, 32), the motion VAE's is (8, 64)"]
    assert compatibility_problems(_header(den), text_dim=512) == ["text_dim 384, text_embeddings have 512"]
    assert compatibility_problems(_header(den), kinds=["frame_denoiser"]) == [
        "kind 'latent_denoiser', expected 'frame_denoiser'"]
    old = {k: v for k, v in _header(vae).items() if k != "format_version"}  # written before the field existed
    assert compatibility_problems(old) == []
    assert "format version 2" in compatibility_problems({**_header(vae), "format_version": 2})[0]
    bad_config = {**_header(vae), "config": {**vae["config"], "widht": 3}}
    assert "its config does not fit this code's motion_vae" in compatibility_problems(bad_config)[0]
    shapes = dict(_header(den)["shapes"])
    name = next(iter(shapes))
    shapes[name] = (7,)
    problem = compatibility_problems({**_header(den), "shapes": shapes})[0]
    assert problem.startswith("1 weight(s) do not match a latent_denoiser built from its config") and "(7,)" in problem
