"""The fine-tuning job and the torchrun entry point's reading of a project (parameters, catalog paths, arrays)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from easytune.core.finetune.config import FinetuneConfig
from easytune.core.finetune.job import (
    FinetuneJob,
    catalog_paths,
    job_from_project,
    load_job,
    load_npz,
    parse_params,
    run_finetune_job,
    save_job,
    without_features,
    write_outputs,
)
from easytune.core.infra.config import from_dict
from tests.core.finetune.tiny import make_mdm, make_reward, make_splits


def test_params_overrides_use_kedro_syntax():
    assert parse_params("finetune.common.batch_size=8,runtime.device=cpu,finetune.common.bf16=true,a.b=2.5") == {
        "finetune": {"common": {"batch_size": 8, "bf16": True}}, "runtime": {"device": "cpu"}, "a": {"b": 2.5}}
    assert parse_params(None) == {}
    for bad in ("oops", "a.b:2.5"):  # Kedro 1.x refuses the colon form too
        with pytest.raises(ValueError, match="is not key=value"):
            parse_params(bad)


def test_params_values_are_read_as_kedro_reads_them():
    """Reliability (#27): `lr=1e-3` is a float for `kedro run --params`; it was a string (and refused) here."""
    from kedro.framework.cli.utils import _split_params

    text = "finetune.common.lr=1e-3,finetune.common.max_frames=null,runtime.seed=7,finetune.common.policy.steps=all"
    assert parse_params(text) == _split_params(None, None, text)
    assert parse_params(text)["finetune"]["common"]["lr"] == 1e-3


@pytest.mark.parametrize(("override", "message"), [
    ("finetune.commn.max_updates=1", "unknown key(s) ['commn']"),
    ("runtime.sed=5", "unknown key(s) ['sed']"),
    ("finetune.common.lr=-1", "finetune.common.lr"),
])
def test_the_torchrun_entry_validates_parameters_as_kedro_does(project_root, override, message):
    """Reliability (#27): key typos and out-of-range values are refused by the typed configs Kedro uses."""
    from easytune.core.infra.config import ConfigError

    with pytest.raises(ConfigError) as err:
        job_from_project(project_root, "tiny", "easytune_step", override)
    assert message in str(err.value)


def test_the_torchrun_entry_refuses_an_unknown_environment(project_root):
    with pytest.raises(ValueError, match=r"--env 'nosuchenv'.*environments of this project: \[.*'tiny'"):
        job_from_project(project_root, "nosuchenv", "easytune_step")


def test_catalog_paths_are_the_project_catalogs(project_root):
    paths = catalog_paths(project_root / "conf", "tiny", "draft_k")
    assert paths["draft_k.finetuned_denoiser"] == "data/06_models/finetuned/draft_k.pt"
    assert paths["draft_k.finetune_summary"] == "data/08_reporting/finetune/draft_k_summary.json"
    assert paths["train_motions"] == "data/05_model_input/train_motions.npz"
    assert paths["pretrained_latent_denoiser"] == "data/06_models/pretrained_latent_denoiser.pt"
    assert paths["finetune_report"] == "data/08_reporting/finetune_report.json"


def test_npz_without_features_reads_only_their_shape(tmp_path):
    train, _, _ = make_splits(10)
    np.savez(tmp_path / "train.npz", **train.to_arrays())
    arrays = load_npz(tmp_path / "train.npz", skip_features=True)
    assert arrays["features"].shape == (*train.features.shape[:2], 0)
    np.testing.assert_array_equal(arrays["lengths"], train.lengths)
    assert without_features(train.to_arrays())["features"].shape == arrays["features"].shape
    with pytest.raises(FileNotFoundError, match="run the pipeline that writes it first"):
        load_npz(tmp_path / "missing.npz")


def _job(**config) -> FinetuneJob:
    from easytune.core.infra.checkpoint import make_checkpoint

    train, val, text = make_splits(10)
    mdm = make_mdm(steps=4)
    options = dict(batch_size=2, num_steps=4, max_updates=2, lr=1e-3, val_every=2, val_captions=2, **config)
    return FinetuneJob(make_checkpoint("frame_denoiser", mdm.denoiser, mdm.checkpoint_metadata()), None,
                       make_checkpoint("retrieval_model", make_reward().model), without_features(train.to_arrays()),
                       without_features(val.to_arrays()), text.to_arrays(), from_dict(FinetuneConfig, options), 3,
                       "mdm", "pretrained_frame_denoiser")


def test_saved_job_round_trips_and_runs_the_same(tmp_path, one_torch_thread):
    job = _job()
    save_job(job, tmp_path / "job")
    back = load_job(tmp_path / "job")
    assert back.config == job.config and back.seed == 3 and back.generator == "mdm" and back.vae is None
    for split in ("train", "val", "text"):
        for key, value in getattr(job, split).items():
            np.testing.assert_array_equal(getattr(back, split)[key], value)
    assert isinstance(back.text["tokens"], np.memmap)  # shared by the workers, not copied
    (a, _, sa), (b, _, sb) = run_finetune_job(torch.device("cpu"), job), run_finetune_job(torch.device("cpu"), back)
    for name in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][name], b["state_dict"][name], rtol=0, atol=0)
    assert sa["updates"] == sb["updates"] == 2 and sa["world_size"] == 1
    assert set(sa["curves"]) >= {"train_reward", "samples_per_s"}
    assert a["kind"] == "frame_denoiser" and a["metadata"]["method"] == "easytune_step"


