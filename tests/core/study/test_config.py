"""Study configuration: errors before any run, and the run config the study builds."""

import pytest

from easytune.core.infra.config import ConfigError, from_dict
from easytune.core.study.config import StudyConfig

VARIANTS = {"easytune_all": {"method": "easytune_step", "policy": {"steps": "all"}},
            "draft_10": {"method": "draft_k", "policy": {"k": 10}, "finetune": {"kl_weight": 0.5}}}


def study(**kw) -> StudyConfig:
    return from_dict(StudyConfig, {"variants": VARIANTS, **kw})


def test_run_config_layers_common_study_and_variant_settings_and_owns_the_budget():
    cfg = study(budget_gflops=50.0, finetune={"batch_size": 4}, snapshot_at=[0.5, 1.0])
    run = cfg.run_config("draft_10", 3e-5, {"batch_size": 8, "num_steps": 50, "val_every": 50})
    assert run.method == "draft_k" and run.policy == {"k": 10} and run.lr == 3e-5 and run.kl_weight == 0.5
    assert run.batch_size == 4 and run.num_steps == 50  # study over common, common kept where not overridden
    assert run.max_cost_gflops == 50.0 and run.snapshot_at == [0.5, 1.0] and run.val_every == 0
    assert run.restore_best is False and run.max_train_s is None


@pytest.mark.parametrize("bad, message", [
    ({"selection_seed": 2, "seeds": [1, 2, 3]}, "must not be one of the study seeds"),
    ({"snapshot_at": [0.25, 0.5]}, "must end at 1.0"),
    ({"budget_gflops": 0}, "budget_gflops must be > 0"),
    ({"finetune": {"lr": 1e-4}}, "which the study sets itself"),
    ({"variants": {"x": {"method": "refl", "policy": {"k": 3}}}}, "unknown key"),
    ({"variants": {"x": {"method": "dpo"}}}, "unknown fine-tuning method"),
    ({"variants": {"x": {"method": "refl", "lr_grid": [-1e-5]}}}, "positive"),
    ({"seeds": [1, 1]}, "distinct"),
    ({"variants": {"x": {"method": "refl", "reward": "evaluator"}}}, "reward must be one of"),
    ({"variants": {"x": {"method": "refl", "lr_from": "y"}}}, "lr_from"),
    ({"spl_ablation": ["easytune_all", "draft_10"]}, "differ only in their reward"),
])
def test_bad_study_settings_fail_before_any_run(bad, message):
    with pytest.raises((ConfigError, ValueError), match=message):
        study(**bad)
