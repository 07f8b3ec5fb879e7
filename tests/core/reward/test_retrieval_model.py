"""RetrievalModel: shapes, masks, noise awareness, mean-not-sample scoring, checkpoint round trip."""

import numpy as np
import pytest
import torch

from easytune.core.infra.checkpoint import build_from_checkpoint, make_checkpoint
from easytune.core.reward.retrieval_model import RetrievalModel, embed_motions

from .conftest import FEATURE_DIM, tiny_config


def test_shapes_and_padding_is_ignored(model, split, text):
    from easytune.core.data.text import TextBatch

    x = torch.as_tensor(split.features[:4])  # (4, T, D)
    lengths = torch.as_tensor(split.lengths[:4])
    mu, logvar = model.encode_motion(x, lengths)
    assert mu.shape == logvar.shape == (4, 16)
    garbage = x.clone()
    garbage[0, lengths[0]:] = 100.0  # padded frames must not change the embedding
    torch.testing.assert_close(model.encode_motion(garbage, lengths)[0], mu)
    c_mu, _ = model.encode_text(TextBatch.from_embeddings(text, split.caption_ids[:4]))
    assert c_mu.shape == (4, 16)
    assert model.decode(mu, lengths, x.shape[1]).shape == x.shape


def test_timestep_changes_embedding_and_t0_equals_none(model, split):
    x = torch.as_tensor(split.features[:3])
    lengths = torch.as_tensor(split.lengths[:3])
    base = model.eval().encode_motion(x, lengths)[0]
    torch.testing.assert_close(model.encode_motion(x, lengths, torch.zeros(3, dtype=torch.long))[0], base)
    assert not torch.allclose(model.encode_motion(x, lengths, torch.full((3,), 400))[0], base)


def test_not_noise_aware_refuses_timesteps(split):
    model = RetrievalModel(tiny_config(noise_aware=False)).eval()
    x, lengths = torch.as_tensor(split.features[:2]), torch.as_tensor(split.lengths[:2])
    model.encode_motion(x, lengths, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="not noise-aware"):
        model.encode_motion(x, lengths, torch.ones(2, dtype=torch.long))


def test_embeddings_are_deterministic_means(model, split):
    a = embed_motions(model, split.features, split.lengths, "cpu", batch_size=5)
    b = embed_motions(model, split.features, split.lengths, "cpu", batch_size=16)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_checkpoint_round_trip(model, split):
    ckpt = make_checkpoint("retrieval_model", model, {"stage": "test"})
    rebuilt = build_from_checkpoint(ckpt, "cpu", allowed_kinds=["retrieval_model"])
    x, lengths = torch.as_tensor(split.features[:2]), torch.as_tensor(split.lengths[:2])
    torch.testing.assert_close(rebuilt.encode_motion(x, lengths)[0], model.eval().encode_motion(x, lengths)[0])
    assert rebuilt.config.feature_dim == FEATURE_DIM


def test_embeddings_come_back_in_input_order(model, split):
    order = np.random.default_rng(0).permutation(len(split))
    whole = embed_motions(model, split.features, split.lengths, "cpu", batch_size=4)
    permuted = embed_motions(model, split.features[order], split.lengths[order], "cpu", batch_size=4)
    torch.testing.assert_close(permuted, whole[order], atol=1e-5, rtol=1e-5)
    one = embed_motions(model, split.features[3:4], split.lengths[3:4], "cpu")
    torch.testing.assert_close(one[0], whole[3], atol=1e-5, rtol=1e-5)
