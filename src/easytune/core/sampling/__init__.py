"""Samplers over the denoisers: DDIM/DDPM diffusion, consistency sampling, and the generator that binds a denoiser, its sampler and (for latent models) the motion VAE."""
