"""Importer of the released TMR model (``models/tmr_humanml3d_guoh3dfeats/``) and its motion statistics
(``stats/humanml3d/guoh3dfeats/{mean,std}.pt``) onto :class:`~easytune.core.models.released_tmr.ReleasedTMR`, and the
TMR score.

Containers (TMR src/load.py:13-41,59-72; src/data/motion.py:47-49): ``<run_dir>/last_weights/motion_encoder.pt``,
``text_encoder.pt`` and ``motion_decoder.pt``, each a plain state dict of one submodule (``torch.save`` of the
Lightning state dict split by its first name); ``mean.pt`` / ``std.pt`` are tensors (nfeats,). The two encoders are
required; the decoder is loaded when present (the score does not use it). Sizes are read off the weights; the head
count (4) is a parameter. The text encoder (distilbert-base-uncased) is read from a local folder
(``DistilbertTokenFeatures``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from easytune.core.models.released_tmr import ReleasedTMR, ReleasedTMRConfig
from easytune.core.published.containers import (
    PublishedAssetError,
    count_blocks,
    load_tensor_file,
    load_weights,
    shape_of,
    tensor_dict,
)

SUBMODULES = ("motion_encoder", "text_encoder", "motion_decoder")
STD_EPS = 1e-12  # TMR src/data/motion.py:37,59


@dataclass
class ImportedTMR:
    """The rebuilt TMR (eval mode, CPU) and its motion statistics (nfeats,)."""

    model: ReleasedTMR
    mean: torch.Tensor
    std: torch.Tensor
    has_decoder: bool

    def normalise(self, features: torch.Tensor) -> torch.Tensor:
        """Raw guoh3dfeats (..., nfeats) -> TMR's input ``(x - mean) / (std + 1e-12)``."""
        return (features - self.mean.to(features)) / (self.std.to(features) + STD_EPS)


def _stats(folder: Path, name: str, nfeats: int) -> torch.Tensor:
    path = folder / f"{name}.pt"
    value = load_tensor_file(path, f"TMR's motion {name} (a tensor of {nfeats} values)")
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != (nfeats,):
        got = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise PublishedAssetError(f"{path}: holds {got}; expected a tensor of shape [{nfeats}] (the motion encoder's "
                                  f"projection.weight has {nfeats} inputs)")
    return value.to(torch.float32)


def import_tmr(run_dir: str | Path, stats_dir: str | Path, num_heads: int = 4) -> ImportedTMR:
    """Rebuild TMR from ``run_dir/last_weights/*.pt`` and its statistics from ``stats_dir/{mean,std}.pt``; a missing
    file, a refused object, a missing or extra key or a wrong shape is one :class:`PublishedAssetError` naming the
    file and the key(s)."""
    weights = Path(run_dir) / "last_weights"
    paths = {name: weights / f"{name}.pt" for name in SUBMODULES}
    states = {name: tensor_dict(load_tensor_file(p, f"TMR's {name} state dict"), p, "the file")
              for name, p in paths.items() if name != "motion_decoder" or p.is_file()}
    motion, text = states["motion_encoder"], states["text_encoder"]
    d, nfeats = shape_of(motion, "projection.weight", paths["motion_encoder"], 2)
    config = ReleasedTMRConfig(
        nfeats=nfeats, text_dim=shape_of(text, "projection.weight", paths["text_encoder"], 2)[1], latent_dim=d,
        ff_size=shape_of(motion, "seqTransEncoder.layers.0.linear1.weight", paths["motion_encoder"], 2)[0],
        num_layers=count_blocks(motion, "seqTransEncoder.layers."), num_heads=num_heads)
    try:
        model = ReleasedTMR(config)
    except (ValueError, AssertionError) as exc:
        raise PublishedAssetError(f"{weights}: TMR sizes not buildable: {exc}") from None
    for name, state in states.items():
        load_weights(getattr(model, name), state, paths[name])
    mean, std = (_stats(Path(stats_dir), name, nfeats) for name in ("mean", "std"))
    return ImportedTMR(model=model.eval(), mean=mean, std=std, has_decoder="motion_decoder" in states)


def tmr_score(tmr: ImportedTMR, motion_feats: torch.Tensor, lengths: torch.Tensor, text_feats: torch.Tensor,
              text_mask: torch.Tensor) -> torch.Tensor:
    """Cosine similarity (B,) of TMR's text and motion latent means (TMR retrieval.py:43-44; its displayed score is
    ``cos / 2 + 0.5``). motion_feats (B, T, nfeats) raw guoh3dfeats (HumanML3D features *before* any Mean/Std
    normalisation), lengths (B,), text_feats (B, L, 768) distilbert token states, text_mask (B, L) bool.
    Differentiable in ``motion_feats``."""
    mu_m, _ = tmr.model.encode_motion(tmr.normalise(motion_feats), lengths)
    mu_t, _ = tmr.model.encode_text(text_feats, text_mask)
    return torch.nn.functional.cosine_similarity(mu_t, mu_m, dim=-1)
