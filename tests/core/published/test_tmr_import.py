"""TMR: per-submodule weight files, statistics, refusals, the score."""

import math

import pytest
import torch

from easytune.core.models.released_tmr import ReleasedTMR, ReleasedTMRConfig, interleaved_sinusoids
from easytune.core.published.containers import PublishedAssetError
from easytune.core.published.tmr import import_tmr, tmr_score
from tests.core.published.released_keys import random_state, tmr

TINY = {"nfeats": 263, "text": 20, "d": 16, "ff": 32, "layers": 2}


class NotPlainData:
    """A class instance in a weights file: unpickling it could run code."""


def _save(tmp_path, states=None, mean=None, std=None):
    """TMR's layout: <run_dir>/last_weights/<submodule>.pt and <stats_dir>/{mean,std}.pt."""
    run_dir, stats_dir = tmp_path / "tmr_humanml3d_guoh3dfeats", tmp_path / "stats" / "humanml3d" / "guoh3dfeats"
    (run_dir / "last_weights").mkdir(parents=True, exist_ok=True)
    stats_dir.mkdir(parents=True, exist_ok=True)
    if states is None:
        states = {k: random_state(v, seed=i) for i, (k, v) in enumerate(tmr(**TINY).items())}
    for name, state in states.items():
        torch.save(state, run_dir / "last_weights" / f"{name}.pt")
    g = torch.Generator().manual_seed(5)
    torch.save(torch.randn(263, generator=g) if mean is None else mean, stats_dir / "mean.pt")
    torch.save(torch.rand(263, generator=g) + 0.5 if std is None else std, stats_dir / "std.pt")
    return run_dir, stats_dir


def _inputs():
    g = torch.Generator().manual_seed(2)
    motion, lengths = torch.randn(2, 9, 263, generator=g) * 3 + 1, torch.tensor([9, 6])
    tokens, mask = torch.randn(2, 5, 20, generator=g), torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    return motion, lengths, tokens, mask


def test_paper_sizes_have_the_released_keys_and_no_positional_table():
    model = ReleasedTMR(ReleasedTMRConfig())
    for name, shapes in tmr().items():
        assert {k: tuple(v.shape) for k, v in getattr(model, name).state_dict().items()} == shapes, name
    assert len(tmr()["motion_encoder"]) == 6 * 12 + 3


def test_positional_table_interleaves_sin_and_cos():
    """TMR actor.py:18-24: pe[p, 2i] = sin(p / 1e4^(2i/d)), pe[p, 2i+1] = cos(p / 1e4^(2i/d))."""
    pe = interleaved_sinusoids(50, 8)
    p, i = 37, 3
    assert math.isclose(pe[p, 2 * i].item(), math.sin(p / 10000 ** (2 * i / 8)), abs_tol=1e-5)
    assert math.isclose(pe[p, 2 * i + 1].item(), math.cos(p / 10000 ** (2 * i / 8)), abs_tol=1e-5)


def test_released_files_load_and_score(tmp_path):
    run_dir, stats_dir = _save(tmp_path)
    imported = import_tmr(run_dir, stats_dir, num_heads=2)
    assert imported.has_decoder and not imported.model.training
    saved = torch.load(run_dir / "last_weights" / "text_encoder.pt")
    assert torch.equal(imported.model.text_encoder.tokens, saved["tokens"])

    motion, lengths, tokens, mask = _inputs()
    score = tmr_score(imported, motion, lengths, tokens, mask)
    assert score.shape == (2,) and torch.all(score.abs() <= 1 + 1e-6)
    mean, std = torch.load(stats_dir / "mean.pt"), torch.load(stats_dir / "std.pt")
    mu_m = imported.model.encode_motion((motion - mean) / (std + 1e-12), lengths)[0]  # TMR src/data/motion.py:59
    mu_t = imported.model.encode_text(tokens, mask)[0]
    assert torch.allclose(score, torch.nn.functional.cosine_similarity(mu_t, mu_m, dim=-1), atol=1e-6)
    assert not torch.allclose(imported.model.encode_motion(motion, lengths)[0], mu_m)  # raw input != normalised

    changed_m, changed_t = motion.clone(), tokens.clone()
    changed_m[1, 6:], changed_t[1, 3:] = 50.0, 50.0
    assert torch.allclose(tmr_score(imported, changed_m, lengths, changed_t, mask), score, atol=1e-5)
    motion.requires_grad_(True)
    tmr_score(imported, motion, lengths, tokens, mask).sum().backward()
    assert motion.grad[0].abs().sum() > 0 and torch.all(motion.grad[1, 6:] == 0)

    z = torch.randn(2, 16)
    out = imported.model.motion_decoder(z, torch.arange(9)[None] < lengths[:, None])
    assert out.shape == (2, 9, 263) and torch.all(out[1, 6:] == 0)


def test_the_decoder_is_optional_and_the_encoders_are_not(tmp_path):
    run_dir, stats_dir = _save(tmp_path)
    (run_dir / "last_weights" / "motion_decoder.pt").unlink()
    assert not import_tmr(run_dir, stats_dir, num_heads=2).has_decoder
    (run_dir / "last_weights" / "text_encoder.pt").unlink()
    with pytest.raises(PublishedAssetError, match=r"last_weights/text_encoder\.pt: no such file"):
        import_tmr(run_dir, stats_dir, num_heads=2)


def test_refusals_name_the_file_and_the_key(tmp_path):
    states = {k: random_state(v) for k, v in tmr(**TINY).items()}
    states["text_encoder"]["seqTransEncoder.layers.1.norm_2.weight"] = states["text_encoder"].pop(
        "seqTransEncoder.layers.1.norm2.weight")
    run_dir, stats_dir = _save(tmp_path, states)
    with pytest.raises(PublishedAssetError, match=r"text_encoder\.pt: weights do not match ActorStyleEncoder: missing "
                                                  r"key\(s\) seqTransEncoder\.layers\.1\.norm2\.weight"):
        import_tmr(run_dir, stats_dir, num_heads=2)

    states = {k: random_state(v) for k, v in tmr(**TINY).items()}
    states["motion_decoder"]["final_layer.weight"] = torch.zeros(251, 16)
    run_dir, stats_dir = _save(tmp_path, states)
    with pytest.raises(PublishedAssetError, match=r"motion_decoder\.pt.*final_layer\.weight has shape \[251, 16\]"):
        import_tmr(run_dir, stats_dir, num_heads=2)

    run_dir, stats_dir = _save(tmp_path, mean=torch.zeros(251))
    with pytest.raises(PublishedAssetError, match=r"mean\.pt: holds \[251\]; expected a tensor of shape \[263\]"):
        import_tmr(run_dir, stats_dir, num_heads=2)

    run_dir, stats_dir = _save(tmp_path)
    torch.save({"tokens": torch.zeros(2, 16), "hparams": NotPlainData()}, run_dir / "last_weights" / "text_encoder.pt")
    with pytest.raises(PublishedAssetError, match=r"text_encoder\.pt: holds a pickled object \(.*NotPlainData\)"):
        import_tmr(run_dir, stats_dir, num_heads=2)
