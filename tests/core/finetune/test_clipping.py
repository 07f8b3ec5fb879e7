"""Issue #23 mechanics: the pre-clip gradient norm and clipping per step index, and per-step weights that survive
clipping (``step_weight_mode: lr``)."""

import pytest
import torch
from tqdm.auto import tqdm

from easytune.core.finetune.rollout import StepTrace
from easytune.core.finetune.trainer import _FinetuneRun, clipping_by_step, finetune
from tests.core.finetune.tiny import finetune_config, make_mdm, make_reward, make_splits

CPU = torch.device("cpu")


def config(**kw):
    return finetune_config(**{'batch_size': 2, **kw})


def _run(cfg):
    train, val, text = make_splits()
    run = _FinetuneRun(make_mdm(steps=4), make_reward(), train, None, text, cfg, seed=0, device=CPU, progress=False,
                       resume_parts=None, on_validation=None, on_snapshot=None)
    run.bar = tqdm(total=cfg.max_updates, disable=True)
    run.accountant.start_window()
    return run


def _loss_of_norm(params, norm: float, seed: int) -> torch.Tensor:
    """A loss whose gradient over ``params`` has exactly the Euclidean norm ``norm`` (a fixed random direction)."""
    g = torch.Generator().manual_seed(seed)
    dirs = [torch.randn(p.shape, generator=g) for p in params]
    total = torch.sqrt(sum((d ** 2).sum() for d in dirs))
    return sum((p * (norm * d / total)).sum() for p, d in zip(params, dirs, strict=True))


def test_preclip_norms_give_the_clipped_flags_and_the_per_step_table():
    run = _run(config(grad_clip=1.0))
    norms, steps = [0.5, 2.0, 3.0, 0.8], [0, 0, 1, 1]
    for k, (norm, step) in enumerate(zip(norms, steps, strict=True)):
        run.update(_loss_of_norm(run.params, norm, seed=k), StepTrace(index=step, timestep=0))
    history = run.history
    assert [r["value"] for r in history["grad_norm_preclip"]] == pytest.approx(norms, rel=1e-4)
    assert [r["value"] for r in history["clipped"]] == [0.0, 1.0, 1.0, 0.0]
    assert [r["value"] for r in history["step_index"]] == steps
    table = clipping_by_step(history)
    assert table == {"0": {"updates": 2, "clipped": 1, "clipped_fraction": 0.5,
                           "mean_grad_norm_preclip": pytest.approx(1.25, rel=1e-4)},
                     "1": {"updates": 2, "clipped": 1, "clipped_fraction": 0.5,
                           "mean_grad_norm_preclip": pytest.approx(1.9, rel=1e-4)}}
    summary = run.result(interrupted=False).summary
    assert summary["clipping_by_step"] == table and summary["clipped_fraction"] == 0.5


def _weights_after(mode: str, weighting: str, grad_clip: float):
    train, _, text = make_splits()
    gen = make_mdm(steps=4)
    cfg = config(step_weight_mode=mode, grad_clip=grad_clip, max_updates=8,
                 policy={"weighting": weighting}, method="easytune_step")
    res = finetune(gen, make_reward(), train, None, text, cfg, seed=0, device=CPU, progress=False)
    return res, torch.cat([p.detach().flatten() for p in res.denoiser.parameters()])


def test_step_weights_change_the_update_under_clipping_only_in_lr_mode():
    # every update clips (clip far below any gradient norm): in loss mode the weights are erased by clipping ...
    res_u, loss_uniform = _weights_after("loss", "uniform", 1e-6)
    res_w, loss_weighted = _weights_after("loss", "linear_increasing", 1e-6)
    assert all(r["value"] == 1.0 for r in res_u.history["clipped"] + res_w.history["clipped"])
    assert torch.allclose(loss_uniform, loss_weighted, atol=1e-6)
    # ... in lr mode they scale each clipped update, so the weighting changes the result
    _, lr_uniform = _weights_after("lr", "uniform", 1e-6)
    res_lr, lr_weighted = _weights_after("lr", "linear_increasing", 1e-6)
    assert torch.allclose(lr_uniform, loss_uniform, atol=1e-6)  # w_t = 1: the two modes agree
    assert (lr_weighted - lr_uniform).abs().max() > 1e-4
    applied = [r["value"] / lr["value"] for r, lr in zip(res_lr.history["lr_applied"], res_lr.history["lr"],
                                                          strict=True)]
    assert applied[:4] == pytest.approx([0.5, 0.75, 1.0, 1.25])  # w_t of steps 0..3 of T = 4
