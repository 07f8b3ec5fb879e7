"""Sampling of the released generators: text -> HumanML3D 263-d features, as the released code samples them.

Facts followed (docs PUBLISHED_ASSETS.md section 1; MLD mld/models/modeltype/mld.py, configs/modules/scheduler.yaml;
MotionLCM mld/models/modeltype/mld.py, configs_v1/modules/scheduler_lcm.yaml; MDM model/cfg_sampler.py,
diffusion/gaussian_diffusion.py):

=================  =========================================  ==========================  ====================
family             sampler                                     guidance                    CFG batch order
=================  =========================================  ==========================  ====================
MLD (CLIP)         DDIM 50, eta 0, epsilon, scaled_linear      7.5, on epsilon             [uncond, cond]
                   betas 0.00085-0.012, steps_offset 1,
                   set_alpha_to_one false -> 981, 961, ..., 1
MLD (T5: LCM/ET)   as above                                    7.5, on epsilon             [cond, uncond]
MotionLCM v1       LCMScheduler, original_inference_steps 50,  w = 7.5 embedded            no doubling
                   1 step by default ([999]; 2: [999, 499])    (time_embedding.cond_proj)
MDM                ancestral DDPM, cosine (s = 0.008), x0      2.5, on x0                  [cond, uncond]
                   prediction, fixed-small variance, the
                   args.json ``diffusion_steps`` (1000)
=================  =========================================  ==========================  ====================

The unconditional input is the text feature of the empty prompt ``""`` (MLD / MotionLCM) or the zeroed CLIP
feature (MDM's ``mask_cond``). Latent generators decode with the released VAE (padding = 0). The result is
de-normalised with the generator's own Mean/Std (HumanML3D ``Mean.npy`` / ``Std.npy``), so every generator returns
RAW features; :func:`normalise_padded` maps them to another normalisation (the project's or the evaluator's).

Text features come from a callable ``captions -> (B, D)`` or ``(B, 1, D)`` tensor (``text_features``): an object with
an ``encode`` method (``ClipTextFeatures``, a sentence-T5 encoder) or a function; nothing here knows which model
computes them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, LCMScheduler

from easytune.core.models.released_mld import lcm_guidance_embedding
from easytune.core.published.mdm import ImportedMDM
from easytune.core.published.mld import ImportedMLD

TextFeatures = Callable[[Sequence[str]], torch.Tensor]
MAX_LENGTH = 196  # HumanML3D protocol (MLD configs/base.yaml; MDM max_frames 196)

#: the released MLD / MotionLCM scheduler configuration (MLD configs/modules/scheduler.yaml;
#: MotionLCM configs_v1/modules/scheduler_lcm.yaml)
MLD_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                     clip_sample=False, set_alpha_to_one=False, prediction_type="epsilon")


def mld_scheduler(num_steps: int) -> DDIMScheduler:
    """MLD's DDIM (steps_offset 1): 50 steps -> timesteps 981, 961, ..., 1."""
    sched = DDIMScheduler(**MLD_SCHEDULER, steps_offset=1)
    sched.set_timesteps(num_steps)
    return sched


def lcm_scheduler(num_steps: int) -> LCMScheduler:
    """MotionLCM v1's LCMScheduler (original_inference_steps 50): 1 -> [999], 2 -> [999, 499],
    4 -> [999, 759, 499, 259]."""
    sched = LCMScheduler(**MLD_SCHEDULER, original_inference_steps=50)
    sched.set_timesteps(num_steps)
    return sched


def mdm_scheduler(num_steps: int, train_steps: int = 1000, sigma_small: bool = True) -> DDPMScheduler:
    """MDM's Gaussian diffusion: cosine betas (``squaredcos_cap_v2``, max beta 0.999), x0 prediction, ancestral
    sampling with the fixed-small (sigma_small) or fixed-large posterior variance, no clipping."""
    sched = DDPMScheduler(num_train_timesteps=train_steps, beta_schedule="squaredcos_cap_v2", prediction_type="sample",
                          variance_type="fixed_small" if sigma_small else "fixed_large", clip_sample=False)
    sched.set_timesteps(num_steps)
    return sched


