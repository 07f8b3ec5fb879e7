"""Study runs on tiny models: snapshots with val signals, the run cache and its key, lr selection on val only,
and results that do not depend on the number of worker processes."""

import logging
import math

import torch

from easytune.core.infra.checkpoint import make_checkpoint
from easytune.core.infra.config import from_dict
from easytune.core.study.config import StudyConfig
from easytune.core.study.runner import (
    RunOutput,
    RunTask,
    StudyInputs,
    assemble_training,
    base_signals,
    bracketing_selection,
    choose_lr,
    extend_grid,
    light_splits,
    run_seed,
    run_task,
    select_learning_rates,
    train_study,
)
from tests.core.finetune.tiny import make_mdm, make_mlcm, make_reward, make_splits


def tiny_inputs(tmp_path, **kw) -> StudyInputs:
    params = {"variants": {"easytune_all": {"method": "easytune_step"},
                           "draft_2": {"method": "draft_k", "policy": {"k": 2}}},
              "seeds": [1, 2], "lr_grid": [1e-2], "budget_gflops": 0.004, "snapshot_at": [0.5, 1.0],
              "signals": {"captions": 3, "batch_size": 3}, "run_cache": str(tmp_path / "runs"),
              "finetune": {"batch_size": 2, "num_steps": 4}}
    params.update(kw)
    config = from_dict(StudyConfig, params)
    gen = make_mdm(steps=4)
    train, val, text = make_splits()
    train, val = light_splits(train, val, config.signals.captions)
    rewards = {"reward_model": make_checkpoint("retrieval_model", make_reward().model),
               "retrieval_model": make_checkpoint("retrieval_model", make_reward(seed=4).model)}
    inputs = StudyInputs(config, make_checkpoint("frame_denoiser", gen.denoiser, gen.checkpoint_metadata()), None,
                         rewards, train, val, text, {})
    inputs.base = base_signals(inputs)
    return inputs


def test_a_run_has_base_then_budget_snapshots_with_signals_and_is_cached(tmp_path, caplog, one_torch_thread):
    inputs = tiny_inputs(tmp_path)
    out = run_task(inputs, RunTask("easytune_all", 1e-2, 1))
    snaps = out.record["snapshots"]
    assert [s["at"] for s in snaps] == [0.0, 0.5, 1.0] and len(out.weights) == 2
    assert snaps[0]["val_reward"] == inputs.base["val_reward"] and snaps[0]["cost_gflops"] == 0.0
    assert snaps[1]["cost_gflops"] >= 0.002 and snaps[2]["cost_gflops"] >= 0.004
    assert snaps[2]["val_reward"] != snaps[0]["val_reward"]
    with caplog.at_level(logging.INFO):
        again = run_task(inputs, RunTask("easytune_all", 1e-2, 1))
    assert "loaded from" in caplog.text and again.record == out.record
    caplog.clear()
    with caplog.at_level(logging.INFO):
        other = run_task(inputs, RunTask("easytune_all", 1e-2, 2))  # another seed is another run
    assert "loaded from" not in caplog.text and other.record["snapshots"] != out.record["snapshots"]


def test_a_run_on_the_4_step_motionlcm(tmp_path, one_torch_thread):
    """finetune.generator: mlcm in the study: the consistency checkpoint with its VAE, 4-step rollouts."""
    config = tiny_inputs(tmp_path).config
    gen = make_mlcm(steps=4)
    train, val, text = make_splits()
    train, val = light_splits(train, val, config.signals.captions)
    inputs = StudyInputs(config, make_checkpoint("latent_consistency_denoiser", gen.denoiser,
                                                 gen.checkpoint_metadata()), make_checkpoint("motion_vae", gen.vae),
                         {"reward_model": make_checkpoint("retrieval_model", make_reward().model)}, train, val, text,
                         {})
    inputs.base = base_signals(inputs)
    out = run_task(inputs, RunTask("draft_2", 1e-2, 1))
    snaps = out.record["snapshots"]
    assert [s["at"] for s in snaps] == [0.0, 0.5, 1.0] and snaps[2]["val_reward"] != snaps[0]["val_reward"]


