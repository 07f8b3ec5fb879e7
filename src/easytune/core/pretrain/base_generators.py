"""Pretraining of the base generators: the motion VAE, then the MLD latent denoiser, then MotionLCM distilled from
it; the MDM frame denoiser.

Everything the ``pretrain`` pipeline does, framework-free: typed configuration (:class:`PretrainConfig`), the four
training runs on :func:`easytune.core.pretrain.loop.train` (resumable, early stopping on the validation loss), the VAE's
test reconstruction error in metres (MPJPE on joints recovered from de-normalised features) and caption-to-motion
generation with skeleton GIFs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch

from easytune.core.data.dataset import FeatureStats, MotionSplit, TextEmbeddings
from easytune.core.data.text import TextBatch
from easytune.core.infra import distributed
from easytune.core.infra.config import AT_LEAST_1, NON_NEGATIVE, SAMPLING_STEPS, from_dict, parameter_group, to_dict
from easytune.core.infra.resume import fingerprint
from easytune.core.infra.runtime import count_parameters
from easytune.core.models.frame_denoiser import FrameDenoiser, FrameDenoiserConfig
from easytune.core.models.latent_denoiser import LatentDenoiser, LatentDenoiserConfig
from easytune.core.models.vae import MotionVAE, MotionVAEConfig
from easytune.core.motion.features import recover_from_ric
from easytune.core.motion.skeleton import SkeletonSpec
from easytune.core.pretrain.distillation import ConsistencyDistiller, ConsistencyTraining, build_student
from easytune.core.pretrain.loop import MotionBatch, MotionBatches, TrainConfig, TrainResult, train
from easytune.core.sampling.consistency import ConsistencyDiffusion, ConsistencySamplerConfig
from easytune.core.sampling.diffusion import MDM_DIFFUSION, MLD_DIFFUSION, Diffusion, DiffusionConfig
from easytune.core.sampling.generator import DEFAULT_GUIDANCE, MotionGenerator


@dataclass
class PretrainData:
    """batch_size; max_frames: random crop length (multiple of ``unit``; also the generators' max length);
    val_batches: validation batches per validation (fixed crops and captions)."""

    batch_size: Annotated[int, AT_LEAST_1] = 32
    max_frames: Annotated[int, AT_LEAST_1] = 96
    unit: Annotated[int, AT_LEAST_1] = 4
    val_batches: Annotated[int, AT_LEAST_1] = 8

    def __post_init__(self) -> None:
        if self.max_frames % self.unit or self.batch_size < 1 or self.val_batches < 1:
            raise ValueError("max_frames must be a multiple of unit; batch_size and val_batches >= 1")


@dataclass
class ModelTraining:
    """model: model config overrides (``preset`` + fields; data-dependent sizes are filled in); train: the loop;
    diffusion / guidance_scale: denoisers only (defaults: MLD scaled-linear eps 7.5, MDM cosine x0 2.5);
    cached_crops: MLD denoiser only: encode this many random crops of every training sample once with the frozen
    VAE and train on their posteriors (:class:`LatentCache`) instead of encoding every batch (0: on the fly)."""

    model: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    diffusion: DiffusionConfig | None = None
    guidance_scale: Annotated[float | None, NON_NEGATIVE] = None
    cached_crops: Annotated[int, NON_NEGATIVE] = 0


@dataclass
class VAEEvaluation:
    """Test reconstruction: clips cropped from their first frame to ``max_frames`` (None = data.max_frames)."""

    batch_size: Annotated[int, AT_LEAST_1] = 64
    max_frames: Annotated[int | None, AT_LEAST_1] = None


@dataclass
class GenerateConfig:
    """captions: texts to generate (must be in ``text_embeddings``); empty = the first captions of the first
    ``num_samples`` test samples. lengths: frames per caption (one value for all, one per caption, or empty = the
    test sample's length, cropped to the generators' max). num_steps: sampling steps of the diffusion generators
    (MLD, MDM); consistency_num_steps: of MotionLCM (at most its distillation grid's N); None: the checkpoint's own.
    num_gifs: how many are rendered; gif_stride: frame step."""

    captions: list[str] = field(default_factory=list)
    lengths: Annotated[list[int], AT_LEAST_1] = field(default_factory=list)
    num_samples: Annotated[int, AT_LEAST_1] = 8
    num_steps: Annotated[int | None, SAMPLING_STEPS] = None
    consistency_num_steps: Annotated[int | None, SAMPLING_STEPS] = None
    seed: Annotated[int, NON_NEGATIVE] = 7
    num_gifs: Annotated[int, NON_NEGATIVE] = 2
    gif_stride: Annotated[int, AT_LEAST_1] = 2


@parameter_group("pretrain")
@dataclass
class PretrainConfig:
    """``params:pretrain``; each ``<model>.model`` override dict is checked against its model config class here
    (unknown keys, types, ranges), before any training starts."""

    data: PretrainData = field(default_factory=PretrainData)
    motion_vae: ModelTraining = field(default_factory=ModelTraining)
    latent_denoiser: ModelTraining = field(default_factory=ModelTraining)
    frame_denoiser: ModelTraining = field(default_factory=ModelTraining)
    consistency_model: ConsistencyTraining = field(default_factory=ConsistencyTraining)
    resume_dir: str | None = "data/06_models/resume"
    evaluation: VAEEvaluation = field(default_factory=VAEEvaluation)
    generate: GenerateConfig = field(default_factory=GenerateConfig)

    def __post_init__(self) -> None:
        for name, model_class in (("motion_vae", MotionVAEConfig), ("latent_denoiser", LatentDenoiserConfig),
                                  ("frame_denoiser", FrameDenoiserConfig)):
            from_dict(model_class, getattr(self, name).model, where=f"pretrain.{name}.model")

    def resume_path(self, name: str) -> Path | None:
        return None if not self.resume_dir else Path(self.resume_dir) / f"{name}.pt"


def summary(model: torch.nn.Module, result: TrainResult) -> dict[str, Any]:
    """Report entry of one trained model."""
    return {"params": count_parameters(model, trainable_only=True), "train_loss": result.train_loss,
            "val_loss": result.val_loss, "steps": result.steps, "wall_s": round(result.wall_s, 2),
            "stopped_early": result.stopped_early, "resumed_from": result.resumed_from}


def _batches(split: MotionSplit, text: TextEmbeddings, data: PretrainData, seed: int, device, train: bool
             ) -> MotionBatches:
    if train:  # data-parallel under torchrun: each rank its rows of every global batch
        return MotionBatches(split, text, data.batch_size, data.max_frames, seed, device, data.unit,
                             shard=distributed.context().sharded)
    return MotionBatches(split, text, data.batch_size, data.max_frames, seed, device, data.unit, shuffle=False,
                         random_crop=False, drop_last=False, max_batches=data.val_batches)


def _data_fingerprint(train: MotionSplit, val: MotionSplit, text: TextEmbeddings) -> str:
    """Fingerprint of the data a pretraining run reads (part of its resume key)."""
    return fingerprint([train, val, text])


def _mean_over(batches: MotionBatches, fn) -> float:
    values = [float(fn(b)) for b in batches(0)]
    return float(np.mean(values))


def joints_from_normalised(stats: FeatureStats, skeleton: SkeletonSpec):
    """features (..., T, D) normalised -> joints (..., T, J, 3) metres (differentiable)."""
    return lambda features: recover_from_ric(stats.denormalise(features), skeleton.num_joints)


def train_motion_vae(train_split: MotionSplit, val_split: MotionSplit, text: TextEmbeddings, config: PretrainConfig,
                     device: torch.device, seed: int, stats: FeatureStats | None = None,
                     skeleton: SkeletonSpec | None = None) -> tuple[MotionVAE, TrainResult]:
    """Train the motion VAE (masked smooth-L1 reconstruction + 1e-4 KL, + the joint-position term when
    ``position_weight`` > 0, which needs ``stats`` and ``skeleton``) on random crops; validation = the same loss on
    fixed crops with fixed noise."""
    if config.motion_vae.cached_crops:
        raise ValueError("pretrain.motion_vae.cached_crops: latent caching applies to the MLD denoiser only")
    model_cfg = from_dict(MotionVAEConfig, {"feature_dim": train_split.feature_dim, **config.motion_vae.model},
                          where="pretrain.motion_vae.model")
    torch.manual_seed(seed)
    vae = MotionVAE(model_cfg).to(device)
    batches = _batches(train_split, text, config.data, seed, device, train=True)
    val = _batches(val_split, text, config.data, seed, device, train=False)
    joints_fn = None if stats is None or skeleton is None else joints_from_normalised(stats, skeleton)
    if model_cfg.position_weight > 0 and joints_fn is None:
        raise ValueError("pretrain.motion_vae.model.position_weight > 0 needs the feature stats and the skeleton")

    def val_fn() -> float:
        g = torch.Generator().manual_seed(seed)
        return _mean_over(val, lambda b: vae.loss(b.features, b.mask, g, joints_fn).total)

    result = train(vae, lambda b: vae.loss(b.features, b.mask, joints_fn=joints_fn, shard=b.shard).total, batches,
                   config.motion_vae.train, val_fn, config.resume_path("motion_vae"),
                   resume_tag=[to_dict(config.data), seed, _data_fingerprint(train_split, val_split, text),
                               model_cfg.position_weight > 0 and fingerprint([stats, skeleton.name])],
                   desc="motion_vae")
    return vae.eval(), result


@dataclass
class LatentBatch:
    """Posteriors (B, n, d) of cached crops and one caption each."""

    mu: torch.Tensor
    logvar: torch.Tensor
    text: TextBatch


class LatentCache:
    """The frozen VAE's posteriors (mu, logvar) of ``crops`` random crops of every training sample, encoded once.

    The crops follow the training batches' distribution (:class:`MotionBatches`, epochs ``10_000 + k`` of ``seed``);
    an MLD step then needs no VAE encoder pass (the encoder over every frame costs more than the latent denoiser's
    step). ``cache(epoch)`` yields :class:`LatentBatch` es over every cached crop in a seeded order, each with a
    caption drawn from its sample's captions, deterministic per (seed, epoch) like :class:`MotionBatches`.
    """

    def __init__(self, vae: MotionVAE, split: MotionSplit, text: TextEmbeddings, data: PretrainData, crops: int,
                 seed: int, device: torch.device):
        self.split, self.text, self.batch_size, self.seed, self.device = split, text, data.batch_size, seed, device
        batches = MotionBatches(split, text, data.batch_size, data.max_frames, seed, device, data.unit)
        mus, logvars, index = [], [], []
        with torch.no_grad():
            for k in range(crops):
                for b in batches(10_000 + k):
                    mu, logvar = vae.encode(b.features, b.mask)  # (B, n, d)
                    mus.append(mu)
                    logvars.append(logvar)
                    index.append(b.index)
        self.mu, self.logvar = torch.cat(mus), torch.cat(logvars)  # (M, n, d)
        self.index = np.concatenate(index)  # (M,) sample of each cached crop

    def __len__(self) -> int:
        return len(self.index) // self.batch_size

    def __call__(self, epoch: int):
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.index))
        captions = self.split.sample_caption_ids(rng)  # (N,) one caption per sample for this epoch
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            rows = captions[self.index[idx]]
            yield LatentBatch(self.mu[idx], self.logvar[idx], TextBatch.from_embeddings(self.text, rows, self.device))


def build_generator(kind: str, config: PretrainConfig, feature_dim: int, vae: MotionVAE | None = None
                    ) -> MotionGenerator:
    """A fresh (untrained) generator of ``kind`` (``mld`` needs the trained VAE) from the configuration."""
    if kind == "mld":
        section = config.latent_denoiser
        n, d = vae.latent_shape
        cfg = from_dict(LatentDenoiserConfig, {**section.model, "latent_tokens": n, "latent_dim": d},
                        where="pretrain.latent_denoiser.model")
        denoiser, diffusion = LatentDenoiser(cfg), section.diffusion or MLD_DIFFUSION
    elif kind == "mdm":
        section = config.frame_denoiser
        cfg = from_dict(FrameDenoiserConfig, {"feature_dim": feature_dim, **section.model},
                        where="pretrain.frame_denoiser.model")
        denoiser, diffusion = FrameDenoiser(cfg), section.diffusion or MDM_DIFFUSION
    else:
        raise ValueError(f"kind must be 'mld' or 'mdm', got {kind!r}")
    scale = DEFAULT_GUIDANCE[kind] if section.guidance_scale is None else section.guidance_scale
    return MotionGenerator(denoiser, Diffusion(diffusion), kind, vae=vae, guidance_scale=scale,
                           max_length=config.data.max_frames, feature_dim=feature_dim)


def train_denoiser(kind: str, train_split: MotionSplit, val_split: MotionSplit, text: TextEmbeddings,
                   config: PretrainConfig, device: torch.device, seed: int, vae: MotionVAE | None = None
                   ) -> tuple[MotionGenerator, TrainResult]:
    """Train the MLD latent denoiser (frozen VAE, epsilon loss) or the MDM frame denoiser (masked x0 loss), with
    10% caption dropout; validation = the same loss with fixed timesteps, noise and dropout."""
    torch.manual_seed(seed)
    gen = build_generator(kind, config, train_split.feature_dim, vae).to(device)
    section = config.latent_denoiser if kind == "mld" else config.frame_denoiser
    name = "latent_denoiser" if kind == "mld" else "frame_denoiser"
    if section.cached_crops and kind != "mld":
        raise ValueError(f"pretrain.{name}.cached_crops: latent caching applies to the MLD denoiser only")
    if section.cached_crops and distributed.context().world_size > 1:
        raise ValueError(f"pretrain.{name}.cached_crops: the latent cache is single-process; set it to 0 for "
                         f"data-parallel pretraining")
    batches = (LatentCache(vae, train_split, text, config.data, section.cached_crops, seed, device)
               if section.cached_crops else _batches(train_split, text, config.data, seed, device, train=True))
    val = _batches(val_split, text, config.data, seed, device, train=False)

    def loss_fn(b: MotionBatch | LatentBatch) -> torch.Tensor:
        if isinstance(b, LatentBatch):
            return gen.training_loss(None, None, b.text, posterior=(b.mu, b.logvar))
        return gen.training_loss(b.features, b.mask, b.text, shard=b.shard)

    def val_fn() -> float:
        g = torch.Generator().manual_seed(seed)
        return _mean_over(val, lambda b: gen.training_loss(b.features, b.mask, b.text, generator=g))

    result = train(gen, loss_fn, batches, section.train, val_fn, config.resume_path(name),
                   params=gen.denoiser.parameters(),
                   resume_tag=[to_dict(config.data), gen.checkpoint_metadata(), seed, section.cached_crops,
                               _data_fingerprint(train_split, val_split, text), vae is not None and fingerprint(vae)],
                   desc=name)
    return gen.eval(), result


def train_consistency_model(train_split: MotionSplit, val_split: MotionSplit, text: TextEmbeddings,
                            config: PretrainConfig, device: torch.device, seed: int, teacher: MotionGenerator
                            ) -> tuple[MotionGenerator, TrainResult]:
    """Distil the trained MLD ``teacher`` into a MotionLCM (:mod:`easytune.core.pretrain.distillation`): student initialised
    from the teacher, EMA target, skipping-step DDIM solver on the teacher's schedule, guidance folded in.
    Validation = the same loss with fixed batches, noise, grid indices and guidance scales (it measures
    self-consistency against the moving target, not sample quality). -> (the ``mlcm`` generator, training result)."""
    if teacher.kind != "mld":
        raise ValueError(f"the consistency model is distilled from an 'mld' generator, got {teacher.kind!r}")
    section = config.consistency_model
    dist = section.distillation
    torch.manual_seed(seed)
    student = build_student(teacher.denoiser, section.model).to(device)
    sampler = ConsistencyDiffusion(ConsistencySamplerConfig.from_teacher(
        teacher.diffusion.config, origin_steps=dist.origin_steps, timestep_scaling=dist.timestep_scaling,
        num_inference_steps=section.num_inference_steps))
    distiller = ConsistencyDistiller(student, teacher.denoiser, teacher.vae, sampler, dist).to(device)
    data = replace(config.data, batch_size=section.batch_size or config.data.batch_size)
    batches = _batches(train_split, text, data, seed, device, train=True)
    val = _batches(val_split, text, data, seed, device, train=False)

    def val_fn() -> float:
        g = torch.Generator().manual_seed(seed)
        return _mean_over(val, lambda b: distiller.loss(b.features, b.mask, b.text, generator=g))

    result = train(distiller, lambda b: distiller.training_loss(b.features, b.mask, b.text, shard=b.shard), batches,
                   section.train, val_fn, config.resume_path("consistency_model"), params=student.parameters(),
                   resume_tag=[to_dict(data), to_dict(section), seed, _data_fingerprint(train_split, val_split, text),
                               fingerprint(teacher.denoiser), fingerprint(teacher.vae)],
                   desc="consistency_model")
    gen = MotionGenerator(student, sampler, "mlcm", vae=teacher.vae, guidance_scale=section.guidance_scale,
                          max_length=teacher.max_length, feature_dim=teacher.feature_dim)
    return gen.eval(), result


def vae_reconstruction_errors(vae: MotionVAE, test_split: MotionSplit, text: TextEmbeddings, stats: FeatureStats,
                              skeleton: SkeletonSpec, config: PretrainConfig, device: torch.device) -> dict[str, float]:
    """Reconstruction errors (metres) of the VAE (posterior mean) on the test split, over valid frames of clips
    cropped from the first frame to ``evaluation.max_frames``, joints recovered from de-normalised features:

    - ``vae_mpjpe_m``: MPJPE with the root joint aligned per frame (the motion-reconstruction MPJPE of MLD's
      evaluation code, ``align_root=True``): the pose error, without the integrated trajectory;
    - ``vae_global_mpjpe_m``: MPJPE of the joints in world coordinates (pose + integrated root trajectory);
    - ``vae_root_error_m``: mean distance between the root joints (trajectory drift);
    - ``latent_std``: standard deviation of the posterior means (the scale the latent denoiser sees).
    """
    max_frames = config.evaluation.max_frames or config.data.max_frames
    batches = MotionBatches(test_split, text, config.evaluation.batch_size, max_frames, 0, device, config.data.unit,
                            shuffle=False, random_crop=False, drop_last=False)
    sums = {"vae_mpjpe_m": 0.0, "vae_global_mpjpe_m": 0.0, "vae_root_error_m": 0.0}
    count, latents = 0, []
    joints_fn = joints_from_normalised(stats, skeleton)
    vae.eval()
    with torch.inference_mode():
        for b in batches(0):
            mu, _ = vae.encode(b.features, b.mask)
            rec = vae.decode(mu, b.mask)  # (B, T, D)
            joints, joints_rec = joints_fn(b.features), joints_fn(rec)  # (B, T, J, 3) each
            local, local_rec = joints - joints[..., :1, :], joints_rec - joints_rec[..., :1, :]
            errors = {"vae_mpjpe_m": (local - local_rec).norm(dim=-1).mean(-1),  # (B, T)
                      "vae_global_mpjpe_m": (joints - joints_rec).norm(dim=-1).mean(-1),
                      "vae_root_error_m": (joints[..., 0, :] - joints_rec[..., 0, :]).norm(dim=-1)}
            for key, err in errors.items():
                sums[key] += float(err[b.mask].sum())
            count += int(b.mask.sum())
            latents.append(mu.float().flatten().cpu())
    out = {key: value / max(count, 1) for key, value in sums.items()}
    out["latent_std"] = float(torch.cat(latents).std())
    return out


def generation_requests(test_split: MotionSplit, text: TextEmbeddings, config: PretrainConfig
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(caption rows (N,), lengths (N,)) to generate from ``config.generate``."""
    g, max_len = config.generate, config.data.max_frames
    if g.captions:
        index = text.index()
        missing = [c for c in g.captions if c not in index]
        if missing:
            raise ValueError(f"pretrain.generate.captions not in text_embeddings: {missing}")
        rows = np.array([index[c] for c in g.captions], dtype=np.int64)
        default_lengths = np.full(len(rows), max_len)
    else:
        n = min(g.num_samples, len(test_split))
        rows = test_split.first_caption_ids()[:n]
        default_lengths = test_split.lengths[:n]
    if not g.lengths:
        lengths = default_lengths
    elif len(g.lengths) in (1, len(rows)):
        lengths = np.broadcast_to(np.asarray(g.lengths, dtype=np.int64), rows.shape)
    else:
        raise ValueError(f"pretrain.generate.lengths: give 1 or {len(rows)} values, got {len(g.lengths)}")
    lengths = np.minimum(np.asarray(lengths, dtype=np.int64), max_len)
    if (lengths < 1).any():
        raise ValueError("pretrain.generate.lengths must be >= 1")
    return rows, lengths


def generate_motions(generators: dict[str, MotionGenerator], test_split: MotionSplit, text: TextEmbeddings,
                     stats: FeatureStats, skeleton: SkeletonSpec, config: PretrainConfig, device: torch.device
                     ) -> tuple[dict[str, np.ndarray], dict[str, bytes]]:
    """Generate with every generator for the requested captions.

    Returns arrays ``{captions (N,), lengths (N,), <name>_features (N, T, D) normalised, <name>_joints
    (N, T, J, 3) metres}`` and GIFs ``{sample_XX.gif: bytes}`` (all generators side by side, first ``num_gifs``).
    """
    from easytune.core.export.render import render_skeleton_gif  # lazy: matplotlib only when rendering

    g = config.generate
    rows, lengths = generation_requests(test_split, text, config)
    batch = TextBatch.from_embeddings(text, rows, device)
    out: dict[str, np.ndarray] = {"captions": text.captions[rows].astype(str), "lengths": lengths.astype(np.int64)}
    for name, gen in generators.items():
        steps = g.consistency_num_steps if gen.kind == "mlcm" else g.num_steps
        feats = gen.generate(batch, torch.as_tensor(lengths), generator=torch.Generator().manual_seed(g.seed),
                             num_steps=steps)  # (N, T, D)
        joints = recover_from_ric(stats.denormalise(feats.float()), skeleton.num_joints)  # (N, T, J, 3)
        out[f"{name}_features"] = feats.cpu().numpy().astype(np.float32)
        out[f"{name}_joints"] = joints.cpu().numpy().astype(np.float32)
    gifs = {}
    for i in range(min(g.num_gifs, len(rows))):
        motions = [out[f"{name}_joints"][i, :lengths[i]] for name in generators]
        gifs[f"sample_{i:02d}.gif"] = render_skeleton_gif(
            motions, titles=[f"{name}: {out['captions'][i]}" for name in generators], fps=skeleton.fps,
            chains=skeleton.kinematic_chains, stride=g.gif_stride)
    return out, gifs

