"""Fine-tuning a released MLD (the T5 MLD of MotionLCM / EasyTune, ``mld_humanml_v1.ckpt``, or ChenFengYe's CLIP MLD)
with a released reward (EasyTune's SPM by default, TMR as an option), through the project's one fine-tuning loop.

Nothing here runs a loop: adapters give the released modules the interfaces that
:func:`~easytune.core.finetune.trainer.finetune` and :func:`~easytune.core.finetune.rollout.run_rollout` use, so every
method (EasyTune step-aware, chain, DRaFT, ReFL, AlignProp, DRTune) runs on them unchanged.

- :class:`CaptionFeatures`: the released text features of the captions of a
  :class:`~easytune.core.data.dataset.TextEmbeddings`, looked up by the rows a
  :class:`~easytune.core.data.text.TextBatch` carries (row -1 = the empty prompt), computed once per caption.
- :class:`ReleasedDenoiser`: the project's denoiser signature ``denoiser(x_t, t, text, mask, drop_text)`` over a
  :class:`~easytune.core.models.released_mld.ReleasedMLDDenoiser`; the dropped (unconditional) rows get the features
  of ``""`` as the release does. The project's guidance batch is ``[cond, uncond]`` (the T5 MLD's order); ChenFengYe's
  CLIP MLD runs ``[uncond, cond]``, which gives the same guided output (the denoiser treats every row on its own).
- :class:`ReleasedLatentDecoder`: the released VAE's decoder behind the project's ``decode(z, mask)``; its output is
  normalised with the generator's HumanML3D ``Mean.npy`` / ``Std.npy`` (PUBLISHED_ASSETS.md "Normalisation"), the
  input the SPM takes as it is (ET mld.py:818-826).
- :class:`ReleasedMLDDiffusion`: the released DDIM (scaled_linear 0.00085-0.012, 1000 steps, ``steps_offset`` 1,
  ``set_alpha_to_one`` false, eta 0: timesteps 981, 961, ..., 1), the same scheduler object the released sampler
  uses (:func:`~easytune.core.published.sampling.mld_scheduler`); the project's default DDIM differs (980, ..., 0 and
  alpha_0 = 1), so the released model is sampled with its own.
- :class:`ReleasedMLDGenerator`: a :class:`~easytune.core.sampling.generator.MotionGenerator` of these parts.
- :class:`SPMReward` / :class:`TMRReward`: the project's reward call ``reward(features, lengths, text, t) -> (B,)``
  (one value per sample; the loop takes the batch mean explicitly, not the release's [B] used as a scalar). SPM text
  = sentence-T5 token states, latent means by default (``sample_latents``: the release's sampled latents); TMR =
  distilbert token states, motions de-normalised with the generator's Mean/Std then normalised with TMR's own.
- :class:`ReleasedFinetuneSettings` (``params:finetune.released``) and :func:`finetune_released`: the files, the
  run, and the fine-tuned denoiser as a ``released_mld_denoiser`` checkpoint whose metadata names the released file
  it came from (the evaluation scores it with the released sampler beside the released model).

The paper's settings (PUBLISHED_ASSETS.md section 2): AdamW lr 1e-5, weight decay 0, grad clip 1.0, reward weight
1.0, batch 64, DDIM 50, guidance 7.5, EasyTune's per-step update on the last 10 of 50 steps, x0 combined per guidance
branch in epsilon space then converted (equal to guidance in x0 space for epsilon prediction: x0_hat is affine in eps).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from easytune.core.data.dataset import MotionSplit, TextEmbeddings
from easytune.core.data.text import TextBatch
from easytune.core.finetune.config import FinetuneConfig, ReleasedFinetuneSettings, ReleasedRewardSettings
from easytune.core.infra.checkpoint import make_checkpoint
from easytune.core.infra.config import to_dict
from easytune.core.models.released_mld import ReleasedMLDDenoiser, ReleasedMLDVAE
from easytune.core.published.mld import ImportedMLD
from easytune.core.published.sampling import MAX_LENGTH, mld_scheduler
from easytune.core.sampling.diffusion import Diffusion, DiffusionConfig
from easytune.core.sampling.generator import MotionGenerator

logger = logging.getLogger(__name__)

#: the checkpoint kind of a fine-tuned released MLD denoiser (easytune.core.infra.checkpoint.MODEL_KINDS)
RELEASED_DENOISER_KIND = "released_mld_denoiser"
#: ``metadata.generator.kind`` of that checkpoint
RELEASED_GENERATOR_KIND = "released_mld"


# ------------------------------------------------------------------------------------------------------- text
class CaptionFeatures:
    """Released text features of the captions of ``captions`` (row i = caption i), by row, computed on first use.

    ``encode(list of captions)`` returns (B, D) or (B, 1, D) features (``tokens=False``: MLD's sentence feature) or
    ``(states (B, L, D), mask (B, L))`` (``tokens=True``: the SPM's / TMR's token states). Row -1 is the empty prompt
    ``""`` (the unconditional input). The cache is shared by copies (:func:`copy.deepcopy` returns the same object:
    the trainer copies the denoiser, not the text encoder)."""

    def __init__(self, captions: Sequence[str], encode: Callable[[list[str]], Any], *, tokens: bool = False,
                 chunk: int = 64):
        self.captions = np.asarray(captions)
        self.encode, self.tokens, self.chunk = encode, tokens, int(chunk)
        self._cache: dict[int, torch.Tensor] = {}

    def __deepcopy__(self, memo) -> CaptionFeatures:
        return self

    def _caption(self, row: int) -> str:
        if row == -1:
            return ""
        if not 0 <= row < len(self.captions):
            raise IndexError(f"caption row {row} outside 0..{len(self.captions) - 1}")
        return str(self.captions[row])

    def _fill(self, rows: list[int]) -> None:
        missing = sorted({r for r in rows if r not in self._cache})
        for start in range(0, len(missing), self.chunk):
            part = missing[start:start + self.chunk]
            out = self.encode([self._caption(r) for r in part])
            if self.tokens:
                states, mask = out
                for i, r in enumerate(part):
                    self._cache[r] = states[i, : int(mask[i].sum())].detach().float().cpu()  # (L_i, D)
            else:
                feats = torch.as_tensor(out, dtype=torch.float32)
                feats = feats[:, 0] if feats.dim() == 3 and feats.shape[1] == 1 else feats
                if feats.dim() != 2 or feats.shape[0] != len(part):
                    raise ValueError(f"the text encoder returned shape {list(feats.shape)} for {len(part)} captions; "
                                     f"expected (B, D) or (B, 1, D)")
                for i, r in enumerate(part):
                    self._cache[r] = feats[i].detach().cpu()

    def features(self, rows: torch.Tensor, device: torch.device | str) -> torch.Tensor:
        """rows (B,) -> (B, D) sentence features on ``device``."""
        keys = [int(r) for r in rows.reshape(-1).tolist()]
        self._fill(keys)
        return torch.stack([self._cache[r] for r in keys]).to(device)

    def token_states(self, rows: torch.Tensor, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """rows (B,) -> token states (B, L, D) zero-padded to the longest and their mask (B, L) bool."""
        keys = [int(r) for r in rows.reshape(-1).tolist()]
        self._fill(keys)
        items = [self._cache[r] for r in keys]
        longest = max(max(x.shape[0] for x in items), 1)
        states = torch.zeros(len(items), longest, items[0].shape[-1])
        mask = torch.zeros(len(items), longest, dtype=torch.bool)
        for i, x in enumerate(items):
            states[i, : x.shape[0]], mask[i, : x.shape[0]] = x, True
        return states.to(device), mask.to(device)


# ------------------------------------------------------------------------------------------------- generator
class ReleasedDenoiser(nn.Module):
    """``denoiser(x_t (B, n, d), t (B,), text: TextBatch, mask, drop_text (B,) | None) -> eps_hat (B, n, d)`` over the
    released MLD denoiser; the text is the released feature of each row (dropped rows: the features of "")."""

    def __init__(self, released: ReleasedMLDDenoiser, text: CaptionFeatures):
        super().__init__()
        if released.config.time_cond_dim is not None:
            raise ValueError("a MotionLCM v1 checkpoint (time_embedding.cond_proj) is distilled for 1-4 LCM steps; "
                             "fine-tuning supports the MLD checkpoints (DDIM 50)")
        self.released = released
        self.text = text
        self.config = released.config

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, text: TextBatch, mask: torch.Tensor | None = None,
                drop_text: torch.Tensor | None = None) -> torch.Tensor:
        rows = text.rows if drop_text is None else torch.where(drop_text.to(text.rows.device), -1, text.rows)
        cond = self.text.features(rows, x_t.device)  # (B, D)
        return self.released(x_t, t, cond[:, None].to(x_t.dtype))


class ReleasedLatentDecoder(nn.Module):
    """The released VAE behind the project's latent interface: ``latent_shape`` and ``decode(z, mask)`` -> features
    (B, T, D) normalised with the generator's Mean/Std, zero on padded frames."""

    def __init__(self, released: ReleasedMLDVAE):
        super().__init__()
        self.released = released
        self.config = released.config

    @property
    def latent_shape(self) -> tuple[int, int]:
        return self.config.latent_size, self.config.latent_dim

    def decode(self, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.released.decode(z, mask.sum(dim=1), frames=mask.shape[1])


class ReleasedMLDDiffusion(Diffusion):
    """The released MLD's DDIM (:func:`~easytune.core.published.sampling.mld_scheduler`) behind the project's
    :class:`Diffusion` interface (timesteps, differentiable step)."""

    def __init__(self, num_steps: int = 50):
        super().__init__(DiffusionConfig(schedule="scaled_linear", train_steps=1000, beta_start=0.00085,
                                         beta_end=0.012, prediction_type="epsilon", sampler="ddim",
                                         num_inference_steps=num_steps, eta=0.0))

    def sampler(self, num_steps: int | None = None):
        n = int(num_steps or self.config.num_inference_steps)
        if not 1 <= n <= self.config.train_steps:
            raise ValueError(f"num_steps must be in 1..{self.config.train_steps}, got {n}")
        if n not in self._samplers:
            self._samplers[n] = mld_scheduler(n)
        return self._samplers[n]


class ReleasedMLDGenerator(MotionGenerator):
    """A released MLD as the project's :class:`MotionGenerator` (kind ``mld``): its denoiser is trained, its VAE is
    frozen. ``source``: what to record of the released files in the fine-tuned checkpoint's metadata."""

    def __init__(self, imported: ImportedMLD, text: CaptionFeatures, guidance_scale: float | None = None,
                 num_steps: int = 50, source: dict[str, Any] | None = None):
        if imported.consistency:
            raise ValueError("a MotionLCM v1 checkpoint (time_embedding.cond_proj) is distilled for 1-4 LCM steps; "
                             "fine-tuning supports the MLD checkpoints (DDIM 50)")
        vae = ReleasedLatentDecoder(imported.vae)
        super().__init__(ReleasedDenoiser(imported.denoiser, text), ReleasedMLDDiffusion(num_steps), "mld", vae=vae,
                         guidance_scale=7.5 if guidance_scale is None else guidance_scale,
                         max_length=min(MAX_LENGTH, imported.vae.config.max_len),
                         feature_dim=imported.vae.config.nfeats)
        self.text_encoder = imported.text_encoder
        self.source = dict(source or {})

    def checkpoint_metadata(self) -> dict[str, Any]:
        return {"generator": {"kind": RELEASED_GENERATOR_KIND, "text_encoder": self.text_encoder,
                              "guidance_scale": self.guidance_scale,
                              "num_steps": self.diffusion.config.num_inference_steps, "max_length": self.max_length,
                              "feature_dim": self.feature_dim, **self.source}}

    def training_loss(self, *args, **kwargs):
        raise ValueError("a released MLD is fine-tuned with a reward here, not trained with the denoising loss")


# ---------------------------------------------------------------------------------------------------- rewards
class SPMReward:
    """EasyTune's SPM as a fine-tuning reward: ``reward(features (B, T, D) normalised with the generator's
    Mean/Std, lengths (B,), text, t) -> (B,)`` cosine of the text and motion latents (means, or the release's
    sampled latents with ``sample_latents``). ``t`` is not used (the release passes none, spm.py:279-283)."""

    noise_aware = False

    def __init__(self, model: nn.Module, tokens: CaptionFeatures, sample_latents: bool = False):
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokens, self.sample_latents = tokens, bool(sample_latents)

    def __call__(self, features: torch.Tensor, lengths: torch.Tensor, text: TextBatch,
                 t: torch.Tensor | None = None) -> torch.Tensor:
        states, mask = self.tokens.token_states(text.rows, features.device)
        return self.model.reward(features, lengths, states.to(features.dtype), mask, sample=self.sample_latents)

    def embed_motion(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.model.encode_motion(features, lengths)[0].flatten(1)


class TMRReward:
    """TMR as a fine-tuning reward: features normalised with the generator's ``mean`` / ``std`` -> RAW -> TMR's own
    normalisation; cosine of TMR's text (distilbert token states) and motion latent means, (B,)."""

    noise_aware = False

    def __init__(self, imported, tokens: CaptionFeatures, mean: np.ndarray, std: np.ndarray):
        from easytune.core.published.tmr import tmr_score

        self.imported, self.model, self._score = imported, imported.model.eval(), tmr_score
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokens = tokens
        self.mean = torch.as_tensor(np.asarray(mean, np.float32))
        self.std = torch.as_tensor(np.asarray(std, np.float32))

    def _raw(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        raw = features * self.std.to(features) + self.mean.to(features)
        valid = torch.arange(raw.shape[1], device=raw.device)[None] < lengths.to(raw.device)[:, None]
        return raw * valid[..., None].to(raw.dtype)

    def __call__(self, features: torch.Tensor, lengths: torch.Tensor, text: TextBatch,
                 t: torch.Tensor | None = None) -> torch.Tensor:
        states, mask = self.tokens.token_states(text.rows, features.device)
        return self._score(self.imported, self._raw(features, lengths), lengths, states.to(features.dtype), mask)

    def embed_motion(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        raw = self._raw(features, lengths)
        return self.model.encode_motion(self.imported.normalise(raw), lengths)[0]


# ------------------------------------------------------------------------------------------------------- loading
def _text_encoder(kind: str, folder: str, device, cache: dict):
    """One instance per (kind, folder): the T5 serves the MLD (sentence embedding) and the SPM (token states)."""
    from easytune.core.published import text_encoders

    key = (kind, folder)
    if key not in cache:
        cache[key] = {"t5": text_encoders.SentenceT5Features, "clip": text_encoders.ClipTextFeatures,
                      "distilbert": text_encoders.DistilbertTokenFeatures}[kind](folder, device=device)
    return cache[key]


def load_released_setup(settings: ReleasedFinetuneSettings, captions: Sequence[str], device: torch.device | str
                        ) -> tuple[ReleasedMLDGenerator, SPMReward | TMRReward, dict[str, str]]:
    """(generator on ``device``, reward, resolved paths) of ``settings``; ``captions``: the caption of every row of
    the run's text embeddings (the rows the fine-tuning batches carry)."""
    from easytune.core.published.mld import import_mld

    paths = settings.resolved()
    encoders: dict = {}
    gen_text = _text_encoder(settings.text_encoder, paths["text_encoder_path"], device, encoders)
    imported = import_mld(paths["checkpoint"], settings.text_encoder, settings.num_heads)
    source = {"checkpoint": paths["checkpoint"], "text_encoder_path": paths["text_encoder_path"]}
    generator = ReleasedMLDGenerator(imported, CaptionFeatures(captions, gen_text.encode), settings.guidance_scale,
                                     settings.num_steps, source).to(device)
    r = settings.reward
    if r.kind == "spm":
        from easytune.core.published.spm import import_spm

        t5 = _text_encoder("t5", paths["reward_text_encoder_path"], device, encoders)
        model = import_spm(paths["reward_checkpoint"], r.num_heads).model.to(device)
        reward: SPMReward | TMRReward = SPMReward(model, CaptionFeatures(captions, t5.token_states, tokens=True),
                                                  r.sample_latents)
    else:
        from easytune.core.published.tmr import import_tmr

        bert = _text_encoder("distilbert", paths["reward_text_encoder_path"], device, encoders)
        imported_tmr = import_tmr(paths["reward_checkpoint"], paths["reward_stats_dir"], r.num_heads)
        imported_tmr.model.to(device)
        mean, std = settings.generator_stats()
        reward = TMRReward(imported_tmr, CaptionFeatures(captions, bert.encode, tokens=True), mean, std)
    return generator, reward, paths


def finetune_released(settings: ReleasedFinetuneSettings, config: FinetuneConfig, train: MotionSplit,
                      val: MotionSplit | None, text: TextEmbeddings, *, seed: int, device: torch.device
                      ) -> tuple[dict, dict, dict]:
    """Fine-tune the released MLD of ``settings`` with its released reward under ``config`` (any method) ->
    (``released_mld_denoiser`` checkpoint, metric histories, summary)."""
    from easytune.core.finetune.trainer import finetune

    generator, reward, paths = load_released_setup(settings, text.captions, device)
    logger.info("fine-tuning the released MLD %s (%s) with the released %s reward %s", paths["checkpoint"],
                settings.text_encoder, settings.reward.kind, paths["reward_checkpoint"])
    result = finetune(generator, reward, train, val, text, config, seed=seed, device=device,
                      resume_parts={"released": {**to_dict(settings), **paths}})
    summary = {**result.summary, "generator": RELEASED_GENERATOR_KIND, "device": str(device),
               "reward": settings.reward.kind}
    metadata = {**generator.checkpoint_metadata(), "method": config.method, "finetune": to_dict(config),
                "released": {**to_dict(settings), **paths}, "summary": summary}
    return make_checkpoint(RELEASED_DENOISER_KIND, result.denoiser.released, metadata), result.history, summary


__all__ = ["RELEASED_DENOISER_KIND", "RELEASED_GENERATOR_KIND", "CaptionFeatures", "ReleasedDenoiser",
           "ReleasedFinetuneSettings", "ReleasedLatentDecoder", "ReleasedMLDDiffusion", "ReleasedMLDGenerator",
           "ReleasedRewardSettings", "SPMReward", "TMRReward", "finetune_released", "load_released_setup"]
