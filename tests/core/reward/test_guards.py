"""Issue #23 guards in the reward layer: the reward ensemble, the realism critic, SPL with generated negatives."""

import numpy as np
import pytest
import torch

from easytune.core.data.text import TextBatch
from easytune.core.reward.critic import CriticTrainingConfig, train_critic
from easytune.core.reward.ensemble import EnsembleReward
from easytune.core.reward.generated import GeneratedMotions
from easytune.core.reward.retrieval_model import RetrievalModel
from easytune.core.reward.reward import Reward
from easytune.core.reward.spl import GeneratedNegativeMiner, MiningConfig, OnlineMiner
from easytune.core.reward.training import spl_pairs_loss
from tests.core.reward.conftest import make_split, make_text, tiny_config


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    pass


def _reward(seed: int) -> Reward:
    torch.manual_seed(seed)
    return Reward(RetrievalModel(tiny_config(use_decoder=False)))


def test_ensemble_reward_is_the_mean_or_the_conservative_mean_of_its_members():
    split, text = make_split(8), make_text()
    members = [_reward(s) for s in (0, 1, 2)]
    x = torch.as_tensor(split.features)
    n = torch.as_tensor(split.lengths)
    caps = TextBatch.from_embeddings(text, split.caption_ids, "cpu")
    each = torch.stack([m(x, n, caps) for m in members])  # (3, B)
    assert each.std(0).min() > 0  # the members differ
    mean = EnsembleReward(members, "mean")(x, n, caps)
    assert torch.allclose(mean, each.mean(0), atol=1e-6)
    conservative = EnsembleReward(members, "conservative", std_weight=0.5)(x, n, caps)
    expected = each.mean(0) - 0.5 * torch.sqrt(((each - each.mean(0)) ** 2).mean(0))
    assert torch.allclose(conservative, expected, atol=1e-6)
    assert (conservative < mean).all()


def test_realism_critic_learns_a_separable_set():
    rng = np.random.default_rng(0)
    split = make_split(32)
    real, real_len = split.features, split.lengths
    fake = (rng.normal(size=real.shape) * 2.0 + 1.5).astype(np.float32)  # unlike the smooth real patterns
    critic, history = train_critic(real, real_len, fake, real_len.copy(),
                                   CriticTrainingConfig(hidden=16, steps=60, batch_size=16, lr=3e-3, seed=0))
    losses = [r["value"] for r in history["loss"]]
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5])
    with torch.no_grad():
        real_logit = critic(torch.as_tensor(real), torch.as_tensor(real_len))
        fake_logit = critic(torch.as_tensor(fake), torch.as_tensor(real_len))
    assert (real_logit > 0).float().mean() > 0.9 and (fake_logit < 0).float().mean() > 0.9


def _raise_reward(model, x, n, caption):
    """Features near ``x`` that the reward scores far higher for ``caption`` (a constructed exploit)."""
    x = x.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.05)
    c_mu, _ = model.encode_text(caption)
    for _ in range(60):
        m_mu, _ = model.encode_motion(x, n, None)
        loss = -torch.nn.functional.cosine_similarity(m_mu, c_mu, dim=-1).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return x.detach()


def test_generated_negative_mining_turns_an_over_scored_generated_motion_into_the_loser():
    split, text = make_split(16), make_text()
    torch.manual_seed(0)
    model = RetrievalModel(tiny_config(use_decoder=False)).eval()
    reward = Reward(model)
    t = split.max_length
    n = torch.as_tensor(split.lengths[:2])
    # query 0: caption row 0 of sample 0; query 1: caption row 2 of sample 1
    caps = TextBatch.from_embeddings(text, np.array([0, 2]), "cpu")
    gt = torch.as_tensor(split.features[:2])
    exploit = _raise_reward(model, gt[:1], n[:1], caps.index(slice(0, 1)))
    # a generated motion the reward scores BELOW query 1's ground truth: the lowest-scored motion of the split
    all_scores = reward(torch.as_tensor(split.features), torch.as_tensor(split.lengths),
                        TextBatch.from_embeddings(text, np.array([2]), "cpu"))
    poor = int(torch.argmin(all_scores))
    gen_feats = np.zeros((2, t, split.feature_dim), np.float32)
    gen_feats[0] = exploit[0].numpy()
    gen_feats[1] = split.features[poor]
    generated = GeneratedMotions(gen_feats, np.array([split.lengths[0], split.lengths[poor]]), np.array([0, 1]),
                                 np.array([0, 2]))
    gen_scores = reward(torch.as_tensor(gen_feats), torch.as_tensor(generated.lengths), caps)
    gt_scores = reward(gt, n, caps)
    assert gen_scores[0] > gt_scores[0] and gen_scores[1] < gt_scores[1]  # the construction holds
    # retrieval never fails with k = the pool size: every pair found comes from the generated motions
    base = OnlineMiner(split, text, MiningConfig(pool_size=None, k=16), "cpu")
    miner = GeneratedNegativeMiner(base, split, text, generated, "cpu")
    mined = miner(model, np.array([0, 1]), np.array([0, 2]), step=3)
    assert mined.has_preference.tolist() == [True, False]
    assert mined.generated.tolist() == [True, False]
    assert mined.loser[0] == len(split) + 0 and mined.loser[1] == 1
    log = miner.log
    assert log.loser_id[0] == "generated:0" and log.has_preference.tolist() == [True, False]
    assert log.loser_score[0] == pytest.approx(float(gen_scores[0]), rel=1e-4)
    # the SPL loss reads the generated loser's features from pairs_split (finite, positive: the loser wins now)
    loss = spl_pairs_loss(model, miner.pairs_split, text, np.array([0]), mined.loser[:1], np.array([0]), "cpu")
    assert torch.isfinite(loss).all() and float(loss[0]) > np.log(2)
