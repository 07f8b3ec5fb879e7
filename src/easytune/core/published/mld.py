"""Importer of the released MLD-family checkpoints: ChenFengYe's CLIP MLD (``1222_mld_humanml3d_FID041.ckpt``),
MotionLCM's T5 MLD (``mld_humanml_v1.ckpt``, EasyTune's base model) and MotionLCM v1 (``motionlcm_humanml.ckpt``).

Container: a Lightning checkpoint dict whose ``state_dict`` holds ``vae.*`` and ``denoiser.*`` (PUBLISHED_ASSETS.md
section 1). Other entries (``hyper_parameters``, ``epoch``, ...) may be present and are not used; they must be plain
data (a pickled class instance refuses the file, see :mod:`.containers`). Keys of parts the project does not take from
this file are dropped: ``text_encoder.*`` (CLIP/T5 weights; loaded from a local folder instead), MLD's evaluator copies
``t2m_textencoder.* / t2m_moveencoder.* / t2m_motionencoder.*`` and EasyTune's ``reward_model.*``. Every other key
must be a key of the released architecture, with its shape.

Sizes are read off the weights (latent [n, d], feed-forward width, layer count, feature and text widths, PE length);
the head count is not in the weights (4 in every released model) and is a parameter. The text encoder is not in the
weights either: ``text_encoder`` says which one the file was trained with ("clip": CLIP ViT-L/14 pooled projected
features, ChenFengYe's model; "t5": sentence-t5-large normalised embedding, MotionLCM / EasyTune). Known variants:

=====================  ===========================  ======================  =========================
key present            model                        sampler                 CFG
=====================  ===========================  ======================  =========================
``...cond_proj``       MotionLCM v1 (distilled)     LCM, 1-4 steps          w embedded, no doubling
``denoiser.mem_pos``   trained in MLD's code        DDIM 50 (eps)           7.5
neither                MotionLCM's MLD code         DDIM 50 (eps)           7.5
=====================  ===========================  ======================  =========================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from easytune.core.models.released_mld import (
    ReleasedMLDDenoiser,
    ReleasedMLDDenoiserConfig,
    ReleasedMLDVAE,
    ReleasedMLDVAEConfig,
)
from easytune.core.published.containers import (
    PublishedAssetError,
    count_blocks,
    lightning_state_dict,
    load_tensor_file,
    load_weights,
    shape_of,
    take_prefix,
)

#: prefixes of state-dict entries that belong to other parts (not taken from this file)
DROPPED_PREFIXES = ("text_encoder.", "t2m_textencoder.", "t2m_moveencoder.", "t2m_motionencoder.", "reward_model.")

TEXT_ENCODERS = {"clip": "openai/clip-vit-large-patch14 (pooled projected features, 768-d)",
                 "t5": "sentence-transformers/sentence-t5-large (normalised sentence embedding, 768-d)"}


@dataclass
class ImportedMLD:
    """The rebuilt VAE and denoiser (eval mode, CPU) and what the file says about how to use them."""

    vae: ReleasedMLDVAE
    denoiser: ReleasedMLDDenoiser
    text_encoder: Literal["clip", "t5"]
    consistency: bool  # MotionLCM: guidance-scale embedding, LCM sampling, no CFG doubling
    dropped_keys: list[str] = field(default_factory=list)


def _skip_stack_sizes(state, prefix: str, path) -> tuple[int, int]:
    """(ff_size, num_layers) of a released skip stack under ``prefix``."""
    half = count_blocks(state, f"{prefix}input_blocks.")
    ff = shape_of(state, f"{prefix}middle_block.linear1.weight", path, 2)[0]
    return ff, 2 * half + 1


def import_mld(path: str | Path, text_encoder: Literal["clip", "t5"], num_heads: int = 4) -> ImportedMLD:
    """Rebuild the released VAE and denoiser from the Lightning checkpoint at ``path``.

    Raises :class:`PublishedAssetError` naming the file and the key(s) on a refused object, a missing or extra key or
    a wrong shape.
    """
    if text_encoder not in TEXT_ENCODERS:
        raise PublishedAssetError(f"{path}: text_encoder must be one of {sorted(TEXT_ENCODERS)}, got {text_encoder!r}")
    state = lightning_state_dict(load_tensor_file(path, "a Lightning checkpoint of an MLD model"), path)
    dropped = sorted(k for k in state if k.startswith(DROPPED_PREFIXES))
    unknown = sorted(k for k in state if not k.startswith(("vae.", "denoiser.", *DROPPED_PREFIXES)))
    if unknown:
        raise PublishedAssetError(f"{path}: unexpected key(s) outside vae.* / denoiser.*: {', '.join(unknown[:10])}")
    vae_state, den_state = take_prefix(state, "vae."), take_prefix(state, "denoiser.")
    if not vae_state or not den_state:
        raise PublishedAssetError(f"{path}: no {'vae.*' if not vae_state else 'denoiser.*'} weights; not an MLD "
                                  f"checkpoint (keys start with {sorted({k.split('.')[0] for k in state})})")

    p = Path(path)
    d_vae, nfeats = shape_of(state, "vae.skel_embedding.weight", p, 2)
    two_n = shape_of(state, "vae.global_motion_token", p, 2)[0]
    ff, layers = _skip_stack_sizes(state, "vae.encoder.", p)
    max_len = shape_of(state, "vae.query_pos_encoder.pe", p, 3)[0]
    try:
        vae = ReleasedMLDVAE(ReleasedMLDVAEConfig(nfeats=nfeats, latent_size=max(two_n // 2, 1), latent_dim=d_vae,
                                                  ff_size=ff, num_layers=layers, num_heads=num_heads, max_len=max_len))
    except (ValueError, AssertionError) as exc:
        raise PublishedAssetError(f"{path}: vae.* sizes not buildable: {exc}") from None
    load_weights(vae, vae_state, p, "vae.")

    d, text_dim = shape_of(state, "denoiser.time_embedding.linear_1.weight", p, 2)
    ff, layers = _skip_stack_sizes(state, "denoiser.encoder.", p)
    cond_key = "denoiser.time_embedding.cond_proj.weight"
    cond_dim = shape_of(state, cond_key, p, 2)[1] if cond_key in state else None
    config = ReleasedMLDDenoiserConfig(
        latent_size=vae.config.latent_size, latent_dim=d, text_dim=text_dim, ff_size=ff, num_layers=layers,
        num_heads=num_heads, max_len=shape_of(state, "denoiser.query_pos.pe", p, 3)[0], time_cond_dim=cond_dim,
        mem_pos="denoiser.mem_pos.pe" in state)
    if d != d_vae:
        raise PublishedAssetError(f"{path}: denoiser width {d} (denoiser.time_embedding.linear_1.weight) differs "
                                  f"from the VAE latent width {d_vae} (vae.skel_embedding.weight)")
    try:
        denoiser = ReleasedMLDDenoiser(config)
    except (ValueError, AssertionError) as exc:
        raise PublishedAssetError(f"{path}: denoiser.* sizes not buildable: {exc}") from None
    load_weights(denoiser, den_state, p, "denoiser.")
    return ImportedMLD(vae=vae.eval(), denoiser=denoiser.eval(), text_encoder=text_encoder,
                       consistency=cond_dim is not None, dropped_keys=dropped)
