"""Thin Kedro adapter over :mod:`easytune.core.export.prompts` (parameters -> config, model by name, one core call)."""

from __future__ import annotations

from easytune.core.data.dataset import FeatureStats
from easytune.core.data.text_encoder import MiniLMEncoder, TextEncoderConfig
from easytune.core.evaluation.protocol import generator_checkpoints
from easytune.core.export.prompts import GenerateConfig, generate_and_export, prompt_lines
from easytune.core.infra.config import DatasetConfig, RuntimeConfig, from_dict
from easytune.core.infra.runtime import resolve_device
from easytune.core.motion.skeleton import get_skeleton
from easytune.core.sampling.generator import MotionGenerator


def generate_node(base_model_checkpoints: dict, finetuned_denoisers: dict, feature_stats: dict,
                  generate: GenerateConfig, text_encoder: dict, dataset: DatasetConfig,
                  runtime: RuntimeConfig) -> tuple[dict[str, bytes], dict, dict]:
    """-> (``prompt_motions`` files under ``<model>/``, ``generate_report``, MLflow metrics).

    The model is resolved by name as the evaluation resolves it (``generate.base_models``, fine-tuned
    ``data/06_models/finetuned/<method>.pt``); prompts are encoded like the captions
    (``params:data_processing.text_encoder``). The prompts' size and characters are checked before any model
    loads, every prompt's length before anything is generated.
    """
    config = from_dict(GenerateConfig, generate, where="params:generate")
    prompt_lines(config)  # file size, lines, characters, control characters, motions: before any model loads
    encoder_config = from_dict(TextEncoderConfig, text_encoder, where="params:data_processing.text_encoder")
    device = resolve_device(runtime["device"])
    denoiser, vae = generator_checkpoints(config.model, config.base_models, base_model_checkpoints,
                                          finetuned_denoisers, config.vae_checkpoint, where="generate.model")
    generator = MotionGenerator.from_checkpoints(denoiser, vae, device, source=config.model)
    encoder = MiniLMEncoder(encoder_config.model_path, device, encoder_config.max_tokens)
    result = generate_and_export(config, generator, FeatureStats.from_arrays(feature_stats), encoder,
                                 skeleton=get_skeleton(dataset["skeleton"]), fps=float(dataset["fps"]),
                                 device=device)
    report = result.report
    metrics = {f"{config.model}.{name}": [{"value": float(value), "step": 0}] for name, value in (
        ("motions", report["motions"]), ("generate_s", report["generate_s"]),
        ("bvh_mean_error_cm", report["bvh"]["mean_error_cm"]))}
    return {f"{config.model}/{name}": data for name, data in result.files.items()}, report, metrics
