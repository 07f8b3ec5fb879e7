import pytest
import torch

from easytune.core.finetune.analysis import chain_jacobian_norms, noisy_clean_similarity
from tests.core.finetune.tiny import make_mdm, make_mld, make_reward, make_text

LENGTHS = torch.tensor([12, 8])


@pytest.mark.parametrize("make", [make_mdm, make_mld])
def test_chain_norm_of_the_last_step_is_its_one_step_norm(make):
    gen = make(steps=6)
    before = [p.requires_grad for p in gen.denoiser.parameters()]
    out = chain_jacobian_norms(gen, make_text(2), LENGTHS, seed=0)
    assert len(out["step"]) == len(out["chain"]) == 6
    assert out["chain"][-1] == pytest.approx(out["step"][-1], rel=1e-5)
    assert all(v > 0 for v in out["chain"])
    assert [p.requires_grad for p in gen.denoiser.parameters()] == before


def test_chain_norm_matches_a_finite_difference_through_the_sampler():
    gen = make_mld(steps=4, guidance=1.0)
    text = make_text(2)
    out = chain_jacobian_norms(gen, text, LENGTHS, seed=0)
    # || J^T u || >= |u . J v| / ||v|| for any v: check a directional derivative against the chain product bound
    g = torch.Generator().manual_seed(0)
    x_T, mask = gen.initial_noise(LENGTHS, g)
    v = torch.randn(x_T.shape, generator=torch.Generator().manual_seed(9)).double()

    def final(x):
        x = x.float()
        for t in gen.diffusion.timesteps(4).tolist():
            o = gen.denoise(x, t, text, mask)
            x, _ = gen.diffusion.step(o, t, x, num_steps=4)
        return x

    u = torch.randn(x_T.shape, generator=torch.Generator().manual_seed(1))
    eps = 1e-2
    with torch.no_grad():
        dd = (final(x_T + eps * v.float()) - final(x_T - eps * v.float())) / (2 * eps)
    lower = float((u * dd).sum().abs() / v.float().norm() / u.norm())
    assert out["chain"][0] >= lower * 0.95


def test_similarity_to_the_clean_motion_reaches_one_at_the_last_step():
    gen, reward, text = make_mld(steps=6), make_reward(), make_text(2)
    embed = lambda feats, lengths: reward.model.encode_motion(feats, lengths, None)[0]  # noqa: E731
    out = noisy_clean_similarity(gen, text, LENGTHS, seed=0, embed=embed)
    assert set(out) == {"noisy_state", "x0_hat_features", "x0_hat_embedding"}
    assert out["x0_hat_features"][-1] == pytest.approx(1.0, abs=1e-5)
    assert out["x0_hat_embedding"][-1] == pytest.approx(1.0, abs=1e-5)
    assert out["noisy_state"][-1] > out["noisy_state"][0]
