"""Thin Kedro adapters over :mod:`easytune.core.motion.sources` and :mod:`easytune.core.data.text_encoder`.

Parameters arrive validated: Kedro builds the annotated dataclasses (``DataProcessingConfig``, ``DatasetConfig``,
``RuntimeConfig``) before any node runs; ``_config`` also accepts the plain dict of a hand-built catalog.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from easytune.core.data.text_encoder import MiniLMEncoder
from easytune.core.infra.config import DatasetConfig, RuntimeConfig, from_dict
from easytune.core.infra.runtime import resolve_device
from easytune.core.motion.captions import SkipLog
from easytune.core.motion.skeleton import get_skeleton
from easytune.core.motion.sources import DataProcessingConfig, build_dataset, ensure_source, open_source

log = logging.getLogger(__name__)
_NOT_METRICS = ("root", "source", "split_method", "labels", "length_filter", "raw_dataset", "input_limits")


def _config(data_processing: DataProcessingConfig | dict) -> DataProcessingConfig:
    return from_dict(DataProcessingConfig, data_processing, where="data_processing")


def prepare_raw_dataset(data_processing: DataProcessingConfig, dataset: DatasetConfig) -> dict:
    """Write the embedded dataset when it is the source and missing; check the folder otherwise.

    -> ``{"kind", "root", "generated"}``.
    """
    config = _config(data_processing)
    return ensure_source(config.source, fps=float(dataset["fps"]))


def build_motion_dataset(raw_dataset: dict, data_processing: DataProcessingConfig, dataset: DatasetConfig
                         ) -> tuple[dict, dict, dict, dict, list[str], dict, dict]:
    """-> (train/val/test ``MotionSplit`` arrays, ``FeatureStats`` arrays, unique captions, report, lengths)."""
    config = _config(data_processing)
    skeleton = get_skeleton(dataset["skeleton"])
    source = open_source(config.source, skeleton, SkipLog(config.max_warnings_per_reason), config.limits)
    built = build_dataset(source, config, fps=float(dataset["fps"]))
    built.report["raw_dataset"] = raw_dataset
    lengths = {"clip_lengths": built.clip_lengths, "sample_lengths": built.sample_lengths}
    return (built.splits["train"].to_arrays(), built.splits["val"].to_arrays(), built.splits["test"].to_arrays(),
            built.stats.to_arrays(), built.captions.tolist(), built.report, lengths)


def encode_captions(dataset_captions: list[str], data_processing: DataProcessingConfig, runtime: RuntimeConfig
                    ) -> tuple[dict, dict]:
    """-> (``TextEmbeddings`` arrays of every unique caption (row i = caption i of ``dataset_captions``),
    encoder summary for the report)."""
    config = _config(data_processing).text_encoder
    encoder = MiniLMEncoder(config.model_path, resolve_device(runtime["device"]), config.max_tokens)
    text = encoder.encode(dataset_captions, batch_size=config.batch_size)
    if encoder.truncated:
        log.warning("%d caption(s) longer than %d tokens were truncated", encoder.truncated, config.max_tokens)
    summary = {"captions": len(text), "dim": text.dim, "max_tokens": config.max_tokens,
               "token_length_max": int(text.token_lengths.max()) if len(text) else 0,
               "truncated": int(encoder.truncated)}
    return text.to_arrays(), summary


def plot_length_histogram(clip_lengths: dict, data_processing: DataProcessingConfig) -> Figure:
    """Histogram of clip lengths read and sample lengths kept, with the length filter bounds."""
    length = _config(data_processing).length
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    found, kept = clip_lengths["clip_lengths"], clip_lengths["sample_lengths"]
    bins = np.linspace(0, max(int(found.max()) if len(found) else 1, length.max_length) + 1, 50)
    ax.hist(found, bins=bins, alpha=0.5, label=f"clips read ({len(found)})")
    ax.hist(kept, bins=bins, alpha=0.7, label=f"samples kept ({len(kept)})")
    for bound in (length.min_length, length.max_length):
        ax.axvline(bound, color="k", linestyle="--", linewidth=1)
    ax.set_xlabel("length (feature frames)")
    ax.set_ylabel("count")
    ax.legend()
    fig.tight_layout()
    return fig


def build_report(dataset_report: dict, text_encoder_summary: dict
                 ) -> tuple[dict[str, Any], dict[str, list[dict[str, float]]]]:
    """-> (``data_processing_report``, the report's numbers as MLflow metrics ``{name: [{value, step}]}``)."""
    report = {**dataset_report, "text_embeddings": dict(text_encoder_summary)}
    report["skipped_total"] = int(sum(report["skipped"].values()))
    metrics = {name: [{"value": value, "step": 0}] for name, value in _flatten(report)}
    return report, metrics


def _flatten(report: dict, prefix: str = ""):
    for key, value in report.items():
        if not prefix and key in _NOT_METRICS:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, f"{name}.")
        elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
                and np.isfinite(value):
            yield name, float(value)
