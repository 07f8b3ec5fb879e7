"""Generator networks: preset sizes, masks, checkpoint round trips."""

import pytest
import torch

from easytune.core.data.text import TextBatch
from easytune.core.infra.checkpoint import build_from_checkpoint, make_checkpoint
from easytune.core.infra.config import ConfigError, from_dict
from easytune.core.infra.runtime import count_parameters
from easytune.core.models.frame_denoiser import FrameDenoiser, FrameDenoiserConfig
from easytune.core.models.latent_denoiser import LatentDenoiser, LatentDenoiserConfig
from easytune.core.models.vae import MotionVAE, MotionVAEConfig


def test_paper_preset_matches_published_parameter_counts():
    """METHOD.md section 6: VAE ~18 M, MLD denoiser ~8 M, MDM ~18 M (within 10%), no training."""
    counts = {
        "motion_vae": count_parameters(MotionVAE(MotionVAEConfig(preset="paper"))),
        "latent_denoiser": count_parameters(LatentDenoiser(LatentDenoiserConfig(preset="paper", latent_dim=256))),
        "frame_denoiser": count_parameters(FrameDenoiser(FrameDenoiserConfig(preset="paper"))),
    }
    for name, published in {"motion_vae": 18e6, "latent_denoiser": 8e6, "frame_denoiser": 18e6}.items():
        assert abs(counts[name] - published) / published < 0.10, (name, counts[name])


def test_checkpoint_of_an_older_vae_layout_is_refused_with_a_hint():
    """The previous VAE had learned distribution tokens and no latent positions: loading must fail clearly."""
    from easytune.core.infra.checkpoint import CheckpointError

    vae = MotionVAE(MotionVAEConfig(preset="tiny", feature_dim=6))
    ckpt = make_checkpoint("motion_vae", vae, {})
    state = dict(ckpt["state_dict"])
    state.pop("latent_positions")
    state["dist_tokens"] = torch.zeros(2, 32)
    with pytest.raises(CheckpointError, match=r"(?s)motion_vae: weights do not match.*older version.*dist_tokens"):
        build_from_checkpoint({**ckpt, "state_dict": state}, "cpu", source="motion_vae")


def test_presets_and_overrides():
    cfg = from_dict(MotionVAEConfig, {"preset": "tiny", "d_model": 48, "latent_dim": 8})
    assert cfg.d_model == 48 and cfg.latent_dim == 8 and cfg.encoder_layers == 1
    assert FrameDenoiserConfig().num_layers == 4  # default preset: cpu
    with pytest.raises(ValueError, match="unknown preset"):
        MotionVAEConfig(preset="huge")
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(LatentDenoiserConfig, {"layers": 3})


def test_vae_shapes_and_padding_invariance():
    torch.manual_seed(0)
    vae = MotionVAE(MotionVAEConfig(preset="tiny", feature_dim=10, latent_tokens=2)).eval()
    x = torch.randn(2, 12, 10)
    mask = torch.arange(12)[None] < torch.tensor([[12], [7]])
    mu, logvar = vae.encode(x, mask)
    assert mu.shape == logvar.shape == (2, 2, 32)
    x2 = x.clone()
    x2[1, 7:] = 100.0
    torch.testing.assert_close(vae.encode(x2, mask)[0], mu)
    rec = vae.decode(mu, mask)
    assert rec.shape == (2, 12, 10) and rec[1, 7:].abs().max() == 0
    # decoding a shorter clip gives the same valid frames (the decoder attends only to valid frames)
    torch.testing.assert_close(vae.decode(mu[1:], mask[1:, :7]), rec[1:, :7], rtol=1e-5, atol=1e-5)
    losses = vae.loss(x, mask, torch.Generator().manual_seed(0))
    assert losses.total.item() == pytest.approx(losses.reconstruction.item() + 1e-4 * losses.kl.item(), rel=1e-6)


