"""Thin adapters around :mod:`easytune.core.motion.ingest`."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from easytune.core.infra.config import from_dict
from easytune.core.motion.ingest import BvhIngestParameters, ingest_bvh_files


def _input_folder(params: BvhIngestParameters) -> Path:
    root, variable = params.input_dir, params.input_variable
    if not root:
        raise ValueError(f"{variable} is not set: point it at a folder of .bvh files "
                         f"(e.g. the Bandai-Namco-Research-Motiondataset 'dataset/*/data' folders)")
    folder = Path(root)
    if not folder.is_dir():
        raise ValueError(f"{variable}={root}: folder not found")
    return folder


def ingest_bvh_folder(params: BvhIngestParameters) -> tuple[dict, dict]:
    """Convert every ``*.bvh`` under ``params.input_dir`` (recursively); returns (joints folder, report).

    ``params`` arrives validated from Kedro; a plain dict (a hand-built catalog) is validated here."""
    params = from_dict(BvhIngestParameters, params)
    config = params.conversion
    folder = _input_folder(params)
    labels = None
    if params.label_table:
        table = pd.read_csv(params.label_table)
        if "id" not in table.columns or "content" not in table.columns:
            raise ValueError(f"{params.label_table}: label table needs columns id, content (and optionally style)")
        labels = {str(r["id"]): {"content": r["content"], "style": r.get("style")} for _, r in table.iterrows()}
    paths = sorted(folder.rglob("*.bvh"))
    if not paths:
        raise ValueError(f"{folder}: no .bvh files found")
    result = ingest_bvh_files(paths, config, labels, root=folder)
    if not result.joints:
        raise ValueError(f"{folder}: none of the {len(paths)} BVH files could be converted (skips: {dict(result.skipped)})")
    folder_data = {"joints": result.joints, "texts": result.texts, "index": pd.DataFrame(result.index)}
    report = {"source": str(folder), "files_found": len(paths), "clips_written": len(result.joints),
              "captioned": len(result.texts), "skipped": dict(result.skipped),
              "name_collisions": len(result.renamed), "renamed": dict(result.renamed),
              "frames_total": int(sum(len(j) for j in result.joints.values()))}
    return folder_data, report
