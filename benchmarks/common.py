"""Shared set-up of the fine-tuning benchmarks: models (from checkpoints or presets), captions, one method run.

Imports torch, numpy and ``easytune.core`` only (no kedro, no mlflow); ``easytune.core.sampling.diffusion`` needs
diffusers. Run from the project root; ``src/`` is put on the path when the package is not installed.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))


def require_diffusers() -> None:
    """Exit with a clear message when diffusers (used by easytune.core.sampling.diffusion) is not importable."""
    try:
        import diffusers  # noqa: F401
    except ImportError:
        sys.stderr.write(
            "diffusers is not installed: easytune.core.sampling.diffusion builds its DDIM/DDPM schedulers with it.\n"
            "Install the pinned version (pip install diffusers==0.42.1), or carry its wheel to the machine\n"
            "(pip download diffusers==0.42.1 --no-deps -d wheels/ and pip install wheels/*.whl there).\n")
        raise SystemExit(2) from None


require_diffusers()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from easytune.core.data.dataset import MotionSplit, TextEmbeddings  # noqa: E402
from easytune.core.finetune.config import FinetuneConfig  # noqa: E402
from easytune.core.finetune.trainer import finetune  # noqa: E402

# name -> (policy, options); "draft_T" means DRaFT-K with K = T (the full chain)
METHODS: dict[str, tuple[str, dict]] = {
    "easytune_step": ("easytune_step", {}),
    "easytune_chain": ("easytune_chain", {}),
    "draft_10": ("draft_k", {"k": 10}),
    "draft_T": ("draft_k", {"k": -1}),
    "refl_10": ("refl", {"m": 10}),
    "alignprop": ("alignprop", {}),
    "drtune": ("drtune", {"k": 5, "m": 10}),
}


def policy_of(name: str, num_steps: int) -> tuple[str, dict]:
    method, options = METHODS[name]
    return method, {k: (num_steps if v == -1 else v) for k, v in options.items()}


def random_models(preset: str, kind: str, device: torch.device, seed: int, max_frames: int, feature_dim: int = 263):
    """Generator + reward at a model preset (``tiny``/``cpu``/``paper``), randomly initialised (seeded); ``mlcm``: the
    consistency student built from the random MLD (4-step sampler), as the distillation builds it."""
    from easytune.core.models.frame_denoiser import FrameDenoiser, FrameDenoiserConfig
    from easytune.core.models.latent_denoiser import LatentDenoiser, LatentDenoiserConfig
    from easytune.core.models.vae import MotionVAE, MotionVAEConfig
    from easytune.core.reward.retrieval_model import RetrievalModel, RetrievalModelConfig
    from easytune.core.reward.reward import Reward
    from easytune.core.sampling.diffusion import MDM_DIFFUSION, MLD_DIFFUSION, Diffusion
    from easytune.core.sampling.generator import MotionGenerator

    torch.manual_seed(seed)
    if kind in ("mld", "mlcm"):
        vae = MotionVAE(MotionVAEConfig(preset=preset, feature_dim=feature_dim))
        den = LatentDenoiser(LatentDenoiserConfig(preset=preset, latent_tokens=vae.config.latent_tokens,
                                                  latent_dim=vae.config.latent_dim))
        gen = MotionGenerator(den, Diffusion(dataclasses.replace(MLD_DIFFUSION)), "mld", vae=vae,
                              max_length=max_frames, feature_dim=feature_dim)
        if kind == "mlcm":
            from easytune.core.pretrain.distillation import build_student
            from easytune.core.sampling.consistency import ConsistencyDiffusion, ConsistencySamplerConfig

            sampler = ConsistencyDiffusion(ConsistencySamplerConfig.from_teacher(MLD_DIFFUSION))
            gen = MotionGenerator(build_student(den), sampler, "mlcm", vae=vae, max_length=max_frames,
                                  feature_dim=feature_dim)
    else:
        den = FrameDenoiser(FrameDenoiserConfig(preset=preset, feature_dim=feature_dim))
        gen = MotionGenerator(den, Diffusion(dataclasses.replace(MDM_DIFFUSION)), "mdm", max_length=max_frames,
                              feature_dim=feature_dim)
    reward_model = RetrievalModel(RetrievalModelConfig(feature_dim=feature_dim)).to(device)
    return gen.to(device).eval(), Reward(reward_model)


def catalog_models(models_dir: Path, kind: str, device: torch.device, config=None):
    """Generator + reward from the pipeline checkpoints in ``models_dir`` (data/06_models); with a FinetuneConfig
    ``config``, the reward it fine-tunes with (its ``reward_ensemble`` members and realism critic read from there)."""
    from easytune.core.finetune import load_finetune_reward, load_generator, load_reward, reward_inputs_needed

    def load(name: str) -> dict:
        path = models_dir / f"{name}.pt"
        if not path.exists():
            raise SystemExit(f"{path} not found: run `kedro run --pipeline pretrain` and `--pipeline reward` first, "
                             f"or use --preset to benchmark randomly initialised models")
        return torch.load(path, map_location="cpu", weights_only=True)

    names = {"mld": "pretrained_latent_denoiser", "mdm": "pretrained_frame_denoiser",
             "mlcm": "pretrained_consistency_model"}
    denoiser = load(names[kind])
    gen = load_generator(denoiser, load("motion_vae") if kind in ("mld", "mlcm") else None, device)
    if config is None:
        return gen, load_reward(load("reward_model"), device)
    extra = {name: load(name) for name in reward_inputs_needed(config)}
    return gen, load_finetune_reward(load("reward_model"), device, config, extra)


def synthetic_captions(n: int, frames: int, feature_dim: int, seed: int) -> tuple[MotionSplit, TextEmbeddings]:
    """A split of ``n`` motions of ``frames`` frames (features unused by fine-tuning) with random captions."""
    rng = np.random.default_rng(seed)
    text = TextEmbeddings(captions=np.array([f"caption {i}" for i in range(n)]),
                          sentence=rng.normal(size=(n, 384)).astype(np.float32),
                          tokens=rng.normal(size=(n, 8, 384)).astype(np.float16),
                          token_lengths=np.full(n, 8, dtype=np.int64))
    split = MotionSplit(ids=np.array([f"m{i}" for i in range(n)]), features=np.zeros((n, frames, feature_dim), np.float32),
                        lengths=np.full(n, frames, dtype=np.int64), caption_offsets=np.arange(n + 1, dtype=np.int64),
                        caption_ids=np.arange(n, dtype=np.int64), labels=np.array([""] * n))
    return split, text


def catalog_captions(data_dir: Path) -> tuple[MotionSplit, MotionSplit, TextEmbeddings]:
    """train/val splits and text embeddings written by the data_processing pipeline."""
    def npz(path: Path) -> dict:
        if not path.exists():
            raise SystemExit(f"{path} not found: run `kedro run --pipeline data_processing` first")
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}

    text = TextEmbeddings.from_arrays(npz(data_dir / "04_feature" / "text_embeddings.npz"))
    train = MotionSplit.from_arrays(npz(data_dir / "05_model_input" / "train_motions.npz"), source="train_motions")
    val = MotionSplit.from_arrays(npz(data_dir / "05_model_input" / "val_motions.npz"), source="val_motions")
    return train, val, text


def run_method(name: str, generator_factory, train: MotionSplit, val: MotionSplit | None, text: TextEmbeddings,
               device: torch.device, *, num_steps: int, seed: int = 0, on_validation=None, **overrides) -> dict:
    """Fine-tune a fresh copy of the models with method ``name``; returns the trainer summary (+ history)."""
    gen, reward = generator_factory()
    method, options = policy_of(name, num_steps)
    config = FinetuneConfig(method=method, policy=options, num_steps=num_steps, **overrides)
    t0 = time.perf_counter()
    result = finetune(gen, reward, train, val, text, config, seed=seed, device=device, progress=False,
                      on_validation=on_validation)
    summary = dict(result.summary, name=name, elapsed_s=time.perf_counter() - t0)
    summary["history"] = result.history
    del gen, reward, result
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return summary


def nograd_sampling_cuda_peak(generator_factory, train: MotionSplit, text: TextEmbeddings, device: torch.device,
                              batch_size: int, num_steps: int) -> int | None:
    """Peak CUDA bytes of plain no-grad sampling of one batch (the baseline of the extra-memory ratio)."""
    if device.type != "cuda":
        return None
    from easytune.core.data.text import TextBatch

    gen, _ = generator_factory()
    rows = np.arange(batch_size) % len(text)
    batch = TextBatch.from_embeddings(text, rows, device)
    lengths = torch.as_tensor(train.lengths[rows], device=device)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    gen.generate(batch, lengths, generator=torch.Generator().manual_seed(0), num_steps=num_steps)
    torch.cuda.synchronize(device)
    peak = int(torch.cuda.max_memory_allocated(device))
    del gen
    torch.cuda.empty_cache()
    return peak


def mib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:9.2f}"
