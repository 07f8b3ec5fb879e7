"""The consistency sampler: boundary condition, diffusers' LCM schedule and step, 1/2/4-step sampling through the one
sampling API (shapes, determinism, one denoiser pass per step, grad path == no-grad path)."""

import pytest
import torch

from easytune.core.infra.checkpoint import build_from_checkpoint, make_checkpoint
from easytune.core.models.layers import guidance_embedding
from easytune.core.sampling.consistency import (
    ConsistencyDiffusion,
    ConsistencySamplerConfig,
    boundary_scalings,
)
from easytune.core.sampling.diffusion import MDM_DIFFUSION, MLD_DIFFUSION, Diffusion
from easytune.core.sampling.generator import MotionGenerator
from tests.core.finetune.tiny import MAX_LEN, make_mlcm, make_mld, make_text

LENGTHS = torch.tensor([8, 12, 5])


def test_boundary_condition_returns_the_input_at_the_smallest_timestep():
    gen = make_mlcm()
    x = torch.randn(3, 1, 8, generator=torch.Generator().manual_seed(0))
    eps = gen.denoise(x, 0, make_text(), None)  # the student's real output at t = 0
    assert eps.abs().max() > 0.1
    torch.testing.assert_close(gen.diffusion.consistency_output(eps, 0, x), x, rtol=0, atol=0)
    c_skip, c_out = boundary_scalings(torch.tensor([0, 1, 99, 999]))
    assert c_skip[0] == 1 and c_out[0] == 0
    # LCM's values: r = 10, sigma_data = 0.5 -> c_skip(1) = 0.25 / 100.25; at the grid's points f is ~ x0
    torch.testing.assert_close(c_skip[1], torch.tensor(0.25 / 100.25))
    assert c_skip[2] < 3e-7 and abs(float(c_out[3]) - 1) < 2e-8
    assert (c_skip[1:] <= c_skip[:-1]).all() and (c_out[1:] >= c_out[:-1]).all()


def test_timesteps_and_grid_are_the_lcm_schedule_on_the_teacher_betas():
    sampler = ConsistencyDiffusion(ConsistencySamplerConfig.from_teacher(MLD_DIFFUSION))
    assert sampler.grid().tolist() == [99, 199, 299, 399, 499, 599, 699, 799, 899, 999] and sampler.skip == 100
    assert sampler.timesteps(1).tolist() == [999]
    assert sampler.timesteps(2).tolist() == [999, 499]
    assert sampler.timesteps(4).tolist() == [999, 799, 499, 299]
    torch.testing.assert_close(sampler.alphas_cumprod, Diffusion(MLD_DIFFUSION).alphas_cumprod)
    torch.testing.assert_close(sampler.scheduler(4).alphas_cumprod.float(), sampler.alphas_cumprod)
    with pytest.raises(ValueError, match="1..10 steps"):
        sampler.timesteps(50)
    with pytest.raises(ValueError, match="epsilon"):
        ConsistencySamplerConfig.from_teacher(MDM_DIFFUSION)