def test_outputs_go_where_the_catalog_expects_them(tmp_path):
    report = tmp_path / "reporting" / "finetune_report.json"
    report.parent.mkdir()
    report.write_text(json.dumps({"draft_k": {"method": "draft_k"}}))
    ckpt = {"kind": "frame_denoiser", "config": {}, "state_dict": {"w": torch.ones(2)}, "metadata": {}}
    summary = {"method": "easytune_step", "updates": 4, "curves": {"train_reward": [[1, 0.5]]}}
    outputs = {"checkpoint": tmp_path / "models" / "easytune_step.pt",
               "summary": tmp_path / "reporting" / "finetune" / "easytune_step_summary.json", "report": report}
    write_outputs((ckpt, {}, summary), outputs)
    assert torch.load(outputs["checkpoint"], weights_only=True)["state_dict"]["w"].tolist() == [1.0, 1.0]
    assert json.loads(outputs["summary"].read_text()) == summary
    assert json.loads(report.read_text()) == {"draft_k": {"method": "draft_k"},
                                              "easytune_step": {"method": "easytune_step", "updates": 4}}


def test_project_job_names_the_missing_artifact_and_the_unknown_method(tmp_path, project_root):
    import shutil

    shutil.copytree(project_root / "conf", tmp_path / "conf")
    with pytest.raises(ValueError, match=r"finetune.methods has no 'nope'; known: \['alignprop'"):
        job_from_project(tmp_path, "tiny", "nope")
    with pytest.raises(FileNotFoundError, match=r"pretrained_latent_denoiser \(.*pretrained_latent_denoiser.pt\) "
                                                r"does not exist"):
        job_from_project(tmp_path, "tiny", "draft_k", "finetune.common.batch_size=4")
    with pytest.raises(FileNotFoundError, match=r"pretrained_consistency_model \(.*pretrained_consistency_model.pt\) "
                                                r"does not exist"):  # the torchrun entry fine-tunes MotionLCM too
        job_from_project(tmp_path, "tiny", "draft_k", "finetune.generator=mlcm")
    with pytest.raises(ValueError, match=r"params:finetune.generator = 'mlx': must be one of \['mld', 'mdm', 'mlcm', "
                                         r"'released_mld'\]"):
        job_from_project(tmp_path, "tiny", "draft_k", "finetune.generator=mlx")


def test_a_failure_on_rank_zero_alone_stops_the_local_workers_with_its_cause(tmp_path):
    """Rank 0 alone writes the resume file; under a path that cannot be a folder it fails while rank 1 waits in the
    next update's all-reduce. Before issue #27's fix both ranks waited until the group's 1,800 s timeout, printing
    nothing; now the launcher raises rank 0's error within seconds (bounded here by a 120 s process-group kill)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    code = ("import time\n"
            "from easytune.core.finetune.job import launch_finetune_job\n"
            "from tests.core.finetune.test_job import _job\n"
            f"job = _job(resume_path={str(blocker / 'easytune_step.pt')!r}, save_every_updates=1)\n"
            "try:\n"
            "    launch_finetune_job(job, nproc=2, device='cpu')\n"
            "except Exception as exc:\n"
            "    print('RAISED', type(exc).__name__)\n"
            "    print(exc)\n")
    env = {**os.environ, "PYTHONPATH": f"{root / 'src'}{os.pathsep}{root}", "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the workers still ran after 120 s (a hang):\n{out[-4000:]}")
    assert time.monotonic() - started < 120
    message = out.split("RAISED WorkerFailed", 1)[-1]
    assert "RAISED WorkerFailed" in out and "rank 0 failed" in message and "not_a_folder" in message, out[-4000:]
