"""Fine-tuning as one job for one process, local workers or ``torchrun`` across machines (framework-free).

- :func:`run_finetune_job` is what the ``finetune`` node does for one method: rebuild the generator and the reward
  from their checkpoints, run :func:`~easytune.core.finetune.trainer.finetune`, return (fine-tuned checkpoint,
  metric histories, summary). Under a process group every rank runs it (data-parallel, see
  :mod:`easytune.core.infra.distributed`) and rank 0's result is the run's.
- :func:`launch_finetune_job` runs it in ``nproc`` local workers (the node's ``runtime.distributed.nproc_per_node``):
  the inputs go through a temporary folder (checkpoints with ``torch.save``, arrays as ``.npy`` memory-mapped by
  every worker, so a large dataset is not copied once per worker), and rank 0's result comes back.
- ``python -m easytune.core.finetune.job finetune`` is the ``torchrun`` entry point for several machines. It
  reads the project's configuration files (``conf/base`` then ``conf/<env>``, merged key by key as Kedro merges
  parameters, then ``--params`` overrides) and the artifacts at the paths of the project's catalog, and rank 0 writes
  the checkpoint, the method's summary and its line of ``finetune_report`` where the catalog expects them, so
  ``kedro run --pipeline evaluation`` scores the model. Every machine needs the project folder with those artifacts
  (a shared or copied folder); only rank 0's machine gets the outputs::

      torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 --rdzv-id run1 \\
          -m easytune.core.finetune.job finetune --project /path/to/project --env local \\
          --method easytune_step --params finetune.common.batch_size=256

  MLflow is not touched here (the core is framework-free): the summary and the per-update curves are in
  ``data/08_reporting/finetune/<method>_summary.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from easytune.core.data.dataset import MotionSplit, TextEmbeddings
from easytune.core.finetune import load_finetune_reward, load_generator, reward_inputs_needed
from easytune.core.finetune.config import FinetuneConfig, FinetuneSettings
from easytune.core.finetune.trainer import finetune
from easytune.core.infra import distributed
from easytune.core.infra.atomic import atomic_torch_save
from easytune.core.infra.checkpoint import make_checkpoint
from easytune.core.infra.config import RuntimeConfig, from_dict, to_dict
from easytune.core.infra.project_lock import ProjectLock
from easytune.core.infra.runtime import seed_everything

log = logging.getLogger(__name__)

#: per-update series copied into each method's summary (``curves``: [[update, value], ...])
CURVES = ("train_reward", "val_reward", "s_per_update", "peak_saved_bytes", "samples_per_s")
#: catalog entries the job reads (``{method}`` is the method's namespace)
INPUTS = {"pretrained_latent_denoiser": "mld", "pretrained_frame_denoiser": "mdm",
          "pretrained_consistency_model": "mlcm", "motion_vae": "mld", "reward_model": None, "train_motions": None,
          "val_motions": None, "text_embeddings": None}
SPLITS = ("train", "val", "text")


@dataclass
class FinetuneJob:
    """Everything one fine-tuning run needs: the chosen pretrained denoiser checkpoint (+ the motion VAE's for
    ``mld`` and ``mlcm``), the reward model checkpoint, the train / val splits and text embeddings as arrays (fine-tuning reads
    captions and lengths only: :func:`without_features` drops the motion features for transport), the config and
    the seed."""

    denoiser: dict
    vae: dict | None
    reward: dict
    train: dict[str, np.ndarray]
    val: dict[str, np.ndarray]
    text: dict[str, np.ndarray]
    config: FinetuneConfig
    seed: int
    generator: str = "mld"
    source: str = "pretrained denoiser"
    extra: dict[str, dict | None] = field(default_factory=dict)  # reward_ensemble members, realism critic


def without_features(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A motion split's arrays with ``features`` (N, T, D) replaced by an empty (N, T, 0) array: what fine-tuning
    reads of a split (lengths, captions, T) without the motions themselves."""
    out = dict(arrays)
    features = np.asarray(arrays["features"])
    out["features"] = np.zeros((*features.shape[:2], 0), dtype=np.float32)
    return out