def encode_text(text_features: TextFeatures | object, captions: Sequence[str]) -> torch.Tensor:
    """(B, D) features of ``captions`` from a callable or an object with ``encode`` ((B, 1, D) is squeezed)."""
    fn = getattr(text_features, "encode", text_features)
    feats = fn(list(captions))
    feats = torch.as_tensor(feats, dtype=torch.float32)
    if feats.dim() == 3 and feats.shape[1] == 1:
        feats = feats[:, 0]
    if feats.dim() != 2 or feats.shape[0] != len(captions):
        raise ValueError(f"the text encoder returned shape {list(feats.shape)} for {len(captions)} captions; "
                         f"expected (B, D) or (B, 1, D)")
    return feats


def normalise_padded(raw: np.ndarray, lengths: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """RAW (N, T, D) -> (raw - mean) / std, zero beyond each length (float32)."""
    out = (np.asarray(raw, np.float32) - mean) / std
    valid = np.arange(out.shape[1])[None, :, None] < np.asarray(lengths)[:, None, None]
    return (out * valid).astype(np.float32)


@dataclass
class SamplerDefaults:
    num_steps: int
    guidance_scale: float


class ReleasedGenerator:
    """Common part: the generator's Mean/Std, text features, length checks; ``generate`` returns RAW features."""

    family: str
    feature_dim: int
    max_length: int = MAX_LENGTH

    def __init__(self, text_features: TextFeatures | object, mean: np.ndarray, std: np.ndarray,
                 defaults: SamplerDefaults, device: torch.device | str = "cpu"):
        self.text_features = text_features
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        if self.mean.shape != (self.feature_dim,) or self.std.shape != (self.feature_dim,):
            raise ValueError(f"{self.family}: Mean/Std of shapes {self.mean.shape}/{self.std.shape}, the generator "
                             f"has {self.feature_dim} features")
        self.defaults = defaults
        self.device = torch.device(device)

    def _lengths(self, lengths) -> torch.Tensor:
        lengths = torch.as_tensor(np.asarray(lengths), dtype=torch.int64).reshape(-1)
        if len(lengths) and (int(lengths.min()) < 1 or int(lengths.max()) > self.max_length):
            raise ValueError(f"{self.family}: lengths must be in 1..{self.max_length}, got "
                             f"{int(lengths.min())}..{int(lengths.max())}")
        return lengths

    def _denormalise(self, feats: torch.Tensor, lengths: torch.Tensor) -> np.ndarray:
        raw = feats.float().cpu().numpy() * self.std + self.mean  # (B, T, D)
        valid = np.arange(raw.shape[1])[None, :, None] < lengths.numpy()[:, None, None]
        return (raw * valid).astype(np.float32)

    @torch.no_grad()
    def generate(self, captions: Sequence[str], lengths, generator: torch.Generator | None = None,
                 num_steps: int | None = None, guidance_scale: float | None = None) -> np.ndarray:
        """captions (B,), lengths (B,) frames -> RAW features (B, max(lengths), D), zero beyond each length."""
        lengths = self._lengths(lengths)
        steps = int(num_steps or self.defaults.num_steps)
        scale = float(self.defaults.guidance_scale if guidance_scale is None else guidance_scale)
        return self._denormalise(self._sample(list(captions), lengths, generator, steps, scale), lengths)

    def _sample(self, captions, lengths, generator, steps, scale) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class ReleasedMLDGenerator(ReleasedGenerator):
    """Released MLD / MotionLCM-v1: latent sampling with the released schedulers, VAE decoding.

    CFG batch order: ``[uncond, cond]`` for ChenFengYe's CLIP MLD, ``[cond, uncond]`` for the T5 MLD of MotionLCM /
    EasyTune (read from ``imported.text_encoder``; the guided result is the same, the batch the denoiser sees is not).
    MotionLCM v1 (``imported.consistency``) embeds the guidance scale and runs one batch.
    """

    family = "mld"

    def __init__(self, imported: ImportedMLD, text_features: TextFeatures | object, mean: np.ndarray,
                 std: np.ndarray, num_steps: int | None = None, guidance_scale: float | None = None,
                 device: torch.device | str = "cpu"):
        self.feature_dim = imported.vae.config.nfeats
        self.max_length = min(MAX_LENGTH, imported.vae.config.max_len)
        defaults = SamplerDefaults(num_steps or (1 if imported.consistency else 50),
                                   7.5 if guidance_scale is None else guidance_scale)
        super().__init__(text_features, mean, std, defaults, device)
        self.vae = imported.vae.to(self.device).eval()
        self.denoiser = imported.denoiser.to(self.device).eval()
        self.consistency = imported.consistency
        self.cfg_order: Literal["uncond_first", "cond_first"] = (
            "uncond_first" if imported.text_encoder == "clip" else "cond_first")
        self.family = "motionlcm" if imported.consistency else f"mld_{imported.text_encoder}"

    def _sample(self, captions, lengths, generator, steps, scale) -> torch.Tensor:
        b = len(captions)
        cfg = self.vae.config
        cond = encode_text(self.text_features, captions).to(self.device)  # (B, 768)
        latents = torch.randn((b, cfg.latent_size, cfg.latent_dim), generator=generator).to(self.device)
        if self.consistency:
            sched = lcm_scheduler(steps)
            w_emb = lcm_guidance_embedding(torch.full((b,), scale), self.denoiser.config.time_cond_dim)
            for t in sched.timesteps:
                eps = self.denoiser(latents, t.to(self.device), cond[:, None], timestep_cond=w_emb.to(self.device))
                latents = sched.step(eps, t, latents, generator=generator).prev_sample
        else:
            sched = mld_scheduler(steps)
            uncond = encode_text(self.text_features, [""]).to(self.device).expand(b, -1)
            pair = [uncond, cond] if self.cfg_order == "uncond_first" else [cond, uncond]
            text = torch.cat(pair)[:, None]  # (2B, 1, 768)
            latents = latents * sched.init_noise_sigma
            for t in sched.timesteps:
                out = self.denoiser(torch.cat([latents, latents]), t.to(self.device), text)  # (2B, n, d)
                first, second = out.chunk(2)
                e_uncond, e_cond = (first, second) if self.cfg_order == "uncond_first" else (second, first)
                eps = e_uncond + scale * (e_cond - e_uncond)
                latents = sched.step(eps, t, latents, eta=0.0).prev_sample
        return self.vae.decode(latents, lengths.to(self.device))  # (B, T, nfeats)


class ReleasedMDMGenerator(ReleasedGenerator):
    """Released MDM: ancestral sampling over ``diffusion_steps`` of x0 predictions, CFG on x0 (scale 2.5) with the
    text dropped (zeroed) in the unconditional half; batch ``[cond, uncond]`` (MDM's two forwards, batched)."""

    family = "mdm"

    def __init__(self, imported: ImportedMDM, text_features: TextFeatures | object, mean: np.ndarray,
                 std: np.ndarray, num_steps: int | None = None, guidance_scale: float | None = None,
                 device: torch.device | str = "cpu"):
        self.feature_dim = imported.model.config.nfeats
        self.train_steps = int(imported.args.get("diffusion_steps", 1000))
        if imported.noise_schedule != "cosine":
            raise ValueError(f"MDM noise_schedule {imported.noise_schedule!r}: only 'cosine' (the released models) "
                             f"is implemented")
        defaults = SamplerDefaults(num_steps or self.train_steps, 2.5 if guidance_scale is None else guidance_scale)
        super().__init__(text_features, mean, std, defaults, device)
        self.model = imported.model.to(self.device).eval()
        self.sigma_small = imported.sigma_small

    def _sample(self, captions, lengths, generator, steps, scale) -> torch.Tensor:
        b, frames = len(captions), int(lengths.max())
        text = encode_text(self.text_features, captions).to(self.device)  # (B, 512)
        sched = mdm_scheduler(steps, self.train_steps, self.sigma_small)
        x = torch.randn((b, frames, self.feature_dim), generator=generator).to(self.device)
        mask = (torch.arange(frames)[None] < lengths[:, None]).to(self.device)
        drop = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)]).to(self.device)
        for t in sched.timesteps:
            tt = t.reshape(1).expand(2 * b).to(self.device)
            out = self.model(torch.cat([x, x]), tt, torch.cat([text, text]), drop_text=drop,
                             mask=torch.cat([mask, mask]))  # (2B, T, F)
            x0_cond, x0_uncond = out.chunk(2)
            x0 = x0_uncond + scale * (x0_cond - x0_uncond)
            x = sched.step(x0, t, x, generator=generator).prev_sample
        return x * mask[..., None].to(x.dtype)


