"""A training process that a test kills with SIGKILL at random points (``python -m tests.integration.resume_worker``).

``finetune OUT RESUME``: EasyTune on the tiny MDM with a resumable checkpoint after every trajectory;
``pretrain OUT RESUME``: the generic training loop (:func:`easytune.core.pretrain.loop.train`) on a tiny VAE with a
resumable checkpoint every step. Both write the final weights to OUT (``torch.save`` of the state dict) and print
``started`` once training has begun.
"""

from __future__ import annotations

import sys

import torch


def finetune_run(out: str, resume: str | None) -> None:
    from easytune.core.finetune.config import FinetuneConfig
    from easytune.core.finetune.trainer import finetune
    from easytune.core.infra.config import from_dict
    from tests.core.finetune.tiny import make_mdm, make_reward, make_splits

    torch.set_num_threads(1)
    train, val, text = make_splits()
    config = from_dict(FinetuneConfig, dict(batch_size=3, max_updates=200, lr=1e-3, num_steps=4, val_every=100,
                                            val_captions=2, resume_path=resume, save_every_updates=1))
    print("started", flush=True)
    result = finetune(make_mdm(steps=4), make_reward(), train, val, text, config, seed=3, device=torch.device("cpu"),
                      progress=False)
    torch.save(result.denoiser.state_dict(), out)


def pretrain_run(out: str, resume: str | None) -> None:
    from easytune.core.infra.runtime import seed_everything
    from easytune.core.models.vae import MotionVAE, MotionVAEConfig
    from easytune.core.pretrain.loop import TrainConfig, train

    torch.set_num_threads(1)
    seed_everything(5)
    vae = MotionVAE(MotionVAEConfig(preset="tiny", feature_dim=6, d_model=16, ff_dim=32, latent_dim=8))
    data = torch.randn(10, 4, 12, 6, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(4, 12, dtype=torch.bool)

    def batches(epoch: int):
        order = torch.randperm(10, generator=torch.Generator().manual_seed(epoch))
        return (data[i] for i in order)

    config = TrainConfig(max_steps=250, lr=1e-3, warmup_steps=5, val_every=100, resume_every=1, keep_resume=True)
    print("started", flush=True)
    train(vae, lambda x: vae.loss(x, mask).total, batches, config, resume_path=resume, resume_tag=["kill-test"])
    torch.save(vae.state_dict(), out)


if __name__ == "__main__":
    kind, out, resume = sys.argv[1], sys.argv[2], (sys.argv[3] if len(sys.argv) > 3 else None)
    {"finetune": finetune_run, "pretrain": pretrain_run}[kind](out, resume)