def test_vae_latent_tokens_cover_equal_segments_of_the_valid_length():
    vae = MotionVAE(MotionVAEConfig(preset="tiny", feature_dim=6, latent_tokens=2))
    mask = torch.arange(9)[None] < torch.tensor([[7], [9], [1]])
    seg = vae.segments(mask)  # floor(t * n / L), clamped to n - 1 on padded frames
    assert seg[0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    assert seg[1].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert seg[2].tolist() == [0, 1, 1, 1, 1, 1, 1, 1, 1]
    # a clip shorter than n tokens: the empty token's posterior is input-independent (bias only)
    x = torch.randn(2, 1, 6)
    mu, _ = vae.encode(x, torch.ones(2, 1, dtype=torch.bool))
    torch.testing.assert_close(mu[0, 1], mu[1, 1])
    assert not torch.allclose(mu[0, 0], mu[1, 0])


def _flat_joints(features: torch.Tensor) -> torch.Tensor:
    """(B, T, 6) -> two joints (B, T, 2, 3): a stand-in for recover_from_ric."""
    return features.reshape(*features.shape[:-1], 2, 3)


def test_vae_position_term_is_the_masked_mpjpe_of_the_reconstruction():
    torch.manual_seed(0)
    vae = MotionVAE(MotionVAEConfig(preset="tiny", feature_dim=6, latent_tokens=2, position_weight=0.5))
    x = torch.randn(2, 8, 6)
    mask = torch.arange(8)[None] < torch.tensor([[8], [5]])
    with pytest.raises(ValueError, match="joints_fn"):
        vae.loss(x, mask)
    losses = vae.loss(x, mask, torch.Generator().manual_seed(3), joints_fn=_flat_joints)
    x_hat, _, _ = vae(x, mask, torch.Generator().manual_seed(3))
    per_frame = (_flat_joints(x_hat) - _flat_joints(x)).norm(dim=-1).mean(-1)  # (B, T)
    expected = per_frame[mask].mean()
    torch.testing.assert_close(losses.position, expected)
    torch.testing.assert_close(losses.total, losses.reconstruction + 1e-4 * losses.kl + 0.5 * expected)
    # padded frames never change the term
    x2 = x.clone()
    x2[1, 5:] = 50.0
    torch.testing.assert_close(vae.loss(x2, mask, torch.Generator().manual_seed(3), _flat_joints).position,
                               losses.position)
    losses.position.backward()
    assert vae.output_proj.weight.grad.abs().sum() > 0


def _text(batch: int, tokens: int = 5, dim: int = 384, seed: int = 0) -> TextBatch:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([tokens, tokens - 2][:batch] + [tokens] * max(0, batch - 2))
    toks = torch.randn(batch, tokens, dim, generator=g) * (torch.arange(tokens)[None, :, None] < lengths[:, None, None])
    return TextBatch(torch.randn(batch, dim, generator=g), toks, lengths, torch.arange(batch))


@pytest.mark.parametrize("text_tokens", [False, True])
def test_frame_denoiser_ignores_padded_frames(text_tokens):
    torch.manual_seed(0)
    den = FrameDenoiser(FrameDenoiserConfig(preset="tiny", feature_dim=10, text_tokens=text_tokens)).eval()
    x = torch.randn(2, 12, 10)
    mask = torch.arange(12)[None] < torch.tensor([[12], [5]])
    t, text = torch.tensor([3, 700]), _text(2)
    out = den(x, t, text, mask)
    x2 = x.clone()
    x2[1, 5:] = -50.0
    torch.testing.assert_close(den(x2, t, text, mask), out)
    assert out[1, 5:].abs().max() == 0


@pytest.mark.parametrize("make,frames", [
    (lambda: LatentDenoiser(LatentDenoiserConfig(preset="tiny", latent_tokens=2, latent_dim=8, text_tokens=True)), 2),
    (lambda: FrameDenoiser(FrameDenoiserConfig(preset="tiny", feature_dim=8, text_tokens=True)), 6),
])
def test_token_conditioning_sees_each_word_ignores_padding_and_drops_with_the_caption(make, frames):
    """With text_tokens the denoiser reads the caption's token states: one changed word changes the output at an
    unchanged sentence embedding; tokens past token_lengths change nothing; a dropped caption (CFG's unconditional
    branch) depends on no token."""
    torch.manual_seed(0)
    den = make().eval()
    x, t, text = torch.randn(2, frames, 8), torch.tensor([3, 700]), _text(2, dim=384)
    out = den(x, t, text)
    word = TextBatch(text.sentence, text.tokens.clone(), text.token_lengths, text.rows)
    word.tokens[:, 1] += 1.0  # one word of each caption (token 1 is valid in both)
    assert (den(x, t, word) - out).abs().amax(dim=tuple(range(1, out.ndim))).min() > 1e-4
    padded = TextBatch(text.sentence, text.tokens.clone(), text.token_lengths, text.rows)
    padded.tokens[1, 3:] = 7.0  # caption 1 has 3 tokens: everything after is padding
    torch.testing.assert_close(den(x, t, padded), out)
    drop = torch.ones(2, dtype=torch.bool)
    torch.testing.assert_close(den(x, t, word, drop_text=drop), den(x, t, text, drop_text=drop))


@pytest.mark.parametrize("kind,model", [
    ("motion_vae", lambda: MotionVAE(MotionVAEConfig(preset="tiny"))),
    ("latent_denoiser", lambda: LatentDenoiser(LatentDenoiserConfig(preset="tiny", latent_dim=32))),
    ("frame_denoiser", lambda: FrameDenoiser(FrameDenoiserConfig(preset="tiny"))),
])
def test_checkpoint_round_trip(kind, model):
    torch.manual_seed(0)
    m = model()
    rebuilt = build_from_checkpoint(make_checkpoint(kind, m), "cpu")
    assert type(rebuilt) is type(m) and rebuilt.config == m.config
    for (k, a), (_, b) in zip(m.state_dict().items(), rebuilt.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
