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
    pipeline = SimpleNamespace(inputs=lambda: {"params:finetune", "parameters", "motion_vae", "train_motions"},
                               all_outputs=lambda: {"finetune_report"})
    hook = UpstreamArtifactsHook()
    hook.before_pipeline_run({}, pipeline, _Catalog({"motion_vae", "train_motions"}))  # nothing missing
    with pytest.raises(MissingUpstreamError, match="train_motions"):
        hook.before_pipeline_run({}, pipeline, _Catalog({"motion_vae"}))


def test_optional_inputs_are_reported_only_when_all_of_them_are_missing(monkeypatch):
    """Fine-tuning needs one pretrained generator: after `pretrain --tags mld` the missing MDM checkpoint is fine;
    on a fresh project (every generator missing) the hook still names `pretrain`."""
    monkeypatch.setattr("easytune.hooks._producers", lambda name: ["pretrain"])
    optional = {"motion_vae", "pretrained_latent_denoiser", "pretrained_frame_denoiser"}
    pipeline = SimpleNamespace(inputs=lambda: optional | {"reward_model", "params:finetune"},
                               all_outputs=lambda: {"finetune_report"})
    hook = UpstreamArtifactsHook()
    hook.before_pipeline_run({}, pipeline, _Catalog({"reward_model", "motion_vae", "pretrained_latent_denoiser"},
                                                    optional))
    with pytest.raises(MissingUpstreamError, match="pretrained_frame_denoiser") as info:
        hook.before_pipeline_run({}, pipeline, _Catalog({"reward_model"}, optional))
    assert "motion_vae" in str(info.value) and "run first: `kedro run --pipeline pretrain`" in str(info.value)
    # the main job trains the MLD generator itself: the MDM checkpoint, its only optional input, may be missing
    main_job = SimpleNamespace(inputs=lambda: {"pretrained_frame_denoiser", "params:finetune"},
                               all_outputs=lambda: {"motion_vae", "pretrained_latent_denoiser"})
    hook.before_pipeline_run({}, main_job, _Catalog(set(), optional))


def test_a_signal_inside_an_mlflow_store_write_is_raised_once_the_write_is_done():
    """SIGTERM/SIGINT end the run (KILLED in MLflow), but never in the middle of a write to the tracking store: there
    it is deferred to the next hook call (a half-written sqlite transaction would block marking the run KILLED)."""
    import signal

    from easytune.hooks import EasyTuneMlflowHook

    hook = EasyTuneMlflowHook()
    store_frame = SimpleNamespace(f_code=SimpleNamespace(co_filename="/x/site-packages/sqlalchemy/orm/session.py"),
                                  f_back=SimpleNamespace(f_code=SimpleNamespace(co_filename="/x/node.py"), f_back=None))
    hook._on_signal(signal.SIGTERM, store_frame)  # deferred: no exception here
    assert hook._signal == "SIGTERM"
    with pytest.raises(SystemExit) as info:
        hook._raise_deferred()
    assert info.value.code == 128 + signal.SIGTERM
    hook._raise_deferred()  # raised once only
    node_frame = SimpleNamespace(f_code=SimpleNamespace(co_filename="/p/src/easytune/core/training.py"), f_back=None)
    with pytest.raises(KeyboardInterrupt):
        hook._on_signal(signal.SIGINT, node_frame)


def test_validated_configs_are_logged_as_the_dicts_kedro_mlflow_flattens():
    from easytune.core.infra.config import RuntimeConfig
    from easytune.hooks import _plain

    assert _plain(RuntimeConfig(seed=3)) == {"device": "auto", "seed": 3, "threads": "auto",
                                                 "distributed": {"nproc_per_node": 1}}
    assert _plain({"a": 1}) == {"a": 1} and _plain(RuntimeConfig) is RuntimeConfig


def test_an_unknown_env_or_pipeline_is_refused_when_the_context_is_created(tmp_path, monkeypatch):
    """#27: `--env nosuchenv` used to fail in MLflow's file store, `--pipeline nosuch` with a bare ImportError."""
    from kedro.framework.project import pipelines

    from easytune.hooks import RunTargetCheckHook, UnknownEnvironmentError
    from easytune.pipeline_registry import UnknownPipelineError

    for env in ("base", "tiny"):
        (tmp_path / env).mkdir()

    def context(env):
        return SimpleNamespace(env=env, config_loader=SimpleNamespace(conf_source=str(tmp_path), base_env="base",
                                                                      default_run_env="local"))

    monkeypatch.setattr(pipelines, "_requested_pipelines", None)
    hook = RunTargetCheckHook()
    for env in ("tiny", "local", None):  # the default run environment may be absent (a fresh clone)
        hook.after_context_created(context(env))
    with pytest.raises(UnknownEnvironmentError, match=r"unknown environment --env 'nosuchenv': .* known "
                                                      r"environments: tiny$"):
        hook.after_context_created(context("nosuchenv"))
    monkeypatch.setattr(pipelines, "_requested_pipelines", ["generate", "__default__"])
    hook.after_context_created(context("tiny"))
    monkeypatch.setattr(pipelines, "_requested_pipelines", ["generate", "nosuch"])
    with pytest.raises(UnknownPipelineError, match=r"unknown pipeline\(s\) \['nosuch'\] .* known pipelines: "
                                                   r"bvh_ingest, data_processing, .*generate"):
        hook.after_context_created(context("tiny"))
