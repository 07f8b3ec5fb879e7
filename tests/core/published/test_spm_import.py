"""EasyTune's released SPM reward: key/shape map, shared LayerNorm, container, refusals, reward."""

import pytest
import torch

from easytune.core.models.released_spm import ReleasedSPM, ReleasedSPMConfig
from easytune.core.published.containers import PublishedAssetError
from easytune.core.published.spm import import_spm
from tests.core.published.released_keys import random_state, shared_spm_norm, spm

TINY = {"d": 16, "ff": 32, "layers": 3, "text": 24}


class NotPlainData:
    """A class instance in a checkpoint: unpickling it could run code."""


def _save(tmp_path, state, **extra):
    path = tmp_path / "TFS_SPM_M0T0_E40.pth"
    torch.save({"state_dict": state, **extra}, path)  # ET train_spm.py:209
    return path


def _tiny_state():
    return shared_spm_norm(random_state(spm(**TINY)))


def _inputs(b=3):
    g = torch.Generator().manual_seed(1)
    motion, lengths = torch.randn(b, 10, 263, generator=g), torch.tensor([10, 7, 4][:b])
    tokens, mask = torch.randn(b, 6, 24, generator=g), torch.arange(6)[None] < torch.tensor([6, 3, 5][:b])[:, None]
    return motion, lengths, tokens, mask


def test_paper_sizes_have_the_published_keys_shapes_and_parameter_count():
    """PUBLISHED_ASSETS.md: 427 tensors, 26.5M parameters; one LayerNorm object ends both encoders."""
    model = ReleasedSPM(ReleasedSPMConfig())
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == spm() and len(got) == 427
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 26.5
    assert model.text_encoder.norm is model.motion_encoder.norm


def test_a_released_spm_checkpoint_loads_and_rewards(tmp_path):
    state = _tiny_state()
    state["clip.0.auto_model.shared.weight"] = torch.zeros(3, 4)  # sentence-t5 inside the SPM: dropped
    imported = import_spm(_save(tmp_path, state), num_heads=2)
    model = imported.model
    assert imported.dropped_keys == ["clip.0.auto_model.shared.weight"] and not model.training
    assert torch.equal(model.text_embedding.weight, state["text_embedding.weight"])
    assert model.config.text_dim == 24 and model.config.latent_size == 1

    motion, lengths, tokens, mask = _inputs()
    reward = model.reward(motion, lengths, tokens, mask)
    assert reward.shape == (3,) and torch.all(reward.abs() <= 1 + 1e-6)
    mu_t, _ = model.encode_text(tokens, mask)
    mu_m, _ = model.encode_motion(motion, lengths)
    assert torch.allclose(reward, torch.nn.functional.cosine_similarity(mu_t[:, 0], mu_m[:, 0], dim=-1), atol=1e-6)
    assert torch.equal(model.reward(motion, lengths, tokens, mask), reward)  # latent means: deterministic
    assert model.reward(motion[:1], lengths[:1], tokens[:1], mask[:1]).shape == (1,)  # no squeeze to a scalar

    changed_m, changed_t = motion.clone(), tokens.clone()
    changed_m[1, 7:], changed_t[1, 3:] = 100.0, 100.0  # padding frames and padding tokens
    assert torch.allclose(model.reward(changed_m, lengths, changed_t, mask), reward, atol=1e-5)

    motion.requires_grad_(True)
    model.reward(motion, lengths, tokens, mask).sum().backward()
    assert motion.grad[0].abs().sum() > 0 and torch.all(motion.grad[1, 7:] == 0)


def test_sampled_latents_are_the_release_rsample(tmp_path):
    model = import_spm(_save(tmp_path, _tiny_state()), num_heads=2).model
    motion, lengths, tokens, mask = _inputs()
    sampled = model.reward(motion, lengths, tokens, mask, sample=True, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    (mu_t, lv_t), (mu_m, lv_m) = model.encode_text(tokens, mask), model.encode_motion(motion, lengths)
    z_t = mu_t + torch.exp(lv_t / 2) * torch.randn(mu_t.shape, generator=g)  # Normal(mu, logvar.exp() ** .5)
    z_m = mu_m + torch.exp(lv_m / 2) * torch.randn(mu_m.shape, generator=g)
    assert torch.allclose(sampled, torch.nn.functional.cosine_similarity(z_t[:, 0], z_m[:, 0], dim=-1), atol=1e-5)
    assert not torch.allclose(sampled, model.reward(motion, lengths, tokens, mask))


def test_the_final_layer_norm_is_shared_and_the_time_token_is_optional(tmp_path):
    model = import_spm(_save(tmp_path, _tiny_state()), num_heads=2).model
    motion, lengths, tokens, mask = _inputs()
    before = model.encode_text(tokens, mask)[0]
    with torch.no_grad():
        model.motion_encoder.norm.weight.mul_(2.0)
    assert not torch.allclose(model.encode_text(tokens, mask)[0], before)
    assert not torch.allclose(model.encode_motion(motion, lengths, timestep=torch.tensor(500))[0],
                              model.encode_motion(motion, lengths)[0])


def test_unequal_shared_norm_copies_are_named(tmp_path):
    state = _tiny_state()
    state["text_encoder.norm.bias"] = state["text_encoder.norm.bias"] + 1.0
    with pytest.raises(PublishedAssetError, match=r"TFS_SPM_M0T0_E40\.pth: key motion_encoder\.norm\.bias differs "
                                                  r"from text_encoder\.norm\.bias"):
        import_spm(_save(tmp_path, state), num_heads=2)


def test_a_renamed_key_a_wrong_shape_and_a_pickled_object_are_refused(tmp_path):
    state = _tiny_state()
    state["dist_text.weight"] = state.pop("dist_text_layer.weight")
    with pytest.raises(PublishedAssetError, match=r"missing key\(s\) dist_text_layer\.weight; unexpected key\(s\) "
                                                  r"dist_text\.weight"):
        import_spm(_save(tmp_path, state), num_heads=2)
    state = _tiny_state()
    state["skel_embedding.weight"], state["final_layer.weight"] = torch.zeros(16, 251), torch.zeros(263, 16)
    with pytest.raises(PublishedAssetError, match=r"key final_layer\.weight has shape \[263, 16\].*needs \[251, 16\]"):
        import_spm(_save(tmp_path, state), num_heads=2)
    with pytest.raises(PublishedAssetError, match=r"holds a pickled object \(.*NotPlainData\)"):
        import_spm(_save(tmp_path, _tiny_state(), cfg=NotPlainData()), num_heads=2)
    torch.save(_tiny_state(), tmp_path / "bare.pth")
    with pytest.raises(PublishedAssetError, match=r"bare\.pth: not a Lightning checkpoint \(no 'state_dict'"):
        import_spm(tmp_path / "bare.pth", num_heads=2)
