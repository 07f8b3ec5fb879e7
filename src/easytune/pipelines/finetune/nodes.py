"""Thin Kedro adapters over :mod:`easytune.core.finetune` (parameters -> typed configs, device, one core call)."""

from __future__ import annotations

import logging

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from easytune.core.data.dataset import MotionSplit, TextEmbeddings  # noqa: E402
from easytune.core.export.prompts import GenerateConfig  # noqa: E402
from easytune.core.export.serving import ServeConfig  # noqa: E402
from easytune.core.finetune import load_generator, load_reward, reward_inputs_needed  # noqa: E402
from easytune.core.finetune.analysis import chain_jacobian_norms, noisy_clean_similarity  # noqa: E402
from easytune.core.finetune.config import FinetuneSettings  # noqa: E402
from easytune.core.finetune.job import CURVES, FinetuneJob, launch_finetune_job, run_finetune_job  # noqa: E402
from easytune.core.finetune.trainer import validation_batch  # noqa: E402
from easytune.core.infra import distributed  # noqa: E402
from easytune.core.infra.config import (  # noqa: E402
    DistributedOptions,
    RuntimeConfig,
    from_dict,
)
from easytune.core.infra.runtime import resolve_device, seed_everything  # noqa: E402

log = logging.getLogger(__name__)


def _available(latent: dict | None, frame: dict | None, vae: dict | None, consistency: dict | None) -> dict:
    """Catalog name -> pretrained checkpoint (None: never trained) for :meth:`FinetuneSettings.pretrained`."""
    return {"pretrained_latent_denoiser": latent, "pretrained_frame_denoiser": frame,
            "pretrained_consistency_model": consistency, "motion_vae": vae}


def _splits(text_embeddings: dict, **named: dict) -> tuple[TextEmbeddings, dict[str, MotionSplit]]:
    text = TextEmbeddings.from_arrays(text_embeddings, source="text_embeddings")
    splits = {name: MotionSplit.from_arrays(arrays, source=name) for name, arrays in named.items()}
    for name, split in splits.items():
        split.check_against(text, name)
    return text, splits


__all__ = ["CURVES", "DistributedOptions", "FinetuneSettings", "analyse_sampling_chain", "build_finetune_report",
           "finetune_method"]


def finetune_method(pretrained_latent_denoiser: dict, pretrained_frame_denoiser: dict,
                    pretrained_consistency_model: dict, motion_vae: dict, reward_model: dict, train_motions: dict,
                    val_motions: dict, text_embeddings: dict, reward_model_seed1: dict | None,
                    reward_model_seed2: dict | None, reward_model_no_spl: dict | None, realism_critic: dict | None,
                    finetune_params: FinetuneSettings, method_options: dict, runtime: RuntimeConfig
                    ) -> tuple[dict, dict, dict]:
    """-> (fine-tuned denoiser checkpoint, metric histories, summary) for one method; with
    ``runtime.distributed.nproc_per_node`` > 1 data-parallel in that many local workers (rank 0's result).
    The optional reward checkpoints (other training seeds, the no-SPL control, the realism critic; None when never
    trained) are read only when ``reward_ensemble`` / ``realism_weight`` name them."""
    settings = from_dict(FinetuneSettings, finetune_params, where="params:finetune")
    config = settings.run_config(method_options, where="params:finetune.methods")
    available = {"reward_model_seed1": reward_model_seed1, "reward_model_seed2": reward_model_seed2,
                 "reward_model_no_spl": reward_model_no_spl, "realism_critic": realism_critic}
    extra = {name: available.get(name) for name in reward_inputs_needed(config)}
    options = from_dict(DistributedOptions, runtime.get("distributed") or {}, where="runtime.distributed")
    nproc = distributed.resolve_nproc(options.nproc_per_node, runtime["device"])
    if settings.is_released:  # a released MLD and reward (finetune.released), one process
        return _finetune_released(settings, config, train_motions, val_motions, text_embeddings, runtime, nproc)
    name, ckpt, vae = settings.pretrained(_available(pretrained_latent_denoiser, pretrained_frame_denoiser,
                                                     motion_vae, pretrained_consistency_model))
    job = FinetuneJob(ckpt, vae, reward_model, train_motions, val_motions, text_embeddings, config, runtime["seed"],
                      settings.generator, name, extra)
    if nproc > 1:
        _splits(text_embeddings, train_motions=train_motions, val_motions=val_motions)  # bad input: fail here
        distributed.shard_of(config.batch_size, distributed.DistContext(world_size=nproc),
                             what="finetune batch_size")
        checkpoint, history, summary = launch_finetune_job(job, nproc, runtime["device"])
    else:
        checkpoint, history, summary = run_finetune_job(resolve_device(runtime["device"]), job)
    log.info("finetune %s: %s", config.method, {k: v for k, v in summary.items() if k != "curves"})
    return checkpoint, history, summary


