"""Trainer: chain optimisation, resume, LoRA merge, KL term, early stopping, checkpoint allow-list."""

import dataclasses
import logging
import re

import numpy as np
import pytest
import torch

from easytune.core.data.dataset import TextEmbeddings
from easytune.core.finetune import load_checkpoint_model, load_generator
from easytune.core.finetune.trainer import finetune
from easytune.core.infra.checkpoint import CheckpointError, build_from_checkpoint, make_checkpoint
from tests.core.finetune.tiny import finetune_config, make_mdm, make_mld, make_reward, make_splits, make_text

CPU = torch.device("cpu")


def config(**kw):
    return finetune_config(**kw)


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

    def record(seen):  # the trajectory's (grad-enabled) denoiser inputs; the cost meter's no-grad FLOP probes aside
        return lambda mod, args: seen.append(args[0].detach().clone()) if torch.is_grad_enabled() else None

    def run(method, tag):
        gen = make_mdm(steps=4)
        seen = inputs.setdefault(tag, [])
        gen.denoiser.register_forward_pre_hook(record(seen))
        before = state(gen.denoiser)
        res = finetune(gen, make_reward(), train, None, text, config(method=method, max_updates=4), seed=0,
                       device=CPU, progress=False)
        return before, res

    before, chain = run("easytune_chain", "chain")
    _, step = run("easytune_step", "step")
    _, frozen = run("easytune_step", "frozen_reference")  # recorded again below with lr 0
    gen0 = make_mdm(steps=4)
    ref_inputs = []
    gen0.denoiser.register_forward_pre_hook(record(ref_inputs))
    frozen = dataclasses.replace(config(max_updates=4), lr=0.0)  # lr 0 (not a valid parameter): no update
    finetune(gen0, make_reward(), train, None, text, frozen, seed=0, device=CPU, progress=False)
    assert len(inputs["chain"]) == len(ref_inputs) == 4
    for a, b in zip(inputs["chain"], ref_inputs, strict=True):  # the whole trajectory ran on the initial weights
        torch.testing.assert_close(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(inputs["step"], ref_inputs, strict=True))  # step variant moves
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
    x, t, s = torch.randn(2, 1, 8), torch.tensor([10, 500]), make_text(2)
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


def _fake_clock(monkeypatch, validation_seconds: float):
    """time.perf_counter advances 1 "second" per call; a validation costs ``validation_seconds`` more."""
    import easytune.core.finetune.trainer as trainer_module

    now = {"t": 0.0}

    def perf_counter() -> float:
        now["t"] += 1.0
        return now["t"]

    def slow_validation(*args, **kwargs) -> float:
        now["t"] += validation_seconds
        return 0.0

    monkeypatch.setattr(trainer_module.time, "perf_counter", perf_counter)
    monkeypatch.setattr(trainer_module, "validation_reward", slow_validation)


@pytest.mark.parametrize("method", ["easytune_step", "draft_k"])
def test_training_seconds_budget_excludes_validation_and_is_checked_per_update(monkeypatch, method):
    """max_train_s counts the update windows only: a run with a slow validation after every trajectory makes
    exactly as many updates as one without validation; the budget stops a run between two updates, inside a
    trajectory for the per-step method."""
    train, val, text = make_splits()
    runs = {}
    for val_every in (0, 1):
        _fake_clock(monkeypatch, validation_seconds=1000.0)
        runs[val_every] = finetune(make_mdm(steps=4), make_reward(), train, val, text,
                                   config(method=method, policy={"k": 2} if method == "draft_k" else {},
                                          max_updates=1000, max_train_s=40.0, val_every=val_every, val_captions=2,
                                          restore_best=False),
                                   seed=0, device=CPU, progress=False).summary
    fast, slow = runs[0], runs[1]
    assert fast["budget_spent"] == slow["budget_spent"] == "train_s"
    assert fast["updates"] == slow["updates"] and 0 < fast["updates"] < 1000
    assert slow["val_s"] >= 1000.0 and fast["val_s"] == 0.0  # validation was slow, and timed apart
    assert slow["wall_s"] > slow["train_s"] + 1000.0


