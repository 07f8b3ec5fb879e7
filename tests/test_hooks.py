from types import SimpleNamespace

import pytest

from easytune.hooks import MissingUpstreamError, UpstreamArtifactsHook, missing_upstream_message


class _Catalog:
    def __init__(self, existing, optional=()):
        self.existing = set(existing)
        self.optional = set(optional)

    def exists(self, name):
        return name in self.existing

    def get(self, name):
        return SimpleNamespace(optional=name in self.optional)


def test_message_names_the_pipeline_to_run_first():
    msg = missing_upstream_message({"reward_model": ["reward"], "motion_vae": ["pretrain"]})
    assert "reward_model (produced by `kedro run --pipeline reward`)" in msg
    assert "run first: `kedro run --pipeline pretrain`, then `kedro run --pipeline reward`" in msg


def test_hook_raises_only_for_missing_non_parameter_inputs(monkeypatch):
    monkeypatch.setattr("easytune.hooks._producers", lambda name: ["pretrain"])
    pipeline = SimpleNamespace(inputs=lambda: {"params:finetune", "parameters", "motion_vae", "train_motions"})
    hook = UpstreamArtifactsHook()
    hook.before_pipeline_run({}, pipeline, _Catalog({"motion_vae", "train_motions"}))  # nothing missing
    with pytest.raises(MissingUpstreamError, match="train_motions"):
        hook.before_pipeline_run({}, pipeline, _Catalog({"motion_vae"}))


def test_optional_inputs_are_reported_only_when_all_of_them_are_missing(monkeypatch):
    """Fine-tuning needs one pretrained generator: after `pretrain --tags mld` the missing MDM checkpoint is fine;
    on a fresh project (every generator missing) the hook still names `pretrain`."""
    monkeypatch.setattr("easytune.hooks._producers", lambda name: ["pretrain"])
    optional = {"motion_vae", "pretrained_latent_denoiser", "pretrained_frame_denoiser"}
    pipeline = SimpleNamespace(inputs=lambda: optional | {"reward_model", "params:finetune"})
    hook = UpstreamArtifactsHook()
    hook.before_pipeline_run({}, pipeline, _Catalog({"reward_model", "motion_vae", "pretrained_latent_denoiser"},
                                                    optional))
    with pytest.raises(MissingUpstreamError, match="pretrained_frame_denoiser") as info:
        hook.before_pipeline_run({}, pipeline, _Catalog({"reward_model"}, optional))
    assert "motion_vae" in str(info.value) and "run first: `kedro run --pipeline pretrain`" in str(info.value)
