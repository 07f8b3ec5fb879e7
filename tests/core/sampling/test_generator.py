"""MotionGenerator: one sampling API for MLD and MDM (determinism, grad path == no-grad path, masks, CFG)."""

import pytest
import torch

from easytune.core.data.text import TextBatch
from easytune.core.infra.checkpoint import make_checkpoint
from easytune.core.models.frame_denoiser import FrameDenoiser, FrameDenoiserConfig
from easytune.core.models.latent_denoiser import LatentDenoiser, LatentDenoiserConfig
from easytune.core.models.vae import MotionVAE, MotionVAEConfig
from easytune.core.sampling.diffusion import MDM_DIFFUSION, MLD_DIFFUSION, Diffusion
from easytune.core.sampling.generator import MotionGenerator

D, T = 12, 16


def make_generator(kind: str, seed: int = 0) -> MotionGenerator:
    torch.manual_seed(seed)
    if kind == "mld":
        vae = MotionVAE(MotionVAEConfig(preset="tiny", feature_dim=D))
        den = LatentDenoiser(LatentDenoiserConfig(preset="tiny", latent_dim=32))
        return MotionGenerator(den, Diffusion(MLD_DIFFUSION), "mld", vae=vae, max_length=T, feature_dim=D).eval()
    den = FrameDenoiser(FrameDenoiserConfig(preset="tiny", feature_dim=D))
    return MotionGenerator(den, Diffusion(MDM_DIFFUSION), "mdm", max_length=T, feature_dim=D).eval()


def make_text(b: int = 3, seed: int = 0) -> TextBatch:
    g = torch.Generator().manual_seed(seed)
    return TextBatch(torch.randn(b, 384, generator=g), torch.zeros(b, 1, 384), torch.ones(b, dtype=torch.long),
                     torch.arange(b))


LENGTHS = torch.tensor([8, 16, 5])


@pytest.mark.parametrize("kind", ["mld", "mdm"])
def test_generate_deterministic_for_a_seed_and_zero_beyond_lengths(kind):
    gen, text = make_generator(kind), make_text()
    a = gen.generate(text, LENGTHS, generator=torch.Generator().manual_seed(7), num_steps=8)
    b = gen.generate(text, LENGTHS, generator=torch.Generator().manual_seed(7), num_steps=8)
    c = gen.generate(text, LENGTHS, generator=torch.Generator().manual_seed(8), num_steps=8)
    assert a.shape == (3, 16, D)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    assert a[0, 8:].abs().max() == 0 and a[2, 5:].abs().max() == 0 and a[2, :5].abs().max() > 0


@pytest.mark.parametrize("kind", ["mld", "mdm"])
def test_grad_path_equals_no_grad_path_and_x0_hat_is_scheduler_prediction(kind):
    gen, text = make_generator(kind), make_text()
    fast = gen.generate(text, LENGTHS, generator=torch.Generator().manual_seed(3), num_steps=6)
    abar = gen.diffusion.alphas_cumprod
    with torch.enable_grad():
        steps = list(gen.sample_steps(text, LENGTHS, generator=torch.Generator().manual_seed(3), num_steps=6))
    assert [s.index for s in steps] == list(range(6))
    for s in steps:
        assert s.x_prev.requires_grad  # graph to the parameters
        if kind == "mld":  # epsilon prediction: x0_hat = (x_t - sqrt(1-abar) eps) / sqrt(abar)
            a = abar[s.timestep]
            expected = (s.x_t - (1 - a).sqrt() * s.model_output) / a.sqrt()
        else:  # x0 prediction
            expected = s.model_output * s.mask[..., None]
        torch.testing.assert_close(s.x0_hat, expected, rtol=1e-5, atol=1e-5)
    slow = gen.decode(steps[-1].x_prev, steps[-1].mask)
    torch.testing.assert_close(slow.detach(), fast, rtol=1e-5, atol=1e-5)


def test_steps_run_in_the_callers_grad_mode():
    gen, text = make_generator("mdm"), make_text()
    x_T, _ = gen.initial_noise(LENGTHS, torch.Generator().manual_seed(0))
    x_T.requires_grad_(True)
    with torch.enable_grad():  # the chain is kept: the last output reaches x_T
        steps = list(gen.sample_steps(text, LENGTHS, num_steps=4, x_T=x_T))
    (grad_xT,) = torch.autograd.grad(steps[-1].x0_hat.sum(), x_T)
    assert grad_xT.abs().sum() > 0
    # the mode may change between steps: only the steps asked for under grad carry a graph
    it = gen.sample_steps(text, LENGTHS, num_steps=4, x_T=x_T.detach())
    graphs = []
    for i in range(4):
        with torch.set_grad_enabled(i >= 2):
            graphs.append(next(it).x_prev.requires_grad)
    assert graphs == [False, False, True, True]
    with torch.no_grad():
        for s in gen.sample_steps(text, LENGTHS, num_steps=2):
            assert not s.x_prev.requires_grad


def test_classifier_free_guidance_combines_cond_and_uncond():
    gen, text = make_generator("mld"), make_text()
    x_t = torch.randn(3, 1, 32)
    t = torch.tensor([100, 200, 300])
    cond = gen.denoiser(x_t, t, text, None, torch.zeros(3, dtype=torch.bool))
    uncond = gen.denoiser(x_t, t, text, None, torch.ones(3, dtype=torch.bool))
    torch.testing.assert_close(gen.denoise(x_t, t, text, None, 1.0), cond)
    torch.testing.assert_close(gen.denoise(x_t, t, text, None, 4.0), uncond + 4.0 * (cond - uncond),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["mld", "mdm"])
def test_padded_frames_never_change_the_training_loss(kind):
    gen, text = make_generator(kind), make_text()
    gen.train()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, T, D, generator=g)
    mask = torch.arange(T)[None] < LENGTHS[:, None]
    garbage = x.clone()
    garbage[~mask] = 1e3 * torch.randn(int((~mask).sum()), D, generator=g)
    loss_a = gen.training_loss(x, mask, text, generator=torch.Generator().manual_seed(5))
    loss_b = gen.training_loss(garbage, mask, text, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-6, atol=1e-6)
    loss_a.backward()
    assert all(p.grad is None for p in gen.vae.parameters()) if kind == "mld" else True


@pytest.mark.parametrize("kind", ["mld", "mdm"])
def test_from_checkpoints_rebuilds_the_same_sampler(kind):
    gen, text = make_generator(kind), make_text()
    den_kind = "latent_denoiser" if kind == "mld" else "frame_denoiser"
    den_ckpt = make_checkpoint(den_kind, gen.denoiser, gen.checkpoint_metadata())
    vae_ckpt = make_checkpoint("motion_vae", gen.vae) if kind == "mld" else None
    rebuilt = MotionGenerator.from_checkpoints(den_ckpt, vae_ckpt, "cpu")
    assert rebuilt.kind == kind and rebuilt.guidance_scale == gen.guidance_scale
    a = gen.generate(text, LENGTHS, generator=torch.Generator().manual_seed(1), num_steps=3)
    b = rebuilt.generate(text, LENGTHS, generator=torch.Generator().manual_seed(1), num_steps=3)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="generator"):
        MotionGenerator.from_checkpoints({**den_ckpt, "metadata": {}}, vae_ckpt)
