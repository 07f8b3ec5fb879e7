"""The one warm-up + cosine schedule, against the closed forms each loop used before it was shared."""

import math

import pytest

from easytune.core.infra.schedule import warmup_cosine


def test_pretraining_ramp_reaches_one_at_the_first_cosine_step():
    f = warmup_cosine(warmup=10, total=110, min_ratio=0.1, peak_at_warmup_end=False)
    assert f(0) == pytest.approx(1 / 11) and f(9) == pytest.approx(10 / 11)
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.55) and f(110) == pytest.approx(0.1)
    assert f(500) == pytest.approx(0.1)


def test_finetuning_ramp_reaches_one_at_the_last_warmup_step():
    f = warmup_cosine(warmup=4, total=20, min_ratio=0.0)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0 and f(12) == pytest.approx(0.5) and f(20) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize(("warmup", "total", "min_ratio", "peak"), [
    (0, 50, 0.0, True), (20, 600, 0.0, True), (3, 12, 0.2, True), (10, 110, 0.1, False), (0, 7, 0.5, False)])
def test_equals_the_closed_forms_bit_for_bit(warmup, total, min_ratio, peak):
    """Every loop's numbers reproduce: the shared function equals each former formula exactly (not approximately)."""
    def finetune_form(s):  # the fine-tuning loop's former schedule
        if warmup > 0 and s < warmup:
            return (s + 1) / warmup
        progress = min(1.0, (s - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def reward_form(s):  # the reward model's former schedule (no floor)
        if s < warmup:
            return (s + 1) / warmup
        progress = (s - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    def pretrain_form(s):  # the pretraining loop's former schedule
        if s < warmup:
            return (s + 1) / (warmup + 1)
        progress = min(1.0, (s - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    f = warmup_cosine(warmup=warmup, total=total, min_ratio=min_ratio, peak_at_warmup_end=peak)
    steps = range(total + 5)
    if peak:
        assert [f(s) for s in steps] == [finetune_form(s) for s in steps]
        if min_ratio == 0.0:
            assert [f(s) for s in steps] == [reward_form(s) for s in steps]
    else:
        assert [f(s) for s in steps] == [pretrain_form(s) for s in steps]
