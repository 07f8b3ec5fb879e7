"""Trainer: chain optimisation, resume, LoRA merge, KL term, early stopping, checkpoint allow-list."""

import dataclasses
import logging
import re

import numpy as np
import pytest
import torch

from easytune.core.checkpoint import CheckpointError, build_from_checkpoint, make_checkpoint
from easytune.core.config import from_dict
from easytune.core.finetune import load_checkpoint_model, load_generator
from easytune.core.finetune.trainer import FinetuneConfig, finetune
from tests.core.finetune.tiny import make_mdm, make_mld, make_reward, make_splits

CPU = torch.device("cpu")


def config(**kw):
    base = dict(batch_size=3, max_updates=8, lr=1e-2, grad_clip=1.0, num_steps=4)
    base.update(kw)
    return from_dict(FinetuneConfig, base)


def state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_easytune_step_raises_its_train_reward_on_a_tiny_model():
    train, val, text = make_splits()
    gen = make_mdm(steps=4)
    res = finetune(gen, make_reward(), train, val, text, config(max_updates=40, val_every=20, val_captions=2),
                   seed=0, device=CPU, progress=False)
    s = res.summary
    assert s["updates"] == 40 and s["trajectories"] == 10
    assert s["best_val"] > s["initial_val"]
    assert {"train_reward", "loss", "lr", "s_per_update", "peak_saved_bytes", "val_reward"} <= set(res.history)
    assert res.history["train_reward"][0]["step"] == 1 and len(res.history["train_reward"]) == 40
    assert s["peak_saved_bytes"] > 0 and s["peak_cuda_bytes"] is None


def test_chain_trajectory_runs_on_frozen_parameters_and_swaps_at_the_end():
    train, val, text = make_splits()
    inputs = {}

    def run(method, tag):
        gen = make_mdm(steps=4)
        seen = inputs.setdefault(tag, [])
        gen.denoiser.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
        before = state(gen.denoiser)
        res = finetune(gen, make_reward(), train, None, text, config(method=method, max_updates=4), seed=0,
                       device=CPU, progress=False)
        return before, res

    before, chain = run("easytune_chain", "chain")
    _, step = run("easytune_step", "step")
    _, frozen = run("easytune_step", "frozen_reference")  # recorded again below with lr 0
    gen0 = make_mdm(steps=4)
    ref_inputs = []
    gen0.denoiser.register_forward_pre_hook(lambda mod, args: ref_inputs.append(args[0].detach().clone()))
    frozen = dataclasses.replace(config(max_updates=4), lr=0.0)  # lr 0 (not a valid parameter): no update
    finetune(gen0, make_reward(), train, None, text, frozen, seed=0, device=CPU,
             progress=False)
    assert len(inputs["chain"]) == len(ref_inputs) == 4
    for a, b in zip(inputs["chain"], ref_inputs):  # the whole trajectory ran on the initial weights
        torch.testing.assert_close(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(inputs["step"], ref_inputs))  # step variant moves
    after = state(chain.denoiser)
    assert any(not torch.equal(after[k], before[k]) for k in before)  # the policy copy was updated


def test_resume_after_interruption_reaches_the_uninterrupted_parameters(tmp_path):
    train, val, text = make_splits()
    cfg = config(max_updates=12, val_every=4, val_captions=2, resume_path=str(tmp_path / "resume.pt"),
                 save_every_updates=4, warmup_updates=3)
    whole = finetune(make_mdm(steps=4), make_reward(), train, val, text,
                     config(**{**cfg.__dict__, "resume_path": None, "lora": {}}), seed=0, device=CPU, progress=False)
    first = finetune(make_mdm(steps=4), make_reward(), train, val, text, cfg, seed=0, device=CPU,
                     stop_after_updates=5, progress=False)
    assert first.summary["interrupted"] and first.summary["updates"] == 8  # stops at a trajectory boundary
    resumed = finetune(make_mdm(steps=4), make_reward(), train, val, text, cfg, seed=0, device=CPU, progress=False)
    assert resumed.summary["updates"] == 12
    a, b = state(whole.denoiser), state(resumed.denoiser)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert [r["value"] for r in whole.history["train_reward"]] == [r["value"] for r in resumed.history["train_reward"]]


