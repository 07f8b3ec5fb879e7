"""Importer of the released MDM checkpoints: ``model<step>.pt`` with ``args.json`` in the same folder.

Container (PUBLISHED_ASSETS.md section 1; MDM utils/model_util.py, utils/parser_util.py): a plain state dict, or a
dict ``{"model": ..., "model_avg": ...}`` (later MDM versions; ``use_avg`` picks the averaged weights, the default).
``clip_model.*`` is absent (deleted at save); the sinusoidal tables ``sequence_pos_encoder.pe`` and
``embed_timestep.sequence_pos_encoder.pe`` ((max_len, 1, d)) may be present: their shape is checked, their values are
recomputed. ``args.json`` gives ``dataset`` (humanml: 263 features, kit: 251), ``latent_dim``, ``layers``, ``arch``
(only ``trans_enc`` is implemented), ``noise_schedule``, ``sigma_small``, ``cond_mask_prob``, optional
``text_encoder_type`` (only ``clip``) and ``mask_frames``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from easytune.core.models.released_mdm import ReleasedMDM, ReleasedMDMConfig
from easytune.core.published.containers import (
    PublishedAssetError,
    count_blocks,
    load_tensor_file,
    load_weights,
    shape_of,
    tensor_dict,
)

FEATURES = {"humanml": 263, "kit": 251}
PE_KEYS = ("sequence_pos_encoder.pe", "embed_timestep.sequence_pos_encoder.pe")


@dataclass
class ImportedMDM:
    model: ReleasedMDM
    args: dict[str, Any]  # args.json as read
    noise_schedule: str  # "cosine" in the released models
    sigma_small: bool


def read_args(folder: Path) -> dict[str, Any]:
    path = folder / "args.json"
    if not path.is_file():
        raise PublishedAssetError(f"{path}: no such file (MDM keeps its arguments in args.json beside model*.pt)")
    try:
        args = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PublishedAssetError(f"{path}: not JSON ({exc})") from None
    if not isinstance(args, dict):
        raise PublishedAssetError(f"{path}: not a JSON object")
    missing = [k for k in ("dataset", "latent_dim", "layers", "arch") if k not in args]
    if missing:
        raise PublishedAssetError(f"{path}: missing field(s) {missing}")
    if args["dataset"] not in FEATURES:
        raise PublishedAssetError(f"{path}: dataset {args['dataset']!r}; text-to-motion MDM is {sorted(FEATURES)}")
    if args["arch"] != "trans_enc":
        raise PublishedAssetError(f"{path}: arch {args['arch']!r}; only 'trans_enc' is implemented")
    if args.get("text_encoder_type", "clip") != "clip":
        raise PublishedAssetError(f"{path}: text_encoder_type {args['text_encoder_type']!r}; only 'clip' is "
                                  f"implemented")
    return args


def import_mdm(path: str | Path, use_avg: bool = True, num_heads: int = 4) -> ImportedMDM:
    """Rebuild the released MDM from ``model*.pt`` at ``path`` and the ``args.json`` beside it."""
    path = Path(path)
    args = read_args(path.parent)
    raw = load_tensor_file(path, "an MDM state dict")
    if isinstance(raw, dict) and "model" in raw and not any(hasattr(v, "shape") for v in raw.values()):
        key = "model_avg" if use_avg and "model_avg" in raw else "model"
        state = tensor_dict(raw[key], path, key)
    else:
        state = tensor_dict(raw, path, "the state dict")
    d = int(args["latent_dim"])
    config = ReleasedMDMConfig(nfeats=FEATURES[args["dataset"]], latent_dim=d, num_layers=int(args["layers"]),
                               num_heads=num_heads, mask_frames=bool(args.get("mask_frames", False)),
                               ff_size=shape_of(state, "seqTransEncoder.layers.0.linear1.weight", path, 2)[0])
    if count_blocks(state, "seqTransEncoder.layers.") != config.num_layers:
        raise PublishedAssetError(f"{path}: {count_blocks(state, 'seqTransEncoder.layers.')} seqTransEncoder "
                                  f"layers; args.json says layers = {config.num_layers}")
    for key in PE_KEYS:
        if key in state:
            rows = shape_of(state, key, path, 3)[0]
            if tuple(state[key].shape) != (rows, 1, d):
                raise PublishedAssetError(f"{path}: key {key} has shape {list(state[key].shape)}, expected "
                                          f"[max_len, 1, {d}]")
            config.max_len = rows
    model = ReleasedMDM(config)
    load_weights(model, state, path, ignore=PE_KEYS)
    return ImportedMDM(model=model.eval(), args=args, noise_schedule=str(args.get("noise_schedule", "cosine")),
                       sigma_small=bool(args.get("sigma_small", True)))