def test_lr_choice_reads_the_admissible_val_reward_of_the_selection_runs(tmp_path):
    config = tiny_inputs(tmp_path, lr_grid=[1e-3, 1e-2, 1e-1]).config
    outputs = {}
    for lr, reward, fid in ((1e-3, 4.5, 1.0), (1e-2, 5.5, 1.1), (1e-1, 9.0, 5.0)):  # the best reward is hacked
        outputs[lr] = RunOutput({"snapshots": [{"val_reward": 4.0, "val_reward_fid": 1.0},
                                               {"val_reward": reward, "val_reward_fid": fid}]}, [])
    chosen = choose_lr(config, "easytune_all", outputs)
    assert chosen["lr"] == 1e-2 and [c["admissible_index"] for c in chosen["candidates"]] == [1, 1, 0]


def test_selection_then_seeded_runs_in_turn_equal_the_runs_one_by_one(tmp_path, one_torch_thread):
    """train_study runs what the pipeline's nodes run one at a time (run_seed): the same records and weights."""
    inputs = tiny_inputs(tmp_path, lr_grid=[1e-3, 1e-2], run_cache=None)
    lrs = select_learning_rates(inputs)
    assert set(lrs) == {"easytune_all", "draft_2"} and all(c["seed"] == 100 for c in lrs.values())
    records, weights = train_study(inputs, lrs)
    assert [r["seed"] for r in records["draft_2"]["runs"]] == [1, 2] and len(weights["draft_2"]) == 2
    one = {(v, seed): run_seed(inputs, v, lrs[v]["lr"], seed) for v in records for seed in inputs.config.seeds}
    records2, weights2 = assemble_training(inputs.config, lrs, one)
    for v in records:
        for a, b in zip(records[v]["runs"], records2[v]["runs"], strict=True):
            assert [s["val_reward"] for s in a["snapshots"]] == [s["val_reward"] for s in b["snapshots"]]
        for wa, wb in zip(weights[v], weights2[v], strict=True):
            for sa, sb in zip(wa, wb, strict=True):
                assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_variant_can_fine_tune_with_the_reward_before_spl_at_another_variants_lr(tmp_path, one_torch_thread):
    """Fig. 8 pairs: the before-SPL variant trains on its own reward, is judged with the main reward's signals, and
    reuses the learning rate chosen for its partner (no selection run of its own)."""
    variants = {"easytune_all": {"method": "easytune_step"},
                "easytune_all_before_spl": {"method": "easytune_step", "reward": "retrieval_model",
                                            "lr_from": "easytune_all"}}
    inputs = tiny_inputs(tmp_path, variants=variants, lr_grid=[1e-3, 1e-2], run_cache=None,
                         spl_ablation=["easytune_all", "easytune_all_before_spl"])
    lrs = select_learning_rates(inputs)
    assert lrs["easytune_all_before_spl"]["lr"] == lrs["easytune_all"]["lr"]
    assert lrs["easytune_all_before_spl"]["rule"] == "the learning rate chosen for easytune_all"
    after = run_task(inputs, RunTask("easytune_all", 1e-2, 1)).record["snapshots"]
    before = run_task(inputs, RunTask("easytune_all_before_spl", 1e-2, 1)).record["snapshots"]
    assert after[0] == before[0]  # the same base signals (one yardstick)
    assert after[-1]["val_reward"] != before[-1]["val_reward"]  # another training reward, another model


