"""Start-of-run checks (used by :mod:`easytune.hooks`): every parameter, and every checkpoint a run will read.

Parameters. A node's ``params:<key>`` argument annotated with a config dataclass is validated and converted by
Kedro itself before the run, for the pipelines being run. :func:`parameter_problems` adds the rest: the groups of
the pipelines not being run (so a broken ``finetune`` group fails ``kedro run --pipeline data_processing`` too)
and the top-level keys no node of any pipeline reads -- an unknown top-level key (a typo in a YAML file or in
``--params``) is an error, not a silently ignored value.

Checkpoints. :func:`checkpoint_problems` reads the header of every checkpoint that is a free input of the run
(kind, config, format version, weight shapes; weights memory-mapped, never loaded) and compares it with what
will consume it: the data's feature dimension (from ``params:dataset``), the text embeddings' dimension, the
motion VAE's latent shape for latent denoisers.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import zipfile
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from kedro.pipeline import Pipeline
from kedro.validation.type_extractor import TypeExtractor
from kedro.validation.utils import _unwrap_optional

from easytune.core.infra.checkpoint import compatibility_problems, latent_shape
from easytune.core.infra.config import ConfigError, DatasetConfig, from_dict


@lru_cache(maxsize=1)
def all_pipelines() -> dict[str, Pipeline]:
    """Every pipeline of the project, built directly (``kedro run --pipeline X`` loads only X)."""
    import easytune.pipelines

    found = {}
    for info in pkgutil.iter_modules(easytune.pipelines.__path__):
        module = importlib.import_module(f"easytune.pipelines.{info.name}")
        if hasattr(module, "create_pipeline"):
            found[info.name] = module.create_pipeline()
    return found


def parameter_groups() -> dict[str, type | None]:
    """Top-level parameter key -> the config dataclass its nodes are annotated with (None: untyped), for every
    ``params:<key>[.<sub>]`` input of every node of every pipeline."""
    groups: dict[str, type | None] = {}
    for pipeline in all_pipelines().values():
        for name in pipeline.inputs():
            if name.startswith("params:"):
                groups.setdefault(name[len("params:"):].split(".", 1)[0], None)
    for key, typ in TypeExtractor(all_pipelines()).extract_types_from_pipelines().items():
        if "." not in key:
            groups[key] = _unwrap_optional(typ)
    return groups


def parameter_problems(params: Mapping[str, Any]) -> list[str]:
    """Problems of the resolved parameters (``context.params``): unknown top-level keys, and groups that do not
    build as their config dataclass (those Kedro already built for this run are instances and pass)."""
    groups = parameter_groups()
    problems = []
    unknown = sorted(set(params) - set(groups))
    if unknown:
        problems.append(f"unknown top-level parameter key(s) {unknown}: no node of any pipeline reads them (a typo "
                        f"in conf/*/parameters*.yml or in --params?); known keys: {sorted(groups)}")
    for key, cls in sorted(groups.items()):
        if cls is None or key not in params or params[key] is None or isinstance(params[key], cls):
            continue
        try:
            from_dict(cls, params[key], where=key)
        except ConfigError as exc:
            problems.append(f"Parameter '{key}': {exc}")
    return problems


# ------------------------------------------------------------------------------------------------- checkpoints
def npz_array_shape(path: Path, name: str) -> tuple[int, ...] | None:
    """Shape of array ``name`` of an ``.npz`` file read from its header only (None when absent or unreadable)."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    try:
        with zipfile.ZipFile(path) as archive, archive.open(f"{name}.npy") as handle:
            reader = readers.get(np.lib.format.read_magic(handle))
            return None if reader is None else tuple(reader(handle)[0])  # the header only, no data
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def _get(catalog, name: str):
    try:
        return catalog.get(name)
    except Exception:  # noqa: BLE001 - not a catalog entry (or a catalog without `get`)
        return None


def _param(catalog, key: str, default: Any = None) -> Any:
    try:
        return catalog.load(f"params:{key}")
    except Exception:  # noqa: BLE001 - no such parameter
        return default


@dataclasses.dataclass
class _Target:
    """One checkpoint file to check: catalog name (or folder/stem), the file, its dataset, the VAE it pairs with."""

    label: str
    path: Path
    dataset: Any
    vae: str | None = None  # label of the VAE target whose latent shape a latent denoiser must match