def run_finetune_job(device: torch.device, job: FinetuneJob) -> tuple[dict, dict, dict]:
    """-> (fine-tuned denoiser checkpoint, metric histories, summary) of one method (on every rank of a process
    group; rank 0's is the run's)."""
    seed_everything(job.seed)
    text = TextEmbeddings.from_arrays(job.text, source="text_embeddings")
    splits = {}
    for name, arrays in (("train_motions", job.train), ("val_motions", job.val)):
        splits[name] = MotionSplit.from_arrays(arrays, source=name)
        splits[name].check_against(text, name)
    generator = load_generator(job.denoiser, job.vae, device, source=job.source)
    reward = load_finetune_reward(job.reward, device, job.config, job.extra)
    result = finetune(generator, reward, splits["train_motions"], splits["val_motions"], text, job.config,
                      seed=job.seed, device=device)
    summary = {**result.summary, "generator": job.generator, "device": str(device)}
    metadata = {**job.denoiser.get("metadata", {}), "method": job.config.method, "finetune": to_dict(job.config),
                "summary": summary}
    # the per-update curves a notebook plots from the catalog (the same series are MLflow metric histories)
    summary["curves"] = {name: [[r["step"], r["value"]] for r in result.history.get(name, [])] for name in CURVES}
    return make_checkpoint(job.denoiser["kind"], result.denoiser, metadata), result.history, summary


