"""Thin Kedro adapter over :mod:`easytune.core.reward.critic` (the generator's samples, then one core call)."""

from __future__ import annotations

import logging

from easytune.core.data.dataset import MotionSplit, TextEmbeddings
from easytune.core.finetune import load_generator
from easytune.core.finetune.config import FinetuneSettings
from easytune.core.infra.checkpoint import make_checkpoint
from easytune.core.infra.config import RuntimeConfig, from_dict, to_dict
from easytune.core.infra.runtime import resolve_device, seed_everything
from easytune.core.reward.critic import train_critic
from easytune.core.reward.generated import generate_for_captions

log = logging.getLogger(__name__)


def train_realism_critic(pretrained_latent_denoiser: dict | None, pretrained_frame_denoiser: dict | None,
                         pretrained_consistency_model: dict | None, motion_vae: dict | None, train_motions: dict,
                         text_embeddings: dict, finetune_params: FinetuneSettings, runtime: RuntimeConfig
                         ) -> tuple[dict, dict]:
    """-> (``realism_critic`` checkpoint, training curves): real = the train split's motions, generated = samples of
    the pretrained generator of ``finetune.generator`` for random train captions (``finetune.realism_critic``)."""
    settings = from_dict(FinetuneSettings, finetune_params, where="params:finetune")
    options = settings.realism_critic
    device = resolve_device(runtime["device"])
    seed_everything(runtime["seed"])
    text = TextEmbeddings.from_arrays(text_embeddings, source="text_embeddings")
    train = MotionSplit.from_arrays(train_motions, source="train_motions")
    train.check_against(text, "train_motions")
    name, ckpt, vae = settings.pretrained({"pretrained_latent_denoiser": pretrained_latent_denoiser,
                                           "pretrained_frame_denoiser": pretrained_frame_denoiser,
                                           "pretrained_consistency_model": pretrained_consistency_model,
                                           "motion_vae": motion_vae})
    generator = load_generator(ckpt, vae, device, source=name)
    fake = generate_for_captions(generator, train, text, options.samples, seed=options.seed, device=device,
                                 num_steps=options.num_steps)
    real_len = train.lengths.clip(max=generator.max_length)
    critic, history = train_critic(train.features[:, :generator.max_length], real_len, fake.features, fake.lengths,
                                   options, device)
    final = {k: v[-1]["value"] for k, v in history.items() if v}
    log.info("realism critic on %s: %s after %d steps", name, final, options.steps)
    meta = {"generator": settings.generator, "source": name, "training": to_dict(options), "final": final}
    return make_checkpoint("realism_critic", critic, meta), history