def test_cost_budget_and_snapshots_at_fractions_of_it():
    """max_cost_gflops stops the run after the update that reaches it; snapshot_at hands over the weights at the
    first update past each fraction, with the cost, seconds, updates and samples drawn at that point."""
    train, val, text = make_splits()
    probe = finetune(make_mdm(steps=4), make_reward(), train, None, text, config(max_updates=4, restore_best=False),
                     seed=0, device=CPU, progress=False).summary
    per_update = probe["cost_gflops"] / 4
    budget = 10.5 * per_update
    seen = []
    result = finetune(make_mdm(steps=4), make_reward(), train, None, text,
                      config(max_updates=1000, max_cost_gflops=budget, snapshot_at=[0.25, 0.5, 1.0],
                             restore_best=False),
                      seed=0, device=CPU, progress=False, on_snapshot=lambda rec, sd: seen.append((rec, sd)))
    s = result.summary
    assert s["budget_spent"] == "cost_gflops" and s["cost_gflops"] >= budget
    assert s["updates"] == 11 and s["trajectories"] == 3  # stopped inside the third 4-step trajectory
    assert [rec["at"] for rec, _ in seen] == [0.25, 0.5, 1.0]
    assert [rec["updates"] for rec, _ in seen] == [3, 6, 11]  # first update at or past 2.6, 5.25, 10.5 updates
    for rec, _ in seen:
        assert rec["cost_gflops"] >= rec["at"] * budget - 1e-9
        assert rec["samples_drawn"] == rec["trajectories"] * 3 and rec["train_s"] > 0
    final = result.denoiser.state_dict()
    for k, v in seen[-1][1].items():
        torch.testing.assert_close(v, final[k], rtol=0, atol=0)
    assert any(not torch.equal(seen[0][1][k], final[k]) for k in final)


def test_final_reward_is_the_final_samples_reward_for_every_method():
    """final_reward = held-out reward of final samples (the last validation) for every method; the per-update
    training objective is reported apart."""
    train, val, text = make_splits()
    for method, policy in (("easytune_step", {}), ("refl", {"m": 2}), ("draft_k", {"k": 2})):
        s = finetune(make_mdm(steps=4), make_reward(), train, val, text,
                     config(method=method, policy=policy, max_updates=4, val_every=4, val_captions=2),
                     seed=0, device=CPU, progress=False).summary
        assert s["final_reward"] == s["final_val"] and s["final_reward"] is not None, method
        assert s["train_objective_tail"] is not None


WALL_CLOCK = {"wall_s", "train_s", "val_s", "samples_per_s", "s_per_update"}


def _varying_token_splits():
    """Captions of 1..6 tokens: a batch's token width varies, and with it the reward path's FLOPs per call."""
    train, val, text = make_splits(n=12)
    rng = np.random.default_rng(11)
    text = TextEmbeddings(captions=text.captions, sentence=text.sentence,
                          tokens=rng.normal(size=(len(text), 6, text.sentence.shape[1])).astype(np.float16),
                          token_lengths=rng.integers(1, 7, size=len(text)).astype(np.int64))
    return train, val, text


@pytest.mark.parametrize("budget", [{"max_updates": 12}, {"max_updates": 10**6, "max_cost_gflops": 0.009,
                                                         "snapshot_at": [0.25, 0.5, 0.75, 1.0]}])
def test_a_resumed_run_reports_exactly_what_the_uninterrupted_run_reports(tmp_path, budget):
    """Reliability (#27): the FLOPs measured per call signature are part of the resumable state; a resumed run used
    to re-measure them on its first batch (another token width) and over-count its cost (and, under a cost budget,
    stop and snapshot at other updates)."""
    train, val, text = _varying_token_splits()
    cfg = config(val_every=4, val_captions=2, resume_path=str(tmp_path / "resume.pt"), save_every_updates=2,
                 warmup_updates=2, **budget)
    snaps = {"whole": [], "interrupted": [], "resumed": []}  # a rerun is a new process: it starts a new list

    def run(name, **kw):
        return finetune(make_mld(steps=4), make_reward(), train, val, text, cfg, seed=0, device=CPU, progress=False,
                        on_snapshot=lambda record, _: snaps[name].append(record), **kw)

    whole = finetune(make_mld(steps=4), make_reward(), train, val, text,
                     config(**{**cfg.__dict__, "resume_path": None, "lora": {}}), seed=0, device=CPU, progress=False,
                     on_snapshot=lambda record, _: snaps["whole"].append(record))
    first = run("interrupted", stop_after_updates=3)
    assert first.summary["interrupted"]
    resumed = run("resumed")
    assert resumed.summary["resumed_from"] == first.summary["updates"] > 0
    differ = {k: (v, resumed.summary[k]) for k, v in whole.summary.items()
              if k not in WALL_CLOCK | {"resumed_from", "curves"} and resumed.summary[k] != v}
    assert differ == {}
    assert len(snaps["resumed"]) == len(snaps["whole"]) == len(cfg.snapshot_at)  # handed out again on resume
    strip = [{k: v for k, v in r.items() if k != "train_s"} for r in snaps["whole"]]
    assert strip == [{k: v for k, v in r.items() if k != "train_s"} for r in snaps["resumed"]]
    for k, v in state(whole.denoiser).items():
        torch.testing.assert_close(v, state(resumed.denoiser)[k], rtol=0, atol=0)