# ------------------------------------------------------------------------------------------------ local workers
def save_job(job: FinetuneJob, folder: Path) -> None:
    """Write ``job`` to ``folder``: ``job.pt`` (checkpoints, config, seed) and one ``<split>.<key>.npy`` per array."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"denoiser": job.denoiser, "vae": job.vae, "reward": job.reward, "config": to_dict(job.config),
                "seed": int(job.seed), "generator": job.generator, "source": job.source, "extra": job.extra},
               folder / "job.pt")
    for split in SPLITS:
        for key, array in getattr(job, split).items():
            np.save(folder / f"{split}.{key}.npy", np.asarray(array), allow_pickle=False)


def load_job(folder: Path) -> FinetuneJob:
    """Read what :func:`save_job` wrote (weights-only; arrays memory-mapped read-only, no pickle)."""
    head = torch.load(folder / "job.pt", map_location="cpu", weights_only=True)
    arrays: dict[str, dict[str, np.ndarray]] = {split: {} for split in SPLITS}
    for path in sorted(folder.glob("*.npy")):
        split, key = path.stem.split(".", 1)
        arrays[split][key] = np.load(path, mmap_mode="r", allow_pickle=False)
    return FinetuneJob(head["denoiser"], head["vae"], head["reward"], arrays["train"], arrays["val"], arrays["text"],
                       from_dict(FinetuneConfig, head["config"], where="job.config"), int(head["seed"]),
                       head["generator"], head["source"], head.get("extra") or {})


def _job_worker(device: torch.device, folder: str) -> tuple[dict, dict, dict]:
    return run_finetune_job(device, load_job(Path(folder)))


def launch_finetune_job(job: FinetuneJob, nproc: int, device: str = "auto") -> tuple[dict, dict, dict]:
    """Run ``job`` data-parallel in ``nproc`` local workers (torch's elastic launcher) and return rank 0's result."""
    folder = Path(tempfile.mkdtemp(prefix="easytune-job-"))
    try:
        save_job(FinetuneJob(job.denoiser, job.vae, job.reward, without_features(job.train),
                             without_features(job.val), job.text, job.config, job.seed, job.generator, job.source,
                             job.extra),
                 folder)
        log.info("fine-tuning %s in %d local workers", job.config.method, nproc)
        return distributed.launch_local(_job_worker, (str(folder),), nproc=nproc, device=device)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ torchrun entry
def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


def _read_yaml_group(conf: Path, env: str, pattern: str) -> dict:
    """``conf/base/<pattern>`` then ``conf/<env>/<pattern>`` files, merged key by key (Kedro's soft merge)."""
    import yaml

    merged: dict = {}
    for folder in ("base", env):
        for path in sorted((conf / folder).glob(pattern)):
            data = yaml.safe_load(path.read_text()) or {}
            if not isinstance(data, dict):
                raise ValueError(f"{path}: expected a mapping at the top level")
            merged = _deep_merge(merged, data)
    return merged


def parse_params(text: str | None) -> dict:
    """``--params`` as ``kedro run`` reads it (``a.b=1,c.d=x``; values parsed by OmegaConf's dot-list, so ``1e-3``
    is a float here exactly when it is one for Kedro) -> nested dict."""
    from omegaconf import OmegaConf

    items = [part.strip() for part in (text or "").split(",") if part.strip()]
    for item in items:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--params: {item!r} is not key=value")
    return OmegaConf.to_container(OmegaConf.from_dotlist(items)) if items else {}


def _no_interpolation(value: Any, where: str) -> Any:
    if isinstance(value, str) and "${" in value:
        raise ValueError(f"{where}: {value!r} uses an interpolation this entry point does not resolve; give the "
                         f"value with --params")
    if isinstance(value, dict):
        return {k: _no_interpolation(v, f"{where}.{k}") for k, v in value.items()}
    return value


def catalog_paths(conf: Path, env: str, method: str, extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Filepaths of the entries the job reads and writes, as the project's catalog declares them (``extra``: other
    inputs it reads, e.g. ensemble members)."""
    catalog = _read_yaml_group(conf, env, "catalog*.yml")
    wanted = [*INPUTS, *extra, f"{method}.finetuned_denoiser", f"{method}.finetune_summary", "finetune_report"]
    out = {}
    for name in wanted:
        entry = catalog.get(name) or catalog.get(name.replace(method, "{method}", 1))
        if not isinstance(entry, dict) or "filepath" not in entry:
            raise ValueError(f"catalog entry {name!r} with a filepath not found under {conf}/base or {conf}/{env}")
        out[name] = _no_interpolation(str(entry["filepath"]).replace("{method}", method), f"catalog {name}")
    return out


def load_npz(path: Path, *, skip_features: bool = False) -> dict[str, np.ndarray]:
    """Arrays of an ``.npz`` (no pickle). ``skip_features``: ``features`` is not read, only its header (shape), and
    replaced by an empty (N, T, 0) array (see :func:`without_features`)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found (run the pipeline that writes it first)")
    with np.load(path, allow_pickle=False) as data:
        out = {k: data[k] for k in data.files if not (skip_features and k == "features")}
        if skip_features and "features" in data.files:
            with zipfile.ZipFile(path) as archive, archive.open("features.npy") as f:
                version = np.lib.format.read_magic(f)
                shape = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                         else np.lib.format.read_array_header_2_0(f))[0]
            out["features"] = np.zeros((*shape[:2], 0), dtype=np.float32)
    return out


def _load_checkpoint(path: Path, name: str, required: bool) -> dict | None:
    if not path.exists():
        if required:
            raise FileNotFoundError(f"{name} ({path}) does not exist: run the pipeline that trains it first")
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or not {"kind", "config", "state_dict", "metadata"} <= set(ckpt):
        raise ValueError(f"{path}: not a checkpoint dict with kind/config/state_dict/metadata")
    return ckpt


def project_parameters(project: Path, env: str, params_override: str | None = None) -> dict:
    """The parameters ``kedro run --env <env> --params ...`` would see: ``conf/base`` then ``conf/<env>``, merged key
    by key, then the overrides. An environment that does not exist is an error (Kedro's is too)."""
    conf = project / "conf"
    if not (conf / "base").is_dir():
        raise ValueError(f"{project}: not a project folder (no conf/base)")
    if not (conf / env).is_dir():
        known = sorted(p.name for p in conf.iterdir() if p.is_dir() and p.name != "base")
        raise ValueError(f"--env {env!r}: {conf / env} does not exist; environments of this project: {known}")
    return _deep_merge(_read_yaml_group(conf, env, "parameters*.yml"), parse_params(params_override))


def job_from_project(project: Path, env: str, method: str, params_override: str | None = None
                     ) -> tuple[FinetuneJob, dict[str, Path], RuntimeConfig]:
    """The :class:`FinetuneJob` of ``method`` from a project folder: its parameters (``finetune``, ``runtime``,
    validated by the same typed configs as under ``kedro run``: unknown keys, types and ranges) and the artifacts
    its catalog names. Returns (job, output paths, runtime parameters)."""
    conf = project / "conf"
    params = project_parameters(project, env, params_override)
    settings = from_dict(FinetuneSettings, _no_interpolation(params.get("finetune") or {}, "params:finetune"),
                         where="params:finetune")
    runtime = from_dict(RuntimeConfig, _no_interpolation(params.get("runtime") or {}, "params:runtime"),
                        where="params:runtime")
    config = settings.method(method)
    spec = settings.spec
    extra = reward_inputs_needed(config)
    paths = {name: project / p for name, p in catalog_paths(conf, env, method, tuple(extra)).items()}
    job = FinetuneJob(
        denoiser=_load_checkpoint(paths[spec.checkpoint], spec.checkpoint, True),
        vae=_load_checkpoint(paths["motion_vae"], "motion_vae", True) if spec.latent else None,
        reward=_load_checkpoint(paths["reward_model"], "reward_model", True),
        train=load_npz(paths["train_motions"], skip_features=True),
        val=load_npz(paths["val_motions"], skip_features=True),
        text=load_npz(paths["text_embeddings"]),
        config=config, seed=int(runtime.seed), generator=settings.generator, source=spec.checkpoint,
        extra={name: _load_checkpoint(paths[name], name, True) for name in extra})
    outputs = {"checkpoint": paths[f"{method}.finetuned_denoiser"], "summary": paths[f"{method}.finetune_summary"],
               "report": paths["finetune_report"]}
    return job, outputs, runtime


def write_outputs(result: tuple[dict, dict, dict], outputs: dict[str, Path]) -> None:
    """Rank 0: the checkpoint, the method's summary and its entry of ``finetune_report`` (other methods kept)."""
    ckpt, _, summary = result
    atomic_torch_save(ckpt, outputs["checkpoint"])
    for path, payload in ((outputs["summary"], summary), (outputs["report"], None)):
        if payload is None:
            report = json.loads(path.read_text()) if path.exists() else {}
            report[summary["method"]] = {k: v for k, v in summary.items() if k != "curves"}
            payload = report
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m easytune.core.finetune.job",
                                     description="Data-parallel fine-tuning under torchrun (framework-free).")
    sub = parser.add_subparsers(dest="command", required=True)
    ft = sub.add_parser("finetune", help="fine-tune one method of params:finetune.methods")
    ft.add_argument("--project", default=".", help="project folder (conf/ and the data/ artifacts); default: cwd")
    ft.add_argument("--env", default=os.environ.get("KEDRO_ENV", "local"),
                    help="configuration environment merged over conf/base (default: $KEDRO_ENV or local)")
    ft.add_argument("--method", default="easytune_step", help="a key of finetune.methods (default easytune_step)")
    ft.add_argument("--params", default=None, help="overrides, Kedro syntax: a.b=1,c.d=x")
    ft.add_argument("--device", default=None, help="auto, cpu or cuda (default: runtime.device)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"[rank {os.environ.get('RANK', '0')}] %(asctime)s %(name)s "
                                                   "%(levelname)s: %(message)s")
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    project = Path(args.project).resolve()
    os.chdir(project)  # relative paths (resume files) mean what they mean under `kedro run`
    job, outputs, runtime = job_from_project(project, args.env, args.method, args.params)
    lock = ProjectLock(project) if int(os.environ.get("RANK", "0")) == 0 else None
    if lock is not None:  # rank 0 writes the project's artifacts: one run at a time per project folder, as kedro run
        lock.acquire(f"torchrun finetune {args.method}")
    try:
        ctx, device = distributed.init_from_env(args.device or runtime.device)
        with distributed.fail_fast():  # a failure on any rank stops every rank within a second, its cause printed
            result = run_finetune_job(device, job)
            if ctx.is_main:
                write_outputs(result, outputs)
                log.info("wrote %s and %s", outputs["checkpoint"], outputs["summary"])
    finally:
        if lock is not None:
            lock.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
