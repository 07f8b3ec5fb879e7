"""Tiny training runs shared by the data-parallel tests: the test process runs them alone (the reference), the
workers of :func:`easytune.core.infra.distributed.launch_local` run them as ranks of a gloo process group.

Every run uses the real loops on the tiny models of :mod:`tests.core.finetune.tiny` with a global batch of 4
(2 rows per rank with 2 processes)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from easytune.core.finetune.config import FinetuneConfig
from easytune.core.finetune.trainer import finetune
from easytune.core.infra import distributed
from easytune.core.infra.config import from_dict
from easytune.core.pretrain.base_generators import PretrainConfig, train_denoiser
from easytune.core.reward.training import RetrievalTrainingConfig, train_retrieval_model
from tests.core.finetune.tiny import make_mdm, make_mld, make_reward, make_splits

CPU = torch.device("cpu")
BATCH = 4


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def finetune_run(method: str = "easytune_step", kind: str = "mld", resume_path: str | None = None,
                 stop_after: int | None = None, **overrides) -> dict:
    """EasyTune (per-step updates, MLD) or DRaFT-K (one update per trajectory, MDM) on the tiny models."""
    train, val, text = make_splits(10)
    generator = make_mld(steps=4) if kind == "mld" else make_mdm(steps=4)
    options = dict(method=method, batch_size=BATCH, num_steps=4, max_updates=8, lr=1e-3, warmup_updates=1,
                   val_every=4, val_captions=2, resume_path=resume_path, save_every_updates=1 if resume_path else 0)
    if method == "draft_k":
        options.update(policy={"k": 2}, max_updates=3)
    options.update(overrides)
    config = from_dict(FinetuneConfig, options)
    result = finetune(generator, make_reward(), train, val, text, config, seed=3, device=CPU, progress=False,
                      stop_after_updates=stop_after)
    return {"weights": _weights(result.denoiser), "summary": result.summary, "history": result.history}


def pretrain_run(resume_dir: str | None = None) -> dict:
    """The generic training loop on the MLD latent denoiser (frozen tiny VAE), 5 optimizer steps."""
    train, val, text = make_splits(10, seed=4)
    vae = make_mld().vae
    config = from_dict(PretrainConfig, {
        "data": {"batch_size": BATCH, "max_frames": 12, "unit": 4, "val_batches": 1},
        "latent_denoiser": {"model": {"preset": "tiny", "text_dim": 8, "latent_dim": 8, "dropout": 0.0},
                            "train": {"max_steps": 5, "warmup_steps": 1, "val_every": 5, "lr": 1e-3,
                                      "resume_every": 1, "keep_resume": True}},
        "resume_dir": resume_dir})
    gen, result = train_denoiser("mld", train, val, text, config, CPU, seed=5, vae=vae)
    return {"weights": _weights(gen.denoiser), "history": result.history, "val_loss": result.val_loss}


def reward_run() -> dict:
    """The retrieval-model loop (noise-aware, contrastive over the global batch), 4 steps."""
    train, _, text = make_splits(10, seed=5)
    model = make_reward().model.requires_grad_(True)  # Reward() freezes it
    config = RetrievalTrainingConfig(steps=4, batch_size=BATCH, lr=1e-3, warmup_steps=1, max_frames=12, noise_t_max=100,
                                     eval_every=100, log_every=1, seed=9)
    model, history = train_retrieval_model(model, train, text, config, CPU)
    return {"weights": _weights(model), "history": history}


class _CountWrites:
    """Counts the resumable-checkpoint writes of both training loops in this process."""

    def __init__(self):
        import easytune.core.finetune.trainer as trainer
        import easytune.core.pretrain.loop as training

        self.modules = (trainer, training)
        self.original = training.atomic_torch_save
        self.paths: list[str] = []

    def __enter__(self):
        def counted(obj, path):
            self.paths.append(str(path))
            return self.original(obj, path)

        for module in self.modules:
            module.atomic_torch_save = counted
        return self

    def __exit__(self, *exc):
        for module in self.modules:
            module.atomic_torch_save = self.original


def scenarios(device: torch.device, folder: str) -> dict:
    """Every data-parallel scenario of the tests, run once by each rank (rank 0's dict comes back; per-rank figures
    are gathered into it)."""
    torch.set_num_threads(1)
    folder = Path(folder)
    out = {"context": distributed.context()}
    with _CountWrites() as writes:
        out["easytune"] = finetune_run("easytune_step", "mld")
        out["draft_k"] = finetune_run("draft_k", "mdm")
        out["pretrain"] = pretrain_run(resume_dir=str(folder / "pretrain_resume"))
        out["reward"] = reward_run()
        # resume: an interrupted run continued by a second call equals the uninterrupted one
        out["uninterrupted"] = finetune_run(resume_path=str(folder / "full.pt"))
        out["interrupted"] = finetune_run(resume_path=str(folder / "part.pt"), stop_after=4)
        if distributed.is_main():
            shutil.copy(folder / "part.pt", folder / "part_at_4.pt")  # for a later resume with one process
        out["resumed"] = finetune_run(resume_path=str(folder / "part.pt"))
    out["writes_per_rank"] = distributed.gather_objects(writes.paths)
    out["bf16_on_cpu"] = finetune_run(bf16=True)
    return out
