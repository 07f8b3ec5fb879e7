"""Reward fine-tuning of text-to-motion diffusion models (EasyTune and the chain baselines).

- :mod:`.policies`: each method as a small policy deciding what the one rollout loop does per step;
- :mod:`.rollout`: the one rollout loop (:func:`run_rollout`);
- :mod:`.accounting`: saved-for-backward bytes, seconds and CUDA peak per optimizer update;
- :mod:`.trainer`: optimisation (AdamW, warm-up + cosine, clip, KL, LoRA, early stopping, resume);
- :mod:`.analysis`: chain-Jacobian norms (paper Fig. 3) and noisy-vs-clean similarity (Fig. 4);
- :mod:`.released`: a released MLD and a released reward (SPM, TMR) behind the interfaces of the one loop.

Every checkpoint the fine-tuning code loads goes through :func:`load_checkpoint_model` with
:data:`ALLOWED_CHECKPOINT_KINDS`: the evaluator (and the content classifier) can never be loaded here.
"""

from __future__ import annotations

import torch

from easytune.core.infra.checkpoint import CheckpointError, build_from_checkpoint

ALLOWED_CHECKPOINT_KINDS = ("latent_denoiser", "latent_consistency_denoiser", "frame_denoiser", "motion_vae",
                            "retrieval_model", "realism_critic", "released_mld_denoiser")

#: the reward checkpoints (catalog names) a ``reward_ensemble`` may name, besides ``reward_model``
ENSEMBLE_INPUTS = ("reward_model_seed1", "reward_model_seed2", "reward_model_no_spl")
#: the realism critic's catalog name (read when ``realism_weight > 0``)
CRITIC_INPUT = "realism_critic"


def load_checkpoint_model(ckpt: dict, device: torch.device | str, *, source: str,
                          expected_kind: str | tuple[str, ...] | None = None) -> torch.nn.Module:
    """Rebuild a model allowed in fine-tuning; ``expected_kind`` narrows the allowed kinds further."""
    allowed = ALLOWED_CHECKPOINT_KINDS
    if expected_kind is not None:
        wanted = (expected_kind,) if isinstance(expected_kind, str) else tuple(expected_kind)
        allowed = tuple(k for k in allowed if k in wanted)
    return build_from_checkpoint(ckpt, device, allowed_kinds=allowed, source=source)


def load_generator(denoiser_ckpt: dict, vae_ckpt: dict | None, device: torch.device | str,
                   source: str = "pretrained denoiser"):
    """MotionGenerator from a pretrained denoiser checkpoint (+ the motion VAE for MLD and MotionLCM), kinds checked
    first."""
    from easytune.core.sampling.generator import LATENT_KINDS, MotionGenerator

    for ckpt, name in ((denoiser_ckpt, source), (vae_ckpt, "motion_vae")):
        if ckpt is not None and (not isinstance(ckpt, dict) or ckpt.get("kind") not in ALLOWED_CHECKPOINT_KINDS):
            kind = ckpt.get("kind") if isinstance(ckpt, dict) else type(ckpt).__name__
            raise CheckpointError(f"{name}: model kind {kind!r} may not be loaded by fine-tuning (allowed: "
                                  f"{list(ALLOWED_CHECKPOINT_KINDS)})")
    kind = denoiser_ckpt.get("metadata", {}).get("generator", {}).get("kind")
    return MotionGenerator.from_checkpoints(denoiser_ckpt, vae_ckpt if kind in LATENT_KINDS else None, device,
                                            source=source)


def load_reward(reward_ckpt: dict, device: torch.device | str):
    """Frozen :class:`~easytune.core.reward.reward.Reward` from a ``retrieval_model`` checkpoint."""
    from easytune.core.reward.reward import Reward

    model = load_checkpoint_model(reward_ckpt, device, source="reward_model", expected_kind="retrieval_model")
    return Reward(model)


def reward_inputs_needed(config) -> list[str]:
    """Catalog names of the checkpoints besides ``reward_model`` that the reward of ``config`` (a
    :class:`~easytune.core.finetune.config.FinetuneConfig`) reads: ensemble members, the realism critic."""
    names = [m for m in (config.reward_ensemble.members if config.reward_ensemble else []) if m != "reward_model"]
    return names + ([CRITIC_INPUT] if config.realism_weight > 0 else [])


def load_finetune_reward(reward_ckpt: dict, device: torch.device | str, config, extra: dict[str, dict | None]):
    """The reward fine-tuning optimises under ``config``: the frozen ``reward_model``
    (:class:`~easytune.core.reward.reward.Reward`), or with ``config.reward_ensemble`` an
    :class:`~easytune.core.reward.ensemble.EnsembleReward` of the named checkpoints; with ``realism_weight > 0``
    plus that weight times the realism critic's log-probability of "real"
    (:class:`~easytune.core.reward.ensemble.RealismReward`).
    ``extra``: catalog name -> checkpoint (None: never trained) of the other checkpoints it names."""
    from easytune.core.reward.ensemble import EnsembleReward, RealismReward

    def checkpoint(name: str, what: str, run: str) -> dict:
        ckpt = reward_ckpt if name == "reward_model" else extra.get(name)
        if name != "reward_model" and name not in (*ENSEMBLE_INPUTS, CRITIC_INPUT):
            raise ValueError(f"{what} names {name!r}; known: {['reward_model', *ENSEMBLE_INPUTS]}")
        if ckpt is None:
            raise ValueError(f"{what} needs {name} (data/06_models/{name}.pt), which does not exist: run {run} first")
        return ckpt

    if config.reward_ensemble is None:
        reward = load_reward(reward_ckpt, device)
    else:
        run = "`kedro run --pipeline reward` (it trains reward.training_seeds seeds)"
        members = [load_reward(checkpoint(name, "reward_ensemble.members", run), device)
                   for name in config.reward_ensemble.members]
        reward = EnsembleReward(members, config.reward_ensemble.mode, config.reward_ensemble.std_weight)
    if config.realism_weight > 0:
        ckpt = checkpoint(CRITIC_INPUT, "realism_weight > 0", "`kedro run --pipeline realism_critic`")
        critic = load_checkpoint_model(ckpt, device, source=CRITIC_INPUT, expected_kind="realism_critic")
        reward = RealismReward(reward, critic, config.realism_weight)
    return reward


__all__ = ["ALLOWED_CHECKPOINT_KINDS", "CRITIC_INPUT", "ENSEMBLE_INPUTS", "load_checkpoint_model",
           "load_finetune_reward", "load_generator", "load_reward", "reward_inputs_needed"]
