"""Cost accounting: counted samples and FLOPs per call, backward by the stated rule, per method."""

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from easytune.core.finetune.cost import CostMeter
from easytune.core.finetune.policies import DraftK, EasyTuneStep
from easytune.core.finetune.rollout import run_rollout
from tests.core.finetune.tiny import make_mdm, make_reward, make_text


def _flops(fn) -> float:
    """Reference count: the call with autograd on and torch's fused inference path off (FlopCounterMode cannot see
    inside that path, which a frozen sub-network whose inputs need no gradient takes even with autograd on)."""
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.enable_grad(), FlopCounterMode(display=False) as counter:
            fn()
    finally:
        torch.backends.mha.set_fastpath_enabled(True)
    return float(counter.get_total_flops())


def test_meter_measures_a_call_once_and_counts_it_every_time():
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(3, 8)
    meter = CostMeter()
    for _ in range(3):
        meter.call("denoiser", lambda: layer(x), signature=(3, 8), samples=3, grad=True, trained=True)
    meter.backward_done()
    expected = 2 * 3 * 8 * 4  # one matmul: 2 B d_in d_out
    c = meter.counters
    assert c.forward_flops == 3 * expected and c.backward_flops == 3 * 2 * expected
    assert c.denoiser_samples_grad == 9 and c.denoiser_samples == 0 and c.backward_passes == 1
    meter.call("reward", lambda: layer(x), signature=(3, 8), samples=3, grad=True, trained=False, recomputed=True)
    meter.backward_done()
    assert c.backward_flops == 6 * expected + 2 * expected  # frozen: 1x, recomputed under checkpointing: +1x
    assert c.gflops == (c.forward_flops + c.backward_flops) / 1e9


def _trajectory_cost(policy, steps=4):
    gen, reward, text = make_mdm(steps=steps), make_reward(), make_text(3)
    lengths = torch.tensor([12, 9, 7])
    meter = CostMeter()

    def on_update(loss, trace):
        loss.backward()
        meter.backward_done()
        return False

    run_rollout(gen, reward, policy.plan(steps, np.random.default_rng(0)), text, lengths,
                noise_generator=torch.Generator().manual_seed(0), on_update=on_update, meter=meter)
    return gen, reward, text, lengths, meter.counters


def test_easytune_counts_one_guided_grad_call_and_one_reward_per_update():
    gen, reward, text, lengths, c = _trajectory_cost(EasyTuneStep())
    x, mask = gen.initial_noise(lengths, torch.Generator().manual_seed(0))
    den = _flops(lambda: gen.denoise(x, 10, text, mask))
    x_grad = x.clone().requires_grad_(True)
    rew = _flops(lambda: reward(gen.decode(x_grad, mask), lengths, text, None))
    assert c.denoiser_samples_grad == 4 * 2 * 3 and c.denoiser_samples == 0  # CFG: 2 passes per sample
    assert c.reward_samples_grad == 4 * 3 and c.backward_passes == 4
    assert c.forward_flops == 4 * (den + rew)
    assert c.backward_flops == 4 * (2 * den + rew)


def test_flops_do_not_depend_on_the_grad_mode():
    """The reward model's encoders take torch's fused inference path when their inputs need no gradient, which
    FlopCounterMode cannot see inside; measure_flops disables it, so a no-grad call counts every matmul."""
    from easytune.core.finetune.cost import measure_flops

    gen, reward, text = make_mdm(steps=4), make_reward(), make_text(3)
    lengths = torch.tensor([12, 9, 7])
    x, mask = gen.initial_noise(lengths, torch.Generator().manual_seed(0))
    x_grad = x.clone().requires_grad_(True)
    with_grad = _flops(lambda: reward(gen.decode(x_grad, mask), lengths, text, None))
    assert measure_flops(lambda: reward(gen.decode(x, mask), lengths, text, None)) == with_grad > 0


def test_draft_k_counts_no_grad_steps_then_the_chain():
    gen, reward, text, lengths, c = _trajectory_cost(DraftK(k=2))
    assert c.denoiser_samples == 2 * 2 * 3 and c.denoiser_samples_grad == 2 * 2 * 3
    assert c.reward_samples_grad == 3 and c.backward_passes == 1
