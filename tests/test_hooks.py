from types import SimpleNamespace

import pytest

from easytune.hooks import MissingUpstreamError, UpstreamArtifactsHook, missing_upstream_message


class _Catalog:
    def __init__(self, existing):
        self.existing = set(existing)

    def exists(self, name):
        return name in self.existing


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