def test_grids_are_extended_outwards_while_the_choice_sits_at_an_edge():
    """A constructed selection objective (admissible val reward = -(log10 lr - log10 optimum)^2) whose optimum lies
    beyond the grid: one step outwards per round (the grid's ratio at that edge), at most grid_extensions times."""
    variants = {"easytune_all": {"method": "easytune_step"}, "draft_2": {"method": "draft_k", "policy": {"k": 2}}}
    config = from_dict(StudyConfig, {"variants": variants, "lr_grid": [1e-4, 1e-3, 1e-2], "grid_extensions": 2})
    optimum = {"easytune_all": 1e-1, "draft_2": 1e-9}  # one step beyond the top; far below the bottom
    batches = []

    def run_batch(tasks):
        batches.append([(t.variant, t.lr, t.seed) for t in tasks])
        return [RunOutput({"snapshots": [
            {"val_reward": -100.0, "val_reward_fid": 1.0},
            {"val_reward": -(math.log10(t.lr) - math.log10(optimum[t.variant])) ** 2, "val_reward_fid": 1.0}]}, [])
            for t in tasks]

    chosen = bracketing_selection(config, ["easytune_all", "draft_2"], run_batch)
    top = chosen["easytune_all"]
    assert top["lr"] == 1e-1 and top["extended"] == [1e-1, 1.0] and top["at_edge"] is None  # bracketed: 1e-1 < 1
    assert top["grid"] == [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    low = chosen["draft_2"]
    assert low["extended"] == [1e-5, 1e-6] and low["lr"] == 1e-6 and low["at_edge"] == "low"  # still at an edge
    assert [len(b) for b in batches] == [6, 2, 2] and all(s == config.selection_seed for b in batches for *_, s in b)
    assert extend_grid([3e-6, 1e-5, 3e-5], "low") == 9e-7 and extend_grid([3e-6, 1e-5, 3e-5], "high") == 9e-5
    config.grid_extensions = 0
    once = bracketing_selection(config, ["easytune_all"], run_batch)
    assert once["easytune_all"]["lr"] == 1e-2 and once["easytune_all"]["at_edge"] == "high"


def test_a_run_on_cuda_takes_the_device_of_its_slot(monkeypatch):
    from easytune.core.study.runner import run_device

    assert run_device("cpu", 3) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert [run_device("cuda", k) for k in (1, 2, 3, 4, 5)] == ["cuda:1", "cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert run_device("cuda:0", 3) == "cuda:1"


def test_guard_variants_train_with_their_guarded_reward_and_are_judged_by_reward_model(tmp_path, one_torch_thread):
    """An ensemble variant (reward_model + another seed, conservative) and a KL variant change the run; the
    yardstick of the signals stays reward_model (the same base snapshot); a missing member is a clear error."""
    ensemble = {"members": ["reward_model", "reward_model_seed1"], "mode": "conservative", "std_weight": 1.0}
    variants = {"easytune_all": {"method": "easytune_step"},
                "easytune_ensemble": {"method": "easytune_step", "finetune": {"reward_ensemble": ensemble}},
                "easytune_kl": {"method": "easytune_step", "finetune": {"kl_weight": 1.0}}}
    inputs = tiny_inputs(tmp_path, variants=variants, run_cache=None)
    inputs.rewards["reward_model_seed1"] = make_checkpoint("retrieval_model", make_reward(seed=7).model)
    plain = run_task(inputs, RunTask("easytune_all", 1e-2, 1)).record["snapshots"]
    guarded = run_task(inputs, RunTask("easytune_ensemble", 1e-2, 1)).record["snapshots"]
    kl = run_task(inputs, RunTask("easytune_kl", 1e-2, 1)).record["snapshots"]
    assert plain[0] == guarded[0] == kl[0]
    assert guarded[-1]["val_reward"] != plain[-1]["val_reward"] and kl[-1]["val_reward"] != plain[-1]["val_reward"]
    del inputs.rewards["reward_model_seed1"]
    try:
        run_task(inputs, RunTask("easytune_ensemble", 1e-2, 1))
    except ValueError as exc:
        assert "reward_model_seed1" in str(exc)
    else:
        raise AssertionError("a missing ensemble member must be refused")
