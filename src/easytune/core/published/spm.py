"""Importer of EasyTune's released SPM reward (``checkpoints/spm/<name>.pth``) onto
:class:`~easytune.core.models.released_spm.ReleasedSPM`.

Container: ``{"state_dict": ...}`` (ET train_spm.py:181-210 saves every key except the sentence-t5 ``clip.*``
weights; ET ft_mld_chain.py:261-262 reads ``torch.load(p)["state_dict"]``). The release loads it with
``strict=False``; here every key must be a key of the released architecture with its shape (``clip.*`` keys, if a
file holds them, are dropped: the text encoder is read from a local folder, ``SentenceT5Features``). Sizes are read
off the weights (released: 427 tensors, 26.5M parameters; PUBLISHED_ASSETS.md "ET SPM"); the head count is not in
the weights (4) and is a parameter. ``motion_encoder.norm.*`` and ``text_encoder.norm.*`` must be equal, since the
release saves one shared LayerNorm under both names. The ``M1T0`` / ``M0T0`` mode that the release reads off the file
name does not change the reward (both encode motion without a timestep, spm.py:280-283).

Use: ``import_spm(p).model.reward(motion, lengths, *SentenceT5Features(t5_path).token_states(captions))`` -> (B,).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from easytune.core.models.released_spm import ReleasedSPM, ReleasedSPMConfig
from easytune.core.published.containers import (
    PublishedAssetError,
    lightning_state_dict,
    load_tensor_file,
    load_weights,
    shape_of,
)
from easytune.core.published.mld import _skip_stack_sizes

DROPPED_PREFIXES = ("clip.",)  # sentence-t5 inside the training-time SPM (spm.py:121-123)
SHARED_NORM = ("motion_encoder.norm.", "text_encoder.norm.")


@dataclass
class ImportedSPM:
    """The rebuilt SPM (eval mode, CPU) and the keys of the file that were not taken."""

    model: ReleasedSPM
    dropped_keys: list[str] = field(default_factory=list)


def import_spm(path: str | Path, num_heads: int = 4) -> ImportedSPM:
    """Rebuild the released SPM from ``path``; a refused object, a missing or extra key, a wrong shape or unequal
    shared-LayerNorm copies is one :class:`PublishedAssetError` naming the file and the key(s)."""
    p = Path(path)
    state = lightning_state_dict(load_tensor_file(p, "an SPM checkpoint ({'state_dict': ...})"), p)
    dropped = sorted(k for k in state if k.startswith(DROPPED_PREFIXES))
    state = {k: v for k, v in state.items() if not k.startswith(DROPPED_PREFIXES)}
    d, nfeats = shape_of(state, "skel_embedding.weight", p, 2)
    ff, layers = _skip_stack_sizes(state, "motion_encoder.", p)
    config = ReleasedSPMConfig(
        nfeats=nfeats, text_dim=shape_of(state, "text_embedding.weight", p, 2)[1],
        latent_size=shape_of(state, "global_motion_token", p, 2)[0], latent_dim=d, ff_size=ff, num_layers=layers,
        num_heads=num_heads, max_len=shape_of(state, "query_motion_pos_encoder.pe", p, 3)[0],
        time_channels=shape_of(state, "time_embedding.linear_1.weight", p, 2)[1])
    try:
        model = ReleasedSPM(config)
    except (ValueError, AssertionError) as exc:
        raise PublishedAssetError(f"{path}: SPM sizes not buildable: {exc}") from None
    load_weights(model, state, p)
    for name in ("weight", "bias"):
        a, b = (state[prefix + name] for prefix in SHARED_NORM)
        if not torch.equal(a, b):
            raise PublishedAssetError(
                f"{path}: key {SHARED_NORM[0]}{name} differs from {SHARED_NORM[1]}{name}; the released SPM saves "
                f"one LayerNorm shared by both encoders (ET GradGuidance/spm.py:144-148), so they must be equal")
    return ImportedSPM(model=model.eval(), dropped_keys=dropped)
