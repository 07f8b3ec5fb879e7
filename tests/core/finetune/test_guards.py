"""Issue #23 guards in fine-tuning: the realism term carries gradient through the rollout; the reward of a run is
built from its config (ensemble members, realism critic)."""

import numpy as np
import pytest
import torch

from easytune.core.finetune import load_finetune_reward
from easytune.core.finetune.config import FinetuneConfig
from easytune.core.finetune.rollout import run_rollout
from easytune.core.infra.checkpoint import make_checkpoint
from easytune.core.infra.config import from_dict
from easytune.core.reward.critic import RealismCritic, RealismCriticConfig
from easytune.core.reward.ensemble import EnsembleReward, RealismReward
from tests.core.finetune.tiny import FEAT, make_mdm, make_reward, make_text


def _critic(seed: int = 5) -> RealismCritic:
    torch.manual_seed(seed)
    return RealismCritic(RealismCriticConfig(feature_dim=FEAT, hidden=8)).eval()


def _grads(reward) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    gen = make_mdm(steps=4)
    plan = from_dict(FinetuneConfig, {"method": "easytune_step"}).build_policy().plan(4, np.random.default_rng(0))
    grads, samples = [], []

    def on_update(loss, trace):
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in gen.denoiser.parameters() if p.grad is not None]))
        gen.denoiser.zero_grad(set_to_none=True)
        return False

    def observer(i, tensors):
        if tensors["x0_hat"].requires_grad:
            tensors["x0_hat"].retain_grad()
            samples.append(tensors["x0_hat"])

    run_rollout(gen, reward, plan, make_text(2), torch.tensor([8, 10]), noise_generator=torch.Generator().manual_seed(0),
                on_update=on_update, num_steps=4, observer=observer)
    return grads, [s.grad for s in samples]


def test_the_realism_term_carries_gradient_to_the_sample_in_the_rollout():
    base = make_reward()
    critic = _critic()
    plain, plain_sample = _grads(base)
    with_critic, critic_sample = _grads(RealismReward(base, critic, 2.0))
    assert all(g is not None for g in critic_sample)
    # the critic's term changes the gradient on the sample and, through it, on the denoiser
    assert all((a - b).abs().max() > 1e-6 for a, b in zip(critic_sample, plain_sample, strict=True))
    assert all((a - b).abs().max() > 1e-6 for a, b in zip(with_critic, plain, strict=True))
    assert all(p.grad is None for p in critic.parameters())  # the critic itself stays frozen


def test_the_run_reward_follows_the_config():
    ckpts = {name: make_checkpoint("retrieval_model", make_reward(seed).model)
             for name, seed in (("reward_model", 1), ("reward_model_seed1", 2))}
    critic = make_checkpoint("realism_critic", _critic())
    cfg = from_dict(FinetuneConfig, {"reward_ensemble": {"members": ["reward_model", "reward_model_seed1"],
                                                         "mode": "conservative"}, "realism_weight": 0.5})
    reward = load_finetune_reward(ckpts["reward_model"], "cpu", cfg,
                                  {"reward_model_seed1": ckpts["reward_model_seed1"], "realism_critic": critic})
    assert isinstance(reward, RealismReward) and isinstance(reward.reward, EnsembleReward)
    assert reward.reward.mode == "conservative" and len(reward.reward.members) == 2
    with pytest.raises(ValueError, match="reward_model_seed1"):
        load_finetune_reward(ckpts["reward_model"], "cpu", cfg, {"reward_model_seed1": None, "realism_critic": critic})
    plain = from_dict(FinetuneConfig, {})
    assert type(load_finetune_reward(ckpts["reward_model"], "cpu", plain, {})).__name__ == "Reward"


def test_the_realism_term_is_the_log_probability_of_real_and_bounded_above():
    critic = _critic()
    base = make_reward()
    guarded = RealismReward(base, critic, 0.5)
    torch.manual_seed(0)
    feats, lengths, text = torch.randn(3, 10, FEAT), torch.tensor([10, 8, 6]), make_text(3)
    with torch.no_grad():
        logits = critic(feats, lengths)
        expected = base(feats, lengths, text) + 0.5 * torch.log(torch.sigmoid(logits))
        assert torch.allclose(guarded(feats, lengths, text), expected, atol=1e-6)
        # a critic that calls everything real adds (almost) nothing; one that calls it generated costs ~ weight*|logit|
        critic.head.bias.fill_(50.0)
        assert torch.allclose(guarded(feats, lengths, text), base(feats, lengths, text), atol=1e-6)
        critic.head.bias.fill_(-50.0)
        gap = base(feats, lengths, text) - guarded(feats, lengths, text)
        assert torch.allclose(gap, -0.5 * critic(feats, lengths), atol=1e-3)  # logits near -50: log sigmoid ~ logit
