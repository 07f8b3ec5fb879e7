"""Released MLD / MotionLCM checkpoints: key/shape map, container, refusals, forward."""

import pytest
import torch

from easytune.core.models.released_mld import (
    PostNormDecoderLayer,
    PostNormEncoderLayer,
    ReleasedMLDDenoiser,
    ReleasedMLDDenoiserConfig,
    ReleasedMLDVAE,
    ReleasedMLDVAEConfig,
    lcm_guidance_embedding,
)
from easytune.core.published.containers import PublishedAssetError
from easytune.core.published.mld import import_mld
from tests.core.published.released_keys import lightning_checkpoint, mld_denoiser, mld_vae, random_state

TINY = {"d": 16, "ff": 32, "layers": 3}


class NotPlainData:
    """A class instance in a checkpoint: unpickling it could run code."""


def _save(tmp_path, state, **extra):
    path = tmp_path / "model.ckpt"
    torch.save({**lightning_checkpoint(state), **extra}, path)
    return path


def _tiny_state(mem_pos=True, lcm=False):
    return random_state(mld_vae(**TINY) | mld_denoiser(**TINY, mem_pos=mem_pos, lcm=lcm))


def test_paper_sizes_have_the_published_keys_shapes_and_parameter_counts():
    """PUBLISHED_ASSETS.md: VAE 297 tensors / 18.03M parameters, MLD denoiser 126 tensors / 8.35M."""
    vae = ReleasedMLDVAE(ReleasedMLDVAEConfig())
    den = ReleasedMLDDenoiser(ReleasedMLDDenoiserConfig(mem_pos=True))
    got_vae = {f"vae.{k}": tuple(v.shape) for k, v in vae.state_dict().items()}
    got_den = {f"denoiser.{k}": tuple(v.shape) for k, v in den.state_dict().items()}
    assert got_vae == mld_vae() and len(got_vae) == 297
    assert got_den == mld_denoiser() and len(got_den) == 126
    assert round(sum(p.numel() for p in vae.parameters()) / 1e6, 2) == 18.03
    assert round(sum(p.numel() for p in den.parameters()) / 1e6, 2) == 8.35


def test_post_norm_layers_compute_what_torch_post_norm_layers_compute():
    """The released DETR layers without positional arguments are torch's post-norm layers (same key names)."""
    torch.manual_seed(0)
    ours, ref = PostNormEncoderLayer(16, 2, 32, 0.0).eval(), torch.nn.TransformerEncoderLayer(
        16, 2, 32, 0.0, activation="gelu", batch_first=True).eval()
    ref.load_state_dict(ours.state_dict())
    x, pad = torch.randn(3, 5, 16), torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] * 4 + [True]])
    valid = ~pad[..., None]
    assert torch.allclose(ours(x, pad) * valid, ref(x, src_key_padding_mask=pad) * valid, atol=1e-5)
    dec, dref = PostNormDecoderLayer(16, 2, 32, 0.0).eval(), torch.nn.TransformerDecoderLayer(
        16, 2, 32, 0.0, activation="gelu", batch_first=True).eval()
    dref.load_state_dict(dec.state_dict())
    memory = torch.randn(3, 1, 16)
    assert torch.allclose(dec(x, memory, pad) * valid, dref(x, memory, tgt_key_padding_mask=pad) * valid, atol=1e-5)


@pytest.mark.parametrize(("mem_pos", "text_encoder"), [(True, "clip"), (False, "t5")])
def test_a_lightning_mld_checkpoint_loads_and_runs(tmp_path, mem_pos, text_encoder):
    state = _tiny_state(mem_pos=mem_pos)
    state["t2m_textencoder.input_emb.weight"] = torch.zeros(512, 300)  # MLD's evaluator copy: dropped
    model = import_mld(_save(tmp_path, state), text_encoder=text_encoder, num_heads=2)
    assert model.dropped_keys == ["t2m_textencoder.input_emb.weight"] and not model.consistency
    assert torch.equal(model.vae.final_layer.weight, state["vae.final_layer.weight"])
    assert torch.equal(model.denoiser.query_pos.pe, state["denoiser.query_pos.pe"])

    feats, lengths = torch.randn(2, 12, 263), torch.tensor([12, 8])
    mu, logvar = model.vae.encode(feats, lengths)
    assert mu.shape == logvar.shape == (2, 1, 16)
    changed = feats.clone()
    changed[1, 8:] = 100.0  # padding of the second motion
    assert torch.allclose(model.vae.encode(changed, lengths)[0], mu, atol=1e-5)
    out = model.vae.decode(mu, lengths)
    assert out.shape == (2, 12, 263) and torch.all(out[1, 8:] == 0) and out[1, :8].abs().sum() > 0

    text = torch.randn(2, 1, 768)
    eps = model.denoiser(mu, torch.tensor([981, 1]), text)
    assert eps.shape == (2, 1, 16) and torch.isfinite(eps).all()
    assert not torch.allclose(model.denoiser(mu, torch.tensor([981, 1]), -text), eps)


