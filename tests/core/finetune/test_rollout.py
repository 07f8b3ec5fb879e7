"""Gradient semantics of the one rollout loop on tiny real generators (acceptance 1) and memory (acceptance 2)."""

import numpy as np
import pytest
import torch

from easytune.core.finetune.accounting import SavedTensorsMeter
from easytune.core.finetune.policies import AlignProp, DraftK, DRTune, EasyTuneStep
from easytune.core.finetune.rollout import run_rollout, sample_final
from tests.core.finetune.tiny import make_mdm, make_mld, make_reward, make_text

LENGTHS = torch.tensor([12, 9, 7])


def params_of(gen):
    return [p for p in gen.denoiser.parameters() if p.requires_grad]


def capture_grads(gen, store, meter=None):
    """on_update that records the gradient and leaves the weights unchanged (no optimizer)."""

    def on_update(loss, trace):
        params = params_of(gen)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        if meter is not None:
            meter.graph_released()
        store.append((trace.index, [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]))
        return False

    return on_update


def record_steps(store):
    def observer(i, tensors):
        store[i] = tensors

    return observer


@pytest.mark.parametrize("make", [make_mdm, make_mld])
def test_rollout_without_updates_matches_the_generators_sampler(make):
    gen, text = make(steps=5), make_text()
    ours, _ = sample_final(gen, text, LENGTHS, noise_generator=torch.Generator().manual_seed(7))
    theirs = gen.generate(text, LENGTHS, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make", [make_mdm, make_mld])
def test_easytune_gradient_is_that_of_the_one_step_reward_with_x_t_held_constant(make):
    gen, reward, text = make(steps=5), make_reward(), make_text()
    plan = EasyTuneStep(weighting="linear_decreasing").plan(5, np.random.default_rng(0))
    grads, steps = [], {}
    run_rollout(gen, reward, plan, text, LENGTHS, noise_generator=torch.Generator().manual_seed(3),
                on_update=capture_grads(gen, grads), reward_weight=0.7, observer=record_steps(steps))
    assert [i for i, _ in grads] == list(range(5))
    t_all = gen.diffusion.timesteps(5)
    _, mask = gen.initial_noise(LENGTHS)
    for i, got in grads:
        x_t = steps[i]["x_t"].detach()  # held constant
        t = int(t_all[i])
        out = gen.denoise(x_t, t, text, mask)
        _, x0_hat = gen.diffusion.step(out, t, x_t, num_steps=5)
        if gen.kind == "mdm":
            x0_hat = x0_hat * mask[..., None]
        r = reward(gen.decode(x0_hat, mask), LENGTHS, text, None).mean()
        expected = torch.autograd.grad(-0.7 * plan.decisions[i].weight * r, params_of(gen), allow_unused=True)
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, torch.zeros_like(g) if e is None else e, rtol=1e-4, atol=1e-6)
        assert not steps[i]["x_t"].requires_grad  # no path to earlier steps


@pytest.mark.parametrize("k", [5, 2])
def test_draft_gradient_equals_autograd_through_the_unrolled_sampler(k):
    gen, reward, text = make_mld(steps=5), make_reward(), make_text()
    grads = []
    run_rollout(gen, reward, DraftK(k=k).plan(5, np.random.default_rng(0)), text, LENGTHS,
                noise_generator=torch.Generator().manual_seed(3), on_update=capture_grads(gen, grads))
    assert [i for i, _ in grads] == [4]
    # reference: the generator's own step iterator (H3's loop), gradient on the last k steps, no detaching
    steps = gen.sample_steps(text, LENGTHS, generator=torch.Generator().manual_seed(3))
    for i in range(5):
        with torch.set_grad_enabled(i >= 5 - k):
            last = next(steps)
    with torch.enable_grad():
        r = reward(gen.decode(last.x_prev, last.mask), LENGTHS, text, None).mean()
    expected = torch.autograd.grad(-r, params_of(gen), allow_unused=True)
    for g, e in zip(grads[0][1], expected, strict=True):
        torch.testing.assert_close(g, torch.zeros_like(g) if e is None else e, rtol=1e-4, atol=1e-6)
    if k == 5:  # full chain: differs from the one-step (EasyTune) gradient of the last step
        assert any(g.abs().sum() > 0 for g in grads[0][1])