MDM_CLIP_CONTEXT = 22  # MDM: captions cut to 20 tokens + start/end (mdm.py encode_text), padding after them


def _clip_with_context(features, context: int) -> TextFeatures:
    """CLIP pooled features with captions cut to ``context`` tokens (the pooled end token depends on nothing
    after it, so this equals the released cut-then-zero-pad-to-77)."""
    @torch.no_grad()
    def encode(captions: Sequence[str]) -> torch.Tensor:
        enc = features.tokenizer(list(captions), padding="max_length", max_length=context, truncation=True,
                                 return_tensors="pt").to(features.device)
        return features.model(input_ids=enc["input_ids"]).text_embeds.float()
    return encode


def load_text_features(kind: Literal["clip", "t5", "mdm_clip"], folder: str | Path,
                       device: torch.device | str = "cpu") -> TextFeatures | object:
    """The released text encoder of a family from a local folder: ``clip`` (MLD: CLIP ViT-L/14 pooled projected,
    77 tokens), ``mdm_clip`` (MDM: CLIP ViT-B/32, 20 tokens), ``t5`` (MotionLCM / EasyTune: sentence-t5-large,
    normalised: :class:`~easytune.core.published.text_encoders.SentenceT5Features`)."""
    from easytune.core.published import text_encoders

    if kind == "t5":
        return text_encoders.SentenceT5Features(folder, device=device)
    clip = text_encoders.ClipTextFeatures(folder, device=device)
    return _clip_with_context(clip, MDM_CLIP_CONTEXT) if kind == "mdm_clip" else clip


