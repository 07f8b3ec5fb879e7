import numpy as np
import pytest

from easytune.core.finetune.policies import (
    AlignProp,
    DraftK,
    DRTune,
    EasyTuneChain,
    EasyTuneStep,
    ReFL,
    make_policy,
    step_weight,
)
from easytune.core.infra.config import ConfigError


def rng():
    return np.random.default_rng(0)


def test_easytune_trains_and_updates_every_step_with_stop_gradient():
    plan = EasyTuneStep().plan(50, rng())
    assert plan.grad_steps == tuple(range(50)) and plan.update_steps == tuple(range(50))
    assert all(d.detach_chain and d.reward for d in plan.decisions)
    last = EasyTuneStep(steps="last_k", k=10).plan(50, rng())
    assert last.grad_steps == tuple(range(40, 50)) == last.update_steps
    assert len(last.decisions) == 50  # the untrained steps still run


def test_step_weights_of_table_s4():
    # t = T - i: increasing w_t = (T - t)/T + 0.5, decreasing w_t = -(T - t)/T + 1.5
    assert step_weight(0, 50, "linear_increasing") == pytest.approx(0.5)
    assert step_weight(49, 50, "linear_increasing") == pytest.approx(0.5 + 49 / 50)
    assert step_weight(0, 50, "linear_decreasing") == pytest.approx(1.5)
    assert step_weight(25, 50, "linear_decreasing") == pytest.approx(1.0)
    final = EasyTuneStep(weighting="final_window").plan(50, rng())
    assert final.grad_steps == tuple(range(30, 50))
    first = EasyTuneStep(weighting="first_window").plan(50, rng())
    assert first.grad_steps == tuple(range(20))
    dec = EasyTuneStep(weighting="linear_decreasing").plan(50, rng())
    assert [d.weight for d in dec.decisions][:2] == pytest.approx([1.5, 1.48])


def test_chain_shares_the_step_plan_but_runs_a_frozen_trajectory():
    assert EasyTuneChain.uses_frozen_trajectory and not EasyTuneStep.uses_frozen_trajectory
    assert EasyTuneChain().plan(10, rng()) == EasyTuneStep().plan(10, rng())


def test_draft_k_keeps_the_graph_through_the_last_k_steps_and_updates_once():
    plan = DraftK(k=3).plan(10, rng())
    assert plan.grad_steps == (7, 8, 9) and plan.update_steps == (9,)
    assert not any(d.detach_chain or d.detach_input for d in plan.decisions)
    assert DraftK(k=10).plan(10, rng()).grad_steps == tuple(range(10))  # DRaFT-T: the full chain


def test_refl_stops_at_one_random_step_in_the_last_m():
    stops = set()
    r = rng()
    for _ in range(200):
        plan = ReFL(m=4).plan(10, r)
        assert plan.grad_steps == plan.update_steps == (plan.stop_after,)
        assert plan.decisions[plan.stop_after].reward
        stops.add(plan.stop_after)
    assert stops == {6, 7, 8, 9}


def test_alignprop_truncates_from_a_random_cutoff_with_checkpointing():
    r = rng()
    cutoffs = set()
    for _ in range(100):
        plan = AlignProp().plan(8, r)
        grads = plan.grad_steps
        assert grads == tuple(range(grads[0], 8)) and plan.update_steps == (7,)
        assert all(plan.decisions[i].checkpoint for i in grads)
        cutoffs.add(grads[0])
    assert cutoffs == set(range(8))


def test_drtune_detaches_every_denoiser_input_and_trains_k_spaced_steps():
    r = rng()
    for _ in range(50):
        plan = DRTune(k=3, m=5).plan(20, r)
        s = plan.stop_after
        assert 15 <= s <= 19 and plan.update_steps == (s,)
        assert all(d.detach_input and not d.detach_chain for d in plan.decisions)
        assert plan.grad_steps[0] == 0 and plan.grad_steps[-1] == s and len(plan.grad_steps) == 3


def test_drtune_paper_setting_trains_only_steps_from_first_step():
    """Table S1's DRTune trains steps [40, 50] of 50 (first_step 40); the release spreads them from step 0."""
    r = rng()
    for _ in range(50):
        plan = DRTune(k=5, m=10, first_step=40).plan(50, r)
        s = plan.stop_after
        assert 40 <= s <= 49 and plan.update_steps == (s,)
        assert plan.grad_steps[0] == 40 and plan.grad_steps[-1] == s and all(40 <= i <= s for i in plan.grad_steps)
    assert DRTune(k=5, m=10, first_step=40).plan(50, rng()).grad_steps != DRTune(k=5, m=10).plan(50, rng()).grad_steps
    with pytest.raises(ValueError, match="first_step must be in 0..40"):
        DRTune(k=5, m=10, first_step=45).plan(50, rng())


def test_make_policy_rejects_unknown_methods_and_options():
    assert make_policy("draft_k", {"k": 50}).k == 50
    with pytest.raises(ValueError, match="unknown fine-tuning method"):
        make_policy("dpo")
    with pytest.raises(ConfigError, match="unknown key"):
        make_policy("refl", {"k": 3})
    with pytest.raises(ValueError, match="no step trains"):
        EasyTuneStep(steps="first_k", k=5, weighting="final_window", window=2).plan(50, rng())
