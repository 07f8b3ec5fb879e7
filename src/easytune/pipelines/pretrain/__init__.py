"""``pretrain``: train the base generators (motion VAE -> MLD latent denoiser; MDM frame denoiser), evaluate the
VAE's reconstruction, generate sample motions with skeleton GIFs, and write ``pretrain_report``."""

from easytune.pipelines.pretrain.pipeline import create_pipeline

__all__ = ["create_pipeline"]