@pytest.mark.parametrize("n", [1, 2, 4])
def test_step_equals_diffusers_lcm_scheduler_over_a_whole_chain(n):
    """Our stateless step against LCMScheduler.step (its own step counter, the same CPU noise generator)."""
    sampler = ConsistencyDiffusion(ConsistencySamplerConfig.from_teacher(MLD_DIFFUSION))
    reference = sampler.scheduler(n)
    g_data = torch.Generator().manual_seed(1)
    x_ours = x_ref = torch.randn(2, 3, 4, generator=g_data)
    g_ours, g_ref = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for t in sampler.timesteps(n).tolist():
        eps = 0.5 * x_ours + torch.randn(2, 3, 4, generator=g_data)  # any model output
        prev, x0 = sampler.step(eps, t, x_ours, generator=g_ours, num_steps=n)
        out = reference.step(eps, t, x_ref, generator=g_ref, return_dict=True)
        torch.testing.assert_close(prev, out.prev_sample, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(x0, out.denoised, rtol=1e-5, atol=1e-6)
        x_ours, x_ref = prev, out.prev_sample
    with pytest.raises(ValueError, match="not in the"):
        sampler.step(eps, 500, x_ours, num_steps=n)


@pytest.mark.parametrize("n", [1, 2, 4])
def test_generate_with_1_2_4_steps_shapes_determinism_and_one_pass_per_step(n):
    gen, text = make_mlcm(), make_text()
    calls = []
    handle = gen.denoiser.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    a = gen.generate(text, LENGTHS, generator=torch.Generator().manual_seed(7), num_steps=n)
    handle.remove()
    b = gen.generate(text, LENGTHS, generator=torch.Generator().manual_seed(7), num_steps=n)
    c = gen.generate(text, LENGTHS, generator=torch.Generator().manual_seed(8), num_steps=n)
    assert a.shape == (3, MAX_LEN, 6)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    assert a[0, 8:].abs().max() == 0 and a[2, 5:].abs().max() == 0 and a[2, :5].abs().max() > 0
    assert calls == [3] * n  # guidance folded in: one batch-sized pass per step (the MLD teacher needs 2)
    assert gen.denoiser_passes() == 1 and make_mld().denoiser_passes() == 2


def test_sample_steps_grad_path_equals_fast_path_and_x0_hat_is_the_consistency_function():
    gen, text = make_mlcm(), make_text()
    fast = gen.generate(text, LENGTHS, generator=torch.Generator().manual_seed(3), num_steps=4)
    with torch.enable_grad():
        steps = list(gen.sample_steps(text, LENGTHS, generator=torch.Generator().manual_seed(3), num_steps=4))
    assert [s.timestep for s in steps] == [999, 799, 499, 299]
    for s in steps:
        assert s.x_prev.requires_grad and s.x0_hat.requires_grad
        torch.testing.assert_close(s.x0_hat, gen.diffusion.consistency_output(s.model_output, s.timestep, s.x_t))
    torch.testing.assert_close(steps[-1].x_prev, steps[-1].x0_hat)  # the last step returns f itself
    torch.testing.assert_close(gen.decode(steps[-1].x_prev, steps[-1].mask).detach(), fast, rtol=1e-5, atol=1e-5)
    (g,) = torch.autograd.grad(steps[1].x0_hat.sum(), gen.denoiser.latent_out.weight)
    assert g.abs().sum() > 0


def test_guidance_scale_changes_the_student_output_and_its_embedding_is_lcm_w():
    gen, text = make_mlcm(), make_text()
    x = torch.randn(3, 1, 8, generator=torch.Generator().manual_seed(0))
    low, high = gen.denoise(x, 999, text, None, guidance_scale=3.0), gen.denoise(x, 999, text, None)
    assert (low - high).abs().max() > 1e-4
    emb = guidance_embedding(torch.tensor([1.0, 7.5]), 16)
    torch.testing.assert_close(emb[0], torch.cat([torch.ones(8), torch.zeros(8)]))  # w = 0
    assert emb.shape == (2, 16)


def test_checkpoint_round_trip_rebuilds_the_consistency_sampler():
    gen = make_mlcm(steps=2)
    ckpt = make_checkpoint("latent_consistency_denoiser", gen.denoiser, gen.checkpoint_metadata())
    vae = make_checkpoint("motion_vae", gen.vae)
    rebuilt = MotionGenerator.from_checkpoints(ckpt, vae)
    assert rebuilt.kind == "mlcm" and isinstance(rebuilt.diffusion, ConsistencyDiffusion)
    assert rebuilt.diffusion.timesteps().tolist() == [999, 499]
    text = make_text()
    torch.testing.assert_close(rebuilt.generate(text, LENGTHS, generator=torch.Generator().manual_seed(0)),
                               gen.generate(text, LENGTHS, generator=torch.Generator().manual_seed(0)))
    assert type(build_from_checkpoint(ckpt)).__name__ == "LatentConsistencyDenoiser"
    with pytest.raises(ValueError, match="needs the motion_vae"):
        MotionGenerator.from_checkpoints(ckpt, None)
    with pytest.raises(ValueError, match="ConsistencyDiffusion"):
        MotionGenerator(gen.denoiser, Diffusion(MLD_DIFFUSION), "mlcm", vae=gen.vae)
    with pytest.raises(ValueError, match="consistency distillation"):
        gen.training_loss(torch.zeros(1, MAX_LEN, 6), torch.ones(1, MAX_LEN, dtype=torch.bool), text.index([0]))
