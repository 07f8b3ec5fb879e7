"""Generic training loop: exact resume after an interruption, config-hash guard, early stopping, LR schedule,
deterministic motion batches."""

import logging

import numpy as np
import pytest
import torch
from torch import nn

from easytune.core.data.dataset import MotionSplit, TextEmbeddings
from easytune.core.infra.runtime import seed_everything
from easytune.core.pretrain.loop import MotionBatches, TrainConfig, train


class Interrupted(RuntimeError):
    pass


def make_problem(seed: int = 0):
    seed_everything(seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.2), nn.ReLU(), nn.Linear(16, 1))
    model.config = None
    xs = torch.randn(6, 8, 4, generator=torch.Generator().manual_seed(99))

    def batches(epoch):
        order = np.random.default_rng([1, epoch]).permutation(6)
        return (xs[i] for i in order[:3])  # 3 batches per epoch

    def loss_fn(x):
        target = x.sum(-1, keepdim=True) + 0.1 * torch.randn(x.shape[0], 1)  # global RNG inside the loss
        return ((model(x) - target) ** 2).mean()

    def val_fn():
        return float(((model(xs[0]) - xs[0].sum(-1, keepdim=True)) ** 2).mean() + 0.0 * torch.randn(1))

    return model, loss_fn, batches, val_fn


CFG = TrainConfig(max_steps=11, lr=1e-2, warmup_steps=2, val_every=3, resume_every=4, patience=0)


def test_interrupted_run_resumes_to_identical_parameters(tmp_path):
    model_a, loss_a, batches_a, val_a = make_problem()
    result_a = train(model_a, loss_a, batches_a, CFG, val_a, tmp_path / "a.pt")
    assert result_a.steps == 11 and result_a.resumed_from == 0 and not (tmp_path / "a.pt").exists()

    model_b, loss_b, batches_b, val_b = make_problem()
    calls = {"n": 0}

    def killed_after_six(x):
        calls["n"] += 1
        if calls["n"] > 6:
            raise Interrupted("simulated kill")
        return loss_b(x)

    with pytest.raises(Interrupted):
        train(model_b, killed_after_six, batches_b, CFG, val_b, tmp_path / "b.pt")
    saved = torch.load(tmp_path / "b.pt", weights_only=True)
    assert saved["state"]["step"] == 4

    model_c, loss_c, batches_c, val_c = make_problem()  # a restarted process: the same seed, fresh weights ...
    torch.manual_seed(12345)  # ... and another global RNG state, which the resume file restores
    result_c = train(model_c, loss_c, batches_c, CFG, val_c, tmp_path / "b.pt")
    assert result_c.resumed_from == 4 and result_c.steps == 11
    for (name, a), (_, c) in zip(model_a.state_dict().items(), model_c.state_dict().items(), strict=True):
        torch.testing.assert_close(a, c, rtol=0, atol=0, msg=name)
    assert [h["train_loss"] for h in result_a.history] == [h["train_loss"] for h in result_c.history]
    assert result_a.val_history == result_c.val_history


def test_different_config_starts_fresh_with_warning(tmp_path, caplog):
    cfg = TrainConfig(max_steps=4, lr=1e-2, warmup_steps=0, resume_every=2, keep_resume=True)
    train(*make_problem()[:3], config=cfg, resume_path=tmp_path / "r.pt")
    assert (tmp_path / "r.pt").exists()
    assert train(*make_problem()[:3], config=cfg, resume_path=tmp_path / "r.pt").resumed_from == 4  # same run
    other = TrainConfig(max_steps=4, lr=5e-3, warmup_steps=0, resume_every=2)
    with caplog.at_level(logging.WARNING):
        result = train(*make_problem()[:3], config=other, resume_path=tmp_path / "r.pt")
    assert result.resumed_from == 0 and "not resumed" in caplog.text and "train differ" in caplog.text
    same = train(*make_problem()[:3], config=cfg, resume_path=tmp_path / "r.pt")  # file rewritten by `other`
    assert same.resumed_from == 0


@pytest.mark.parametrize("change", ["seed", "tag"])
def test_another_seed_or_input_never_resumes(tmp_path, caplog, change):
    """The initial weights (which carry the seed) and the caller's tag (data, frozen inputs) are in the key."""
    cfg = TrainConfig(max_steps=4, lr=1e-2, warmup_steps=0, resume_every=2, keep_resume=True)
    train(*make_problem()[:3], config=cfg, resume_path=tmp_path / "r.pt", resume_tag=["data-a"])
    problem = make_problem(seed=7 if change == "seed" else 0)[:3]
    with caplog.at_level(logging.WARNING):
        result = train(*problem, config=cfg, resume_path=tmp_path / "r.pt",
                       resume_tag=["data-a" if change == "seed" else "data-b"])
    assert result.resumed_from == 0
    assert ("initial_weights differ" if change == "seed" else "tag differ") in caplog.text


def test_early_stopping_restores_best_weights():
    model, loss_fn, batches, _ = make_problem()
    scores = iter([3.0, 1.0, 2.0, 2.5, 0.5, 0.1])
    snapshots = []

    def val_fn():
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scores)

    cfg = TrainConfig(max_steps=100, lr=1e-2, val_every=2, patience=2)
    result = train(model, loss_fn, batches, cfg, val_fn)
    assert result.stopped_early and result.steps == 8 and result.val_loss == 1.0
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, snapshots[1][k], rtol=0, atol=0)
    curves = result.metrics_history("vae_")
    assert [p["step"] for p in curves["vae_val_loss"]] == [2, 4, 6, 8]


def tiny_split(n=5, t=30, d=6, seed=0):
    rng = np.random.default_rng(seed)
    lengths = np.array([30, 7, 12, 25, 2][:n])
    feats = rng.normal(size=(n, t, d)).astype(np.float32)
    feats[np.arange(t)[None] >= lengths[:, None]] = 0
    offsets = np.array([0, 2, 3, 5, 6, 7][: n + 1])
    split = MotionSplit(np.array([f"s{i}" for i in range(n)]), feats, lengths, offsets,
                        np.arange(offsets[-1]) % 4, np.array([""] * n))
    text = TextEmbeddings(np.array(["a", "b", "c", "d"]), rng.normal(size=(4, 8)).astype(np.float32),
                          np.zeros((4, 2, 8), np.float16), np.ones(4, np.int64))
    return split, text


def test_motion_batches_crop_and_determinism():
    split, text = tiny_split()
    mb = MotionBatches(split, text, batch_size=2, max_frames=16, seed=3)
    assert len(mb) == 2
    a, b, c = list(mb(0)), list(mb(0)), list(mb(1))
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x.features, y.features, rtol=0, atol=0)
        assert (x.index == y.index).all()
    assert any((x.index != z.index).any() for x, z in zip(a, c, strict=True))
    for batch in a + c:
        for j, i in enumerate(batch.index):
            n = int(batch.lengths[j])
            full = int(split.lengths[i])
            assert n <= 16 and (n % 4 == 0 or n == full < 4)
            assert batch.features[j, n:].abs().sum() == 0 and batch.mask[j].sum() == n
            # the crop is a contiguous window of the clip
            window = torch.from_numpy(split.features[i, :full]).unfold(0, n, 1).permute(0, 2, 1)
            assert any(torch.equal(w, batch.features[j, :n]) for w in window)
            assert int(batch.text.rows[j]) in split.captions_of(i).tolist()
