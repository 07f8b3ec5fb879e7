"""Tiny, seeded generators (real MLD/MDM/MotionLCM classes at toy sizes), a tiny reward model and tiny data splits."""

import numpy as np
import torch

from easytune.core.data.dataset import MotionSplit, TextEmbeddings
from easytune.core.data.text import TextBatch
from easytune.core.models.frame_denoiser import FrameDenoiser, FrameDenoiserConfig
from easytune.core.models.latent_denoiser import LatentDenoiser, LatentDenoiserConfig
from easytune.core.models.vae import MotionVAE, MotionVAEConfig
from easytune.core.pretrain.distillation import build_student
from easytune.core.reward.retrieval_model import RetrievalModel, RetrievalModelConfig
from easytune.core.reward.reward import Reward
from easytune.core.sampling.consistency import ConsistencyDiffusion, ConsistencySamplerConfig
from easytune.core.sampling.diffusion import Diffusion, DiffusionConfig
from easytune.core.sampling.generator import MotionGenerator

FEAT, TEXT, MAX_LEN = 6, 8, 12


def make_mdm(steps: int = 6, guidance: float = 2.5, seed: int = 0) -> MotionGenerator:
    torch.manual_seed(seed)
    den = FrameDenoiser(FrameDenoiserConfig(preset="tiny", feature_dim=FEAT, text_dim=TEXT, d_model=16, ff_dim=32))
    diff = Diffusion(DiffusionConfig(schedule="squaredcos_cap_v2", prediction_type="sample",
                                     num_inference_steps=steps))
    return MotionGenerator(den, diff, "mdm", guidance_scale=guidance, max_length=MAX_LEN, feature_dim=FEAT).eval()


def make_mld(steps: int = 6, guidance: float = 7.5, seed: int = 0) -> MotionGenerator:
    torch.manual_seed(seed)
    vae = MotionVAE(MotionVAEConfig(preset="tiny", feature_dim=FEAT, d_model=16, ff_dim=32, latent_dim=8))
    den = LatentDenoiser(LatentDenoiserConfig(preset="tiny", latent_tokens=1, latent_dim=8, text_dim=TEXT,
                                              d_model=16, ff_dim=32))
    diff = Diffusion(DiffusionConfig(num_inference_steps=steps))
    return MotionGenerator(den, diff, "mld", vae=vae, guidance_scale=guidance, max_length=MAX_LEN,
                           feature_dim=FEAT).eval()


def make_mlcm(steps: int = 4, guidance: float = 7.5, seed: int = 0) -> MotionGenerator:
    """The tiny MLD's weights in a consistency student (its guidance embedding randomised so the scale matters)."""
    mld = make_mld(seed=seed)
    student = build_student(mld.denoiser)
    torch.manual_seed(seed + 100)
    for p in student.guidance_embed.parameters():
        torch.nn.init.normal_(p, std=0.1)
    sampler = ConsistencyDiffusion(ConsistencySamplerConfig(num_inference_steps=steps))
    return MotionGenerator(student, sampler, "mlcm", vae=mld.vae, guidance_scale=guidance, max_length=MAX_LEN,
                           feature_dim=FEAT).eval()


def make_reward(seed: int = 1) -> Reward:
    torch.manual_seed(seed)
    model = RetrievalModel(RetrievalModelConfig(feature_dim=FEAT, text_dim=TEXT, latent_dim=8, d_model=16, ff_dim=32,
                                                num_heads=2, num_layers=1, decoder_layers=1, dropout=0.0,
                                                use_decoder=False))
    return Reward(model)


def make_text(batch: int = 3, seed: int = 2) -> TextBatch:
    g = torch.Generator().manual_seed(seed)
    return TextBatch(sentence=torch.randn(batch, TEXT, generator=g), tokens=torch.randn(batch, 3, TEXT, generator=g),
                     token_lengths=torch.full((batch,), 3, dtype=torch.int64), rows=torch.arange(batch))


def make_splits(n: int = 8, seed: int = 3) -> tuple[MotionSplit, MotionSplit, TextEmbeddings]:
    rng = np.random.default_rng(seed)
    text = TextEmbeddings(captions=np.array([f"caption {i}" for i in range(n)]),
                          sentence=rng.normal(size=(n, TEXT)).astype(np.float32),
                          tokens=rng.normal(size=(n, 3, TEXT)).astype(np.float16),
                          token_lengths=np.full(n, 3, dtype=np.int64))

    def split(index: np.ndarray) -> MotionSplit:
        k = len(index)
        return MotionSplit(ids=np.array([f"s{i}" for i in index]),
                           features=rng.normal(size=(k, MAX_LEN, FEAT)).astype(np.float32),
                           lengths=rng.integers(6, MAX_LEN + 1, size=k).astype(np.int64),
                           caption_offsets=np.arange(k + 1, dtype=np.int64), caption_ids=index.astype(np.int64),
                           labels=np.array([""] * k))

    return split(np.arange(n - 2)), split(np.arange(n - 2, n)), text



def finetune_config(**kw):
    """A tiny FinetuneConfig: batch 3, 8 updates, lr 1e-2, clip 1.0, 4 steps, overridden by ``kw``."""
    from easytune.core.finetune.config import FinetuneConfig
    from easytune.core.infra.config import from_dict

    return from_dict(FinetuneConfig, {**dict(batch_size=3, max_updates=8, lr=1e-2, grad_clip=1.0, num_steps=4), **kw})