def _targets(pipeline, catalog) -> list[_Target]:
    from easytune.core.finetune.config import GENERATORS
    from easytune.datasets.checkpoint_dataset import CheckpointDataset
    from easytune.datasets.checkpoint_folder_dataset import CheckpointFolderDataset

    inputs = set(pipeline.inputs())
    skip: set[str] = set()
    if "params:finetune" in inputs:  # fine-tuning reads only the chosen generator's checkpoints
        settings = _param(catalog, "finetune")
        generator = getattr(settings, "generator", None) or (settings or {}).get("generator", "mld")
        spec = GENERATORS.get(generator)
        chosen = {spec.checkpoint, *(("motion_vae",) if spec.latent else ())} if spec is not None else set()
        skip = {*(s.checkpoint for s in GENERATORS.values()), "motion_vae"} - chosen
    targets: list[_Target] = []
    for name in sorted(inputs - skip):
        dataset = _get(catalog, name)
        if isinstance(dataset, CheckpointDataset):
            targets.append(_Target(name, dataset.path, dataset, vae="motion_vae" if "motion_vae" in inputs else None))
        elif isinstance(dataset, CheckpointFolderDataset):
            entries = dataset.entries()
            if name == "base_model_checkpoints":  # only the files the evaluation names are read from this folder
                evaluation = _param(catalog, "evaluation")
                base = getattr(evaluation, "base_models", None) or (evaluation or {}).get("base_models", {})
                for spec in base.values():
                    vae = spec.get("vae")
                    for stem in (spec.get("denoiser"), vae):
                        if stem in entries:
                            targets.append(_Target(f"{name}/{stem}", entries[stem].path, entries[stem],
                                                   vae=f"{name}/{vae}" if vae in entries else None))
            else:
                evaluation = _param(catalog, "evaluation")
                vae = getattr(evaluation, "vae_checkpoint", None)
                base = _get(catalog, "base_model_checkpoints")
                vae_entries = base.entries() if isinstance(base, CheckpointFolderDataset) else {}
                if vae in vae_entries:
                    targets.append(_Target(f"base_model_checkpoints/{vae}", vae_entries[vae].path, vae_entries[vae]))
                for stem, entry in entries.items():
                    targets.append(_Target(f"{name}/{stem}", entry.path, entry,
                                           vae=f"base_model_checkpoints/{vae}" if vae in vae_entries else None))
    unique = {}
    for target in targets:
        unique.setdefault(target.label, target)
    return list(unique.values())


def checkpoint_problems(pipeline, catalog) -> list[str]:
    """One line per checkpoint (free input of ``pipeline``) that does not fit its consumers, naming the file."""
    from easytune.core.motion.skeleton import get_skeleton
    from easytune.datasets.checkpoint_dataset import CheckpointDataset

    targets = _targets(pipeline, catalog)
    if not targets:
        return []
    dataset_params = from_dict(DatasetConfig, _param(catalog, "dataset", {}))
    feature_dim = get_skeleton(dataset_params.skeleton).feature_dim
    text_dim = None
    text = _get(catalog, "text_embeddings")
    if "text_embeddings" in pipeline.inputs() and text is not None and getattr(text, "_filepath", None):
        shape = npz_array_shape(Path(text._filepath), "sentence")
        text_dim = shape[1] if shape and len(shape) == 2 else None
    headers: dict[str, dict | None] = {}
    problems = []
    for target in targets:
        try:
            headers[target.label] = target.dataset.header() if isinstance(target.dataset, CheckpointDataset) else None
        except Exception as exc:  # noqa: BLE001 - unreadable file: say so with its name
            problems.append(f"{target.path} ({target.label}): {exc}")
            headers[target.label] = None
    for target in targets:
        header = headers.get(target.label)
        if header is None:
            continue
        vae_header = headers.get(target.vae) if target.vae else None
        vae_latent = latent_shape(vae_header["config"]) if vae_header and vae_header.get("kind") == "motion_vae" \
            else None
        for problem in compatibility_problems(header, kinds=target.dataset.kinds, feature_dim=feature_dim,
                                              text_dim=text_dim, vae_latent=vae_latent):
            problems.append(f"{target.path} ({target.label}): {problem}")
    return problems