def test_drtune_denoiser_input_never_carries_gradient_but_the_chain_does():
    gen, reward, text = make_mdm(steps=8), make_reward(), make_text()
    plan = DRTune(k=3, m=2).plan(8, np.random.default_rng(1))
    grads, steps = [], {}
    run_rollout(gen, reward, plan, text, LENGTHS, noise_generator=torch.Generator().manual_seed(5),
                on_update=capture_grads(gen, grads), observer=record_steps(steps))
    assert len(steps) == plan.stop_after + 1 and [i for i, _ in grads] == [plan.stop_after]
    assert all(not s["denoiser_input"].requires_grad for s in steps.values())
    first = plan.grad_steps[0]
    assert all(steps[i]["x_t"].requires_grad for i in steps if i > first)  # x_t keeps its own chain
    # reference by hand: eps(sg(x_t)) with grad on trained steps only, sampler update on the attached x_t
    x, mask = gen.initial_noise(LENGTHS, torch.Generator().manual_seed(5))
    ts = gen.diffusion.timesteps(8)
    with torch.enable_grad():
        for i in range(plan.stop_after + 1):
            with torch.set_grad_enabled(i in plan.grad_steps):
                out = gen.denoise(x.detach(), int(ts[i]), text, mask)
            x_prev, x0_hat = gen.diffusion.step(out, int(ts[i]), x, num_steps=8)
            x_prev, x0_hat = x_prev * mask[..., None], x0_hat * mask[..., None]
            x = x_prev
        r = reward(x0_hat, LENGTHS, text, None).mean()
    expected = torch.autograd.grad(-r, params_of(gen), allow_unused=True)
    for g, e in zip(grads[0][1], expected, strict=True):
        torch.testing.assert_close(g, torch.zeros_like(g) if e is None else e, rtol=1e-4, atol=1e-6)


def test_noise_aware_reward_scores_x_prev_at_the_next_timestep():
    gen, reward, text = make_mdm(steps=4), make_reward(), make_text()
    seen = []

    def spy(features, lengths, txt, t):
        seen.append(None if t is None else int(t[0]))
        return reward(features, lengths, txt, t)

    run_rollout(gen, spy, EasyTuneStep().plan(4, np.random.default_rng(0)), text, LENGTHS,
                noise_generator=torch.Generator().manual_seed(0), on_update=capture_grads(gen, []),
                reward_input="noisy")
    ts = gen.diffusion.timesteps(4).tolist()
    assert seen == ts[1:] + [0]
    with pytest.raises(ValueError, match="latent"):
        run_rollout(make_mld(steps=4), spy, EasyTuneStep().plan(4, np.random.default_rng(0)), text, LENGTHS,
                    noise_generator=None, on_update=lambda loss, trace: False, reward_input="noisy")


def peak_saved(policy, steps):
    gen, reward, text = make_mld(steps=steps), make_reward(), make_text()
    meter = SavedTensorsMeter()
    peaks = []

    def on_update(loss, trace):
        peaks.append(meter.peak_bytes)
        capture_grads(gen, [], meter)(loss, trace)
        meter.reset_peak()
        return False

    with meter:
        run_rollout(gen, reward, policy.plan(steps, np.random.default_rng(0)), text, LENGTHS,
                    noise_generator=torch.Generator().manual_seed(0), on_update=on_update)
    return max(peaks)


def test_easytune_saved_bytes_are_flat_in_T_while_full_chain_grows_linearly():
    easy = {t: peak_saved(EasyTuneStep(), t) for t in (10, 20, 50)}
    chain = {t: peak_saved(DraftK(k=t), t) for t in (10, 20, 50)}
    assert max(easy.values()) <= 1.02 * min(easy.values())
    # linear in T: equal increments per added step
    per_step_a = (chain[20] - chain[10]) / 10
    per_step_b = (chain[50] - chain[20]) / 30
    assert per_step_a > 0 and per_step_b == pytest.approx(per_step_a, rel=0.05)
    assert chain[50] > 4 * easy[50]


@pytest.mark.parametrize("make", [make_mdm, make_mld])
def test_reward_checkpointing_gives_the_same_gradient_and_keeps_less_for_backward(make):
    """Gradient checkpointing of the reward path (VAE decode + reward model): identical gradients, fewer bytes saved
    for backward per gradient-carrying step (the decoder and reward activations are recomputed instead)."""
    results = {}
    for on in (False, True):
        gen, reward, text = make(steps=3), make_reward(), make_text()
        grads, meter = [], SavedTensorsMeter()
        with meter:
            run_rollout(gen, reward, EasyTuneStep().plan(3, np.random.default_rng(0)), text, LENGTHS,
                        noise_generator=torch.Generator().manual_seed(3), on_update=capture_grads(gen, grads, meter),
                        reward_checkpointing=on)
        results[on] = (grads, meter.peak_bytes)
    for (_, off), (_, on) in zip(results[False][0], results[True][0], strict=True):
        for a, b in zip(off, on, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert results[True][1] < results[False][1]


@pytest.mark.parametrize("make", [make_mdm, make_mld])
def test_denoiser_checkpointing_over_the_chain_gives_the_same_gradient(make):
    """AlignProp's checkpointed denoiser calls are recomputed in the backward after the loop has moved on: each
    recomputation must use its own step's timestep and input (a closure over the loop variables would silently use
    the last step's)."""
    grads = {}
    for on in (False, True):
        gen, reward, text = make(steps=4), make_reward(), make_text()
        grads[on] = []
        plan = AlignProp(min_cutoff=0, checkpointing=on).plan(4, np.random.default_rng(1))
        assert sum(d.grad for d in plan.decisions) >= 2  # several steps share one backward
        run_rollout(gen, reward, plan, text, LENGTHS, noise_generator=torch.Generator().manual_seed(3),
                    on_update=capture_grads(gen, grads[on]))
    (_, off), (_, on) = grads[False][0], grads[True][0]
    for a, b in zip(off, on, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