def test_motionlcm_checkpoint_has_the_guidance_scale_embedding(tmp_path):
    model = import_mld(_save(tmp_path, _tiny_state(mem_pos=False, lcm=True)), text_encoder="t5", num_heads=2)
    assert model.consistency and model.denoiser.config.time_cond_dim == 256
    z, t, text = torch.randn(2, 1, 16), torch.tensor([999, 499]), torch.randn(2, 1, 768)
    w = lcm_guidance_embedding(torch.tensor([8.0, 8.0]), 256)
    assert not torch.allclose(model.denoiser(z, t, text, w), model.denoiser(z, t, text))


def test_lcm_guidance_embedding_formula():
    """w = s - 1 scaled by 1000; [sin, cos] with frequencies exp(-ln(1e4) i / (half - 1)) (LCM utils)."""
    emb = lcm_guidance_embedding(torch.tensor([1.0, 2.0]), 8)
    assert torch.equal(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    freqs = 10000.0 ** (-torch.arange(4) / 3.0)
    assert torch.allclose(emb[1], torch.cat([torch.sin(1000.0 * freqs), torch.cos(1000.0 * freqs)]), atol=1e-4)


def test_a_renamed_key_is_named(tmp_path):
    state = _tiny_state()
    state["vae.decoder.output_blocks.0.norm_3.weight"] = state.pop("vae.decoder.output_blocks.0.norm3.weight")
    with pytest.raises(PublishedAssetError, match=r"model\.ckpt.*missing key\(s\) vae\.decoder\.output_blocks\.0\."
                                                  r"norm3\.weight; unexpected key\(s\) vae\.decoder\.output_blocks"
                                                  r"\.0\.norm_3\.weight"):
        import_mld(_save(tmp_path, state), text_encoder="clip", num_heads=2)


def test_a_wrong_shape_is_named(tmp_path):
    state = _tiny_state()
    state["denoiser.emb_proj.1.weight"] = torch.zeros(16, 512)  # a 512-d text encoder
    with pytest.raises(PublishedAssetError, match=r"model\.ckpt.*key denoiser\.emb_proj\.1\.weight has shape "
                                                  r"\[16, 512\].*needs \[16, 768\]"):
        import_mld(_save(tmp_path, state), text_encoder="clip", num_heads=2)


def test_a_key_outside_the_model_is_named(tmp_path):
    state = _tiny_state()
    state["ema.denoiser.query_pos.pe"] = torch.zeros(1)
    with pytest.raises(PublishedAssetError, match=r"unexpected key\(s\) outside.*ema\.denoiser\.query_pos\.pe"):
        import_mld(_save(tmp_path, state), text_encoder="clip", num_heads=2)


def test_a_pickled_object_is_refused_unconstructed(tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr(NotPlainData, "__setstate__", lambda self, s: built.append(s), raising=False)
    path = _save(tmp_path, _tiny_state(), hyper_parameters={"cfg": NotPlainData()})
    with pytest.raises(PublishedAssetError, match=r"model\.ckpt: holds a pickled object \(.*NotPlainData\) outside "
                                                  r"the allow-list"):
        import_mld(path, text_encoder="clip", num_heads=2)
    assert built == []
    with pytest.raises(PublishedAssetError, match=r"nothing\.ckpt: no such file"):
        import_mld(tmp_path / "nothing.ckpt", text_encoder="clip")


def test_denoiser_token_layout_is_latent_time_text():
    """MLD mld_denoiser.py: xseq = [sample, time_emb, emb_proj(text)] + query_pos; output = the first n tokens.
    Time: 768-d sinusoid, cos half first, frequencies exp(-ln(1e4) i / 384) (flip_sin_to_cos, shift 0)."""
    torch.manual_seed(0)
    den = ReleasedMLDDenoiser(ReleasedMLDDenoiserConfig(latent_size=2, latent_dim=16, ff_size=32, num_layers=3,
                                                        num_heads=2)).eval()
    z, t, text = torch.randn(2, 2, 16), torch.tensor([981, 1]), torch.randn(2, 1, 768)
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(384) / 384)
    sinus = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], dim=1)
    te = den.time_embedding
    time = te.linear_2(torch.nn.functional.silu(te.linear_1(sinus)))
    tokens = torch.cat([z, time[:, None], den.emb_proj(text)], dim=1) + den.query_pos.pe[:4, 0]
    expected = den.encoder(tokens)[:, :2]
    assert torch.allclose(den(z, t, text), expected, atol=1e-5)