@pytest.mark.parametrize("change", ["seed", "lr", "denoiser", "reward", "val_data"])
def test_a_run_that_differs_in_anything_never_resumes_another(tmp_path, caplog, change):
    """Reliability: a finished run's resume file is never continued by a run with another seed, lr, starting
    checkpoint, reward or data (it used to be: a seed change resumed the first seed's finished state)."""
    train, val, text = make_splits()
    cfg = config(max_updates=8, val_every=4, val_captions=2, resume_path=str(tmp_path / "resume.pt"),
                 save_every_updates=4)
    finetune(make_mdm(steps=4), make_reward(), train, val, text, cfg, seed=0, device=CPU, progress=False)
    with caplog.at_level(logging.INFO):
        finetune(make_mdm(steps=4), make_reward(), train, val, text, cfg, seed=0, device=CPU, progress=False)
    assert "resumed at update 8" in caplog.text  # the same run resumes (at its end: nothing more to do) ...
    caplog.clear()
    gen = make_mdm(steps=4, seed=5 if change == "denoiser" else 0)
    reward = make_reward(seed=9 if change == "reward" else 1)
    run_cfg = config(**{**cfg.__dict__, "lora": {}, "lr": 2e-2 if change == "lr" else cfg.lr})
    run_val = val.subset(np.arange(len(val))[::-1]) if change == "val_data" else val
    with caplog.at_level(logging.WARNING):
        other = finetune(gen, reward, train, run_val, text, run_cfg, seed=999 if change == "seed" else 0,
                         device=CPU, progress=False)
    assert "not resumed" in caplog.text and "resumed at" not in caplog.text  # ... another run starts fresh
    assert other.summary["updates"] == 8 and len(other.history["train_reward"]) == 8
    expected = {"seed": "seed", "lr": "config", "denoiser": "denoiser", "reward": "reward", "val_data": "val_data"}
    differing = re.search(r"written by another run \(([^)]*) differ\)", caplog.text).group(1).split(", ")
    assert expected[change] in differing


def test_lora_trains_adapters_only_and_merges_into_a_plain_denoiser():
    train, val, text = make_splits()
    gen = make_mld(steps=4)
    before = state(gen.denoiser)
    res = finetune(gen, make_reward(), train, None, text,
                   config(max_updates=4, lora={"enabled": True, "rank": 2, "alpha": 4.0}), seed=0, device=CPU,
                   progress=False)
    merged = res.denoiser
    assert set(merged.state_dict()) == set(before)  # no adapter weights left
    assert any(not torch.equal(merged.state_dict()[k], before[k]) for k in before)
    ckpt = make_checkpoint("latent_denoiser", merged)
    rebuilt = build_from_checkpoint(ckpt)
    x, t, s = torch.randn(2, 1, 8), torch.tensor([10, 500]), torch.randn(2, 8)
    torch.testing.assert_close(rebuilt(x, t, s), merged(x, t, s))


def test_kl_term_starts_at_zero_and_is_logged():
    train, _, text = make_splits()
    res = finetune(make_mdm(steps=4), make_reward(), train, None, text, config(max_updates=4, kl_weight=1.0),
                   seed=0, device=CPU, progress=False)
    kl = [r["value"] for r in res.history["kl"]]
    assert kl[0] == pytest.approx(0.0, abs=1e-12) and kl[-1] > 0


def test_early_stopping_restores_the_best_validated_weights():
    train, val, text = make_splits()
    gen = make_mdm(steps=4)
    before = state(gen.denoiser)
    # minimising the reward makes every validation worse than the first: stop after `patience` rounds
    res = finetune(gen, make_reward(), train, val, text,
                   config(max_updates=40, reward_weight=-1.0, val_every=4, val_captions=2, patience=2), seed=0,
                   device=CPU, progress=False)
    assert res.summary["stopped_early"] and res.summary["updates"] == 8
    assert res.summary["best_update"] == 0
    for k, v in state(res.denoiser).items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_fine_tuning_can_never_load_the_evaluator():
    fake = {"kind": "evaluator", "config": {}, "state_dict": {}, "metadata": {}}
    with pytest.raises(CheckpointError, match="may not be loaded"):
        load_checkpoint_model(fake, "cpu", source="x")
    with pytest.raises(CheckpointError, match="may not be loaded"):
        load_generator(fake, None, "cpu")
    gen = make_mdm(steps=4)
    ckpt = make_checkpoint("frame_denoiser", gen.denoiser, gen.checkpoint_metadata())
    rebuilt = load_generator(ckpt, None, "cpu")
    assert rebuilt.kind == "mdm" and rebuilt.diffusion.config.num_inference_steps == 4


def test_wall_clock_budget_stops_between_trajectories(monkeypatch):
    """max_wall_s gives every method the same cost budget: the run stops at the first trajectory boundary past it."""
    import easytune.core.finetune.trainer as trainer_module

    clock = iter(range(0, 10_000, 10))  # every perf_counter() call advances 10 "seconds"
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: float(next(clock)))
    train, val, text = make_splits()
    res = finetune(make_mdm(steps=4), make_reward(), train, None, text,
                   config(max_updates=1000, max_wall_s=25.0), seed=0, device=CPU, progress=False)
    s = res.summary
    assert s["wall_budget_spent"] is True
    assert 0 < s["updates"] < 1000 and s["updates"] % 4 == 0  # whole trajectories of 4 per-step updates