def _finetune_released(settings: FinetuneSettings, config, train_motions: dict, val_motions: dict,
                       text_embeddings: dict, runtime: RuntimeConfig, nproc: int) -> tuple[dict, dict, dict]:
    from easytune.core.finetune.released import finetune_released

    if nproc > 1:
        raise ValueError("finetune.generator released_mld runs in one process: set runtime.distributed."
                         "nproc_per_node to 1")
    text, splits = _splits(text_embeddings, train_motions=train_motions, val_motions=val_motions)
    seed_everything(runtime["seed"])
    checkpoint, history, summary = finetune_released(settings.released, config, splits["train_motions"],
                                                     splits["val_motions"], text, seed=runtime["seed"],
                                                     device=resolve_device(runtime["device"]))
    log.info("finetune %s (released MLD): %s", config.method, {k: v for k, v in summary.items() if k != "curves"})
    summary["curves"] = {name: [[r["step"], r["value"]] for r in history.get(name, [])] for name in CURVES}
    return checkpoint, history, summary


def build_finetune_report(*summaries: dict) -> dict:
    """-> ``finetune_report``: ``{method: summary}`` (updates, wall_s, s_per_update, rewards, memory peaks) of every
    method that has a summary (empty = never run: skipped); the per-update curves stay in each ``finetune_summary``.
    Rebuild it after ``--namespaces`` runs with ``kedro run --pipeline finetune_compare --nodes build_finetune_report``.
    """
    present = [s for s in summaries if s]
    if len(present) < len(summaries):
        log.info("finetune_report: %d of %d methods have no summary yet (not run): left out",
                 len(summaries) - len(present), len(summaries))
    return {s["method"]: {k: v for k, v in s.items() if k != "curves"} for s in present}


def analyse_sampling_chain(pretrained_latent_denoiser: dict, pretrained_frame_denoiser: dict,
                           pretrained_consistency_model: dict, motion_vae: dict, reward_model: dict, val_motions: dict,
                           text_embeddings: dict, finetune_params: FinetuneSettings, runtime: RuntimeConfig
                           ) -> tuple[dict, plt.Figure]:
    """-> (per-step chain Jacobian norms and noisy/clean similarities, their figure) of the pretrained sampler."""
    settings = from_dict(FinetuneSettings, finetune_params, where="params:finetune")
    common = settings.common_config()
    device = resolve_device(runtime["device"])
    text, splits = _splits(text_embeddings, val_motions=val_motions)
    if settings.is_released:
        from easytune.core.finetune.released import load_released_setup

        generator, reward, _ = load_released_setup(settings.released, text.captions, device)
        embed = reward.embed_motion
    else:
        name, ckpt, vae = settings.pretrained(_available(pretrained_latent_denoiser, pretrained_frame_denoiser,
                                                         motion_vae, pretrained_consistency_model))
        generator = load_generator(ckpt, vae, device, source=name)
        reward = load_reward(reward_model, device)

        def embed(f, n):
            return reward.model.encode_motion(f, n)[0]
    max_frames = min(common.max_frames or generator.max_length, generator.max_length)
    batch, lengths = validation_batch(splits["val_motions"], text, settings.analysis.captions, max_frames, device)
    kwargs = dict(seed=settings.analysis.seed, num_steps=settings.analysis.num_steps or common.num_steps,
                  guidance_scale=common.guidance_scale)
    norms = chain_jacobian_norms(generator, batch, lengths, **kwargs)
    sims = noisy_clean_similarity(generator, batch, lengths, embed=embed, **kwargs)
    analysis = {"jacobian_norm": norms, "similarity_to_clean": sims, "generator": settings.generator}
    return analysis, _analysis_figure(norms, sims)


def _analysis_figure(norms: dict, sims: dict) -> plt.Figure:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = range(len(norms["chain"]))
    left.semilogy(steps, norms["step"], label="one step ||d x_{t-1}/d x_t||")
    left.semilogy(steps, norms["chain"], label="chain ||d x_0/d x_t||")
    left.set(xlabel="step index (0 = noisiest)", ylabel="VJP norm (random probe)", title="Fig. 3: chain gradient")
    left.legend(fontsize=8)
    for name, values in sims.items():
        right.plot(range(len(values)), values, label=name)
    right.set(xlabel="step index (0 = noisiest)", ylabel="cosine to final motion", title="Fig. 4: noisy vs clean")
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


def log_model_node(method: str):
    """The node that logs ``method``'s fine-tuned generator as an MLflow model (:mod:`easytune.serving`)."""

    def log_served_model(finetuned_denoiser: dict, motion_vae: dict | None, feature_stats: dict, generate: dict | GenerateConfig,
                         serve: dict | ServeConfig, text_encoder: dict, dataset: dict) -> dict:
        """-> ``<method>.served_model``: the logged model's URI, registered version and aliases."""
        from easytune.core.finetune.released import RELEASED_DENOISER_KIND
        from easytune.serving import log_generator_model, needs_vae

        if finetuned_denoiser.get("kind") == RELEASED_DENOISER_KIND:
            log.info("%s: a fine-tuned released MLD is not logged as an MLflow model (its VAE and text encoder are "
                     "the released files); score it with `kedro run --pipeline evaluation`", method)
            return {"method": method, "logged": False, "reason": "released MLD (not served)"}
        vae = motion_vae if needs_vae(finetuned_denoiser) else None
        return log_generator_model(method, finetuned_denoiser, vae, feature_stats, generate=generate, serve=serve,
                                   text_encoder=text_encoder, dataset=dataset)

    log_served_model.__qualname__ = log_served_model.__name__ = f"log_served_model_{method}"
    return log_served_model
