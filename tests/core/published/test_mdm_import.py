"""Released MDM checkpoints (model*.pt + args.json): key/shape map, containers, refusals, forward."""

import json

import pytest
import torch

from easytune.core.models.released_mdm import ReleasedMDM, ReleasedMDMConfig
from easytune.core.published.containers import PublishedAssetError
from easytune.core.published.mdm import import_mdm
from tests.core.published.released_keys import mdm, mdm_args, random_state

TINY = {"d": 16, "ff": 32, "layers": 2}


class NotPlainData:
    pass


def _save(tmp_path, blob, **args):
    torch.save(blob, tmp_path / "model000475000.pt")
    (tmp_path / "args.json").write_text(json.dumps(mdm_args(latent_dim=16, layers=2, **args)))
    return tmp_path / "model000475000.pt"


def _tiny():
    return random_state(mdm(**TINY))


def test_paper_sizes_have_the_published_keys_and_parameter_count():
    """PUBLISHED_ASSETS.md: 17.88M parameters excluding the positional tables."""
    model = ReleasedMDM(ReleasedMDMConfig())
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == mdm(pe=False)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == 17.88


@pytest.mark.parametrize("container", ["plain", "model_avg"])
def test_an_mdm_checkpoint_loads_and_predicts_x0(tmp_path, container):
    state = _tiny()
    blob = state if container == "plain" else {"model": random_state(mdm(**TINY), seed=1), "model_avg": state}
    imported = import_mdm(_save(tmp_path, blob))
    model = imported.model
    assert imported.noise_schedule == "cosine" and imported.sigma_small
    assert torch.equal(model.embed_text.weight, state["embed_text.weight"])
    x, t, text = torch.randn(2, 10, 263), torch.tensor([999, 3]), torch.randn(2, 512)
    out = model(x, t, text)
    assert out.shape == (2, 10, 263) and torch.isfinite(out).all()
    # classifier-free guidance's unconditional branch: the text feature is replaced by zeros
    dropped = model(x, t, text, drop_text=torch.tensor([True, False]))
    assert torch.allclose(dropped[0], model(x, t, torch.zeros_like(text))[0], atol=1e-5)
    assert torch.allclose(dropped[1], out[1], atol=1e-5) and not torch.allclose(dropped[0], out[0])


def test_positional_table_is_the_released_sinusoid():
    """MDM PositionalEncoding: channel 2i = sin(p * 10000^(-2i/d)), channel 2i+1 = cos(...)."""
    pe = ReleasedMDM(ReleasedMDMConfig(latent_dim=8, num_layers=1, ff_size=8, num_heads=2, max_len=50)).pe
    p, i = 7, 2
    f = 10000.0 ** (-2 * i / 8)
    assert torch.allclose(pe[p, 2 * i], torch.tensor(p * f).sin()) and torch.allclose(pe[p, 2 * i + 1],
                                                                                      torch.tensor(p * f).cos())


def test_mdm_refusals_name_the_file_and_key(tmp_path):
    state = _tiny()
    state["embed_text.weight"] = torch.zeros(16, 768)
    with pytest.raises(PublishedAssetError, match=r"model000475000\.pt.*key embed_text\.weight has shape \[16, 768\]"):
        import_mdm(_save(tmp_path, state))
    state = _tiny()
    state["clip_model.token_embedding.weight"] = torch.zeros(3, 3)
    with pytest.raises(PublishedAssetError, match=r"unexpected key\(s\) clip_model\.token_embedding\.weight"):
        import_mdm(_save(tmp_path, state))
    state = _tiny()
    state["input_process.pose_embedding.weight"] = state.pop("input_process.poseEmbedding.weight")
    with pytest.raises(PublishedAssetError, match=r"missing key\(s\) input_process\.poseEmbedding\.weight"):
        import_mdm(_save(tmp_path, state))
    with pytest.raises(PublishedAssetError, match=r"holds a pickled object \(.*NotPlainData\)"):
        import_mdm(_save(tmp_path, {**_tiny(), "note": NotPlainData()}))
    with pytest.raises(PublishedAssetError, match=r"args\.json: arch 'trans_dec'"):
        import_mdm(_save(tmp_path, _tiny(), arch="trans_dec"))
    (tmp_path / "args.json").unlink()
    with pytest.raises(PublishedAssetError, match=r"args\.json: no such file"):
        import_mdm(tmp_path / "model000475000.pt")