def load_released_generator(family: Literal["mld", "mdm"], checkpoint: str | Path, text_encoder: Literal["clip", "t5"],
                            text_features: TextFeatures | object, mean: np.ndarray, std: np.ndarray,
                            num_steps: int | None = None, guidance_scale: float | None = None,
                            device: torch.device | str = "cpu") -> ReleasedGenerator:
    """Import a released checkpoint and wrap it with its sampler (``text_features``: see :func:`load_text_features`)."""
    from easytune.core.published.mdm import import_mdm
    from easytune.core.published.mld import import_mld

    if family == "mdm":
        return ReleasedMDMGenerator(import_mdm(checkpoint), text_features, mean, std, num_steps, guidance_scale,
                                    device)
    return ReleasedMLDGenerator(import_mld(checkpoint, text_encoder), text_features, mean, std, num_steps,
                                guidance_scale, device)


#: the checkpoint kind of a released MLD denoiser fine-tuned by the project (easytune.core.finetune.released)
FINETUNED_RELEASED_KIND = "released_mld_denoiser"


def load_finetuned_released_generator(ckpt: dict, mean: np.ndarray, std: np.ndarray,
                                      device: torch.device | str = "cpu", source: str = "fine-tuned denoiser",
                                      text_features: TextFeatures | object | None = None,
                                      released_weights: bool = False) -> ReleasedGenerator:
    """A released MLD whose denoiser weights are those of a fine-tuned ``released_mld_denoiser`` checkpoint, sampled
    exactly as the released model is (same VAE, text encoder, scheduler, guidance). The released checkpoint and the
    text-encoder folder are the ones its metadata names (``metadata.generator``: ``checkpoint``, ``text_encoder``,
    ``text_encoder_path``, ``num_steps``, ``guidance_scale``). ``released_weights``: the released model it was
    fine-tuned from instead (the same sampler and settings, the released denoiser weights)."""
    from easytune.core.infra.checkpoint import build_from_checkpoint
    from easytune.core.published.containers import PublishedAssetError
    from easytune.core.published.mld import import_mld

    meta = (ckpt.get("metadata") or {}).get("generator") or {}
    missing = [k for k in ("checkpoint", "text_encoder", "text_encoder_path") if not meta.get(k)]
    if missing:
        raise PublishedAssetError(f"{source}: metadata.generator has no {missing}; it was not written by the "
                                  f"fine-tuning of a released MLD")
    for key, is_dir in (("checkpoint", False), ("text_encoder_path", True)):
        p = Path(meta[key])
        if not (p.is_dir() if is_dir else p.is_file()):
            raise PublishedAssetError(f"{source}: it was fine-tuned from {key} {p}, which is not there any more; "
                                      f"put the released file back at that path (or fine-tune again)")
    imported = import_mld(meta["checkpoint"], meta["text_encoder"])
    denoiser = build_from_checkpoint(ckpt, "cpu", allowed_kinds=[FINETUNED_RELEASED_KIND], source=source)
    if denoiser.config != imported.denoiser.config:
        raise PublishedAssetError(f"{source}: its denoiser sizes {denoiser.config} differ from those of "
                                  f"{meta['checkpoint']} ({imported.denoiser.config})")
    if not released_weights:
        imported.denoiser = denoiser
    features = text_features if text_features is not None else load_text_features(
        meta["text_encoder"], meta["text_encoder_path"], device)
    return ReleasedMLDGenerator(imported, features, mean, std, meta.get("num_steps"), meta.get("guidance_scale"),
                                device)

