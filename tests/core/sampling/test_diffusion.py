"""Diffusion schedule and reverse steps: golden formulas, determinism, differentiability."""

import pytest
import torch
from diffusers import DDPMScheduler

from easytune.core.sampling.diffusion import MDM_DIFFUSION, MLD_DIFFUSION, Diffusion, DiffusionConfig


def test_timesteps_descending_and_strided():
    d = Diffusion(MLD_DIFFUSION)
    ts = d.timesteps()
    assert ts.dtype == torch.int64 and len(ts) == 50
    assert ts[0] == 980 and ts[-1] == 0 and torch.all(ts[:-1] > ts[1:])
    assert len(d.timesteps(10)) == 10 and len(d.timesteps()) == 50  # two step counts do not interfere


def test_schedules_match_published_betas():
    abar = Diffusion(MLD_DIFFUSION).alphas_cumprod
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    torch.testing.assert_close(abar, torch.cumprod(1 - betas, 0).float(), rtol=1e-5, atol=1e-6)
    cos = Diffusion(MDM_DIFFUSION).alphas_cumprod
    assert cos[0] > 0.999 and cos[-1] < 1e-3 and torch.all(cos[:-1] > cos[1:])


def test_add_noise_matches_diffusers_and_formula():
    d = Diffusion(MLD_DIFFUSION)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 3, 5, generator=g), torch.randn(4, 3, 5, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    ref = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).add_noise(x0, noise, t)
    torch.testing.assert_close(d.add_noise(x0, noise, t), ref)
    abar = d.alphas_cumprod[500]
    torch.testing.assert_close(d.add_noise(x0, noise, t)[2], abar.sqrt() * x0[2] + (1 - abar).sqrt() * noise[2])
    assert d.training_target(x0, noise) is noise
    assert Diffusion(MDM_DIFFUSION).training_target(x0, noise) is x0


def test_step_x0_hat_is_the_one_step_prediction_and_ddim_golden():
    d = Diffusion(MLD_DIFFUSION)
    g = torch.Generator().manual_seed(1)
    x_t, eps = torch.randn(2, 1, 8, generator=g), torch.randn(2, 1, 8, generator=g)
    t, t_prev = 500, 480
    abar, abar_prev = d.alphas_cumprod[t], d.alphas_cumprod[t_prev]
    out = d.step(eps, t, x_t)
    x0_hat = (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()  # EasyTune Eq. 12
    torch.testing.assert_close(out.pred_original_sample, x0_hat)
    torch.testing.assert_close(out.prev_sample, abar_prev.sqrt() * x0_hat + (1 - abar_prev).sqrt() * eps)
    sample_pred = Diffusion(MDM_DIFFUSION).step(eps, t, x_t)
    torch.testing.assert_close(sample_pred.pred_original_sample, eps)  # x0 prediction passes through


def test_ddim_eta0_deterministic_and_ddpm_stochastic():
    x_t, out = torch.randn(2, 4), torch.randn(2, 4)
    d = Diffusion(MLD_DIFFUSION)
    a = d.step(out, 500, x_t, generator=torch.Generator().manual_seed(1)).prev_sample
    b = d.step(out, 500, x_t, generator=torch.Generator().manual_seed(2)).prev_sample
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    ddpm = Diffusion(DiffusionConfig(sampler="ddpm"))
    a = ddpm.step(out, 500, x_t, generator=torch.Generator().manual_seed(1)).prev_sample
    a2 = ddpm.step(out, 500, x_t, generator=torch.Generator().manual_seed(1)).prev_sample
    b = ddpm.step(out, 500, x_t, generator=torch.Generator().manual_seed(2)).prev_sample
    torch.testing.assert_close(a, a2, rtol=0, atol=0)
    assert not torch.allclose(a, b)


def test_step_is_differentiable_with_analytic_jacobian():
    d = Diffusion(MLD_DIFFUSION)
    eps = torch.randn(3, 2, requires_grad=True)
    x_t = torch.randn(3, 2, requires_grad=True)
    d.step(eps, 500, x_t).prev_sample.sum().backward()
    abar, abar_prev = d.alphas_cumprod[500].double(), d.alphas_cumprod[480].double()
    d_eps = (1 - abar_prev).sqrt() - abar_prev.sqrt() * (1 - abar).sqrt() / abar.sqrt()
    torch.testing.assert_close(eps.grad, torch.full_like(eps, float(d_eps)), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(x_t.grad, torch.full_like(x_t, float((abar_prev / abar).sqrt())), rtol=1e-4, atol=0)


def test_ddim_with_oracle_noise_recovers_x0():
    """A model that returns the true noise makes 50-step DDIM (eta 0) land exactly on x0."""
    d = Diffusion(MLD_DIFFUSION)
    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(2, 5, generator=g, dtype=torch.float64), torch.randn(2, 5, generator=g, dtype=torch.float64)
    ts = d.timesteps()
    x = d.add_noise(x0, eps, torch.full((2,), int(ts[0])))
    for t in ts.tolist():
        x = d.step(eps, t, x).prev_sample
    torch.testing.assert_close(x, x0, rtol=1e-5, atol=1e-5)


def test_bad_config_raises():
    with pytest.raises(ValueError, match="num_inference_steps"):
        DiffusionConfig(num_inference_steps=0)
    with pytest.raises(ValueError, match="eta"):
        DiffusionConfig(sampler="ddpm", eta=0.5)
