"""Study runs on tiny models: snapshots with val signals, the run cache and its key, lr selection on val only."""

import logging

import torch

from easytune.core.config import from_dict
from easytune.core.study.config import StudyConfig
from easytune.core.study.runner import RunOutput, base_signals, run_once, run_variant, select_lr
from tests.core.finetune.tiny import make_mdm, make_reward, make_splits

CPU = torch.device("cpu")


def tiny_study(tmp_path, **kw) -> StudyConfig:
    params = {"variants": {"easytune_all": {"method": "easytune_step"}, "draft_2": {"method": "draft_k",
                                                                                     "policy": {"k": 2}}},
              "seeds": [1, 2], "lr_grid": [1e-2], "budget_gflops": 0.004, "snapshot_at": [0.5, 1.0],
              "signals": {"captions": 3, "batch_size": 3}, "run_cache": str(tmp_path / "runs"),
              "finetune": {"batch_size": 2, "num_steps": 4}}
    params.update(kw)
    return from_dict(StudyConfig, params)


def test_a_run_has_base_then_budget_snapshots_with_signals_and_is_cached(tmp_path, caplog, one_torch_thread):
    cfg = tiny_study(tmp_path)
    train, val, text = make_splits()
    reward = make_reward()
    base = base_signals(lambda: make_mdm(steps=4), reward, val, text, cfg.signals, CPU)
    out = run_once("easytune_all", 1e-2, 1, cfg, lambda: make_mdm(steps=4), reward, train, val, text, base,
                   common={}, device=CPU)
    snaps = out.record["snapshots"]
    assert [s["at"] for s in snaps] == [0.0, 0.5, 1.0] and len(out.weights) == 2
    assert snaps[0]["val_reward"] == base["val_reward"] and snaps[0]["cost_gflops"] == 0.0
    assert snaps[1]["cost_gflops"] >= 0.002 and snaps[2]["cost_gflops"] >= 0.004
    assert snaps[2]["val_reward"] != snaps[0]["val_reward"]
    with caplog.at_level(logging.INFO):
        again = run_once("easytune_all", 1e-2, 1, cfg, lambda: make_mdm(steps=4), reward, train, val, text, base,
                         common={}, device=CPU)
    assert "loaded from" in caplog.text and again.record == out.record
    caplog.clear()
    with caplog.at_level(logging.INFO):
        other = run_once("easytune_all", 1e-2, 2, cfg, lambda: make_mdm(steps=4), reward, train, val, text, base,
                         common={}, device=CPU)  # another seed is another run: never the cached one
    assert "loaded from" not in caplog.text and other.record["snapshots"] != out.record["snapshots"]


def test_lr_selection_uses_the_selection_seed_and_the_admissible_val_reward(tmp_path):
    cfg = tiny_study(tmp_path, lr_grid=[1e-3, 1e-2, 1e-1], selection_seed=100)
    calls = []

    def fake_run(lr, seed):
        calls.append((lr, seed))
        reward = {1e-3: 4.5, 1e-2: 5.5, 1e-1: 9.0}[lr]
        fid = {1e-3: 1.0, 1e-2: 1.1, 1e-1: 5.0}[lr]  # the highest reward is inadmissible (hacked)
        snaps = [{"val_reward": 4.0, "val_reward_fid": 1.0}, {"val_reward": reward, "val_reward_fid": fid}]
        return RunOutput({"snapshots": snaps}, [])

    chosen = select_lr("easytune_all", cfg, fake_run)
    assert chosen["lr"] == 1e-2 and {s for _, s in calls} == {100}
    assert [c["admissible_index"] for c in chosen["candidates"]] == [1, 1, 0]


def test_run_variant_trains_every_seed_at_the_chosen_lr(tmp_path, one_torch_thread):
    cfg = tiny_study(tmp_path)
    train, val, text = make_splits()
    reward = make_reward()
    base = base_signals(lambda: make_mdm(steps=4), reward, val, text, cfg.signals, CPU)
    record, weights = run_variant("draft_2", cfg, lambda: make_mdm(steps=4), reward, train, val, text, base,
                                  common={}, device=CPU)
    assert [r["seed"] for r in record["runs"]] == [1, 2] and all(r["lr"] == 1e-2 for r in record["runs"])
    assert record["lr_selection"]["rule"] == "single learning rate" and len(weights) == 2
