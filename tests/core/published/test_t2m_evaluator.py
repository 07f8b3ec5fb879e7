"""The released T2M evaluator: finest.tar encoders, GloVe files, word/POS tokens, renormalisation."""

import pickle

import numpy as np
import pytest
import torch

from easytune.core.models.released_t2m import MotionEncoderBiGRUCo, MovementConvEncoder, TextEncoderBiGRUCo
from easytune.core.published.containers import PublishedAssetError
from easytune.core.published.t2m_evaluator import (
    POS_CLASSES,
    GloVe,
    caption_tokens,
    encode_tokens,
    load_glove,
    load_t2m_evaluator,
    renormalise,
)
from tests.core.published.released_keys import random_state, t2m_evaluator

TINY = {"mv_hidden": 8, "mv_out": 6, "m_hidden": 10, "t_hidden": 7, "out": 5}
# the first caption of HumanML3D texts/000000.txt (token field)
KICK = "a/DET man/NOUN kick/VERB something/PRON or/CCONJ someone/PRON with/ADP his/DET left/ADJ leg/NOUN"


class NotPlainData:
    pass


def _glove(tmp_path, words=("sos", "eos", "unk", "a", "man", "kick", "something", "or", "with", "his", "left", "leg")):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(words), 300)).astype(np.float32)
    np.save(tmp_path / "our_vab_data.npy", vectors)
    (tmp_path / "our_vab_words.pkl").write_bytes(pickle.dumps(list(words)))
    (tmp_path / "our_vab_idx.pkl").write_bytes(pickle.dumps({w: i for i, w in enumerate(words)}))
    return vectors, list(words)


def _finest(tmp_path, parts=None):
    parts = parts or {k: random_state(v) for k, v in t2m_evaluator(**TINY).items()}
    blob = {**parts, "opt_text_encoder": {"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999),
                                                                          "params": [0, 1]}]},
            "opt_motion_encoder": {"state": {}, "param_groups": []}, "epoch": 270, "iter": 123}
    torch.save(blob, tmp_path / "finest.tar")
    return tmp_path / "finest.tar"


def test_paper_sizes_have_the_published_keys():
    mods = {"movement_encoder": MovementConvEncoder(259, 512, 512), "motion_encoder": MotionEncoderBiGRUCo(512, 1024,
                                                                                                          512),
            "text_encoder": TextEncoderBiGRUCo(300, 15, 512, 512)}
    assert {k: {n: tuple(t.shape) for n, t in m.state_dict().items()} for k, m in mods.items()} == t2m_evaluator()


def test_reference_caption_to_word_vectors_and_pos(tmp_path):
    vectors, words = _glove(tmp_path)
    glove = load_glove(tmp_path)
    emb, pos, length = encode_tokens(caption_tokens(KICK), glove)
    assert emb.shape == (22, 300) and pos.shape == (22, 15) and length == 12  # sos + 10 words + eos
    row = {w: vectors[i] for i, w in enumerate(words)}
    assert np.array_equal(emb[0], row["sos"]) and np.array_equal(emb[11], row["eos"])
    assert np.array_equal(emb[2], row["man"]) and np.array_equal(emb[5], row["or"])
    assert np.array_equal(emb[6], row["unk"])  # "someone" is not in this vocabulary
    assert all(np.array_equal(emb[i], row["unk"]) for i in range(12, 22))
    tags = [POS_CLASSES[i] for i in pos.argmax(1)]
    assert pos.sum(1).tolist() == [1.0] * 22
    assert tags[:12] == ["OTHER", "DET", "NOUN", "Act_VIP", "PRON", "OTHER", "OTHER", "ADP", "DET", "Loc_VIP",
                         "Body_VIP", "OTHER"]  # kick: Act list; or/CCONJ: not a class; someone: unknown; left: Loc
    assert tags[12:] == ["OTHER"] * 10
    long_emb, _, long_len = encode_tokens(["man/NOUN"] * 25, glove)
    assert long_len == 22 and np.array_equal(long_emb[21], row["eos"])  # cropped to 20 words


def test_untagged_captions_name_the_tagger():
    for field in ["a man kicks", "a/X man/X kick/X"]:
        with pytest.raises(PublishedAssetError, match="not HumanML3D word/POS tags.*spaCy en_core_web_sm"):
            caption_tokens(field)


def test_glove_pickles_are_plain_data_only(tmp_path):
    _glove(tmp_path)
    (tmp_path / "our_vab_words.pkl").write_bytes(pickle.dumps(["sos", NotPlainData()]))
    with pytest.raises(PublishedAssetError, match=r"our_vab_words\.pkl: holds a pickled object.*NotPlainData"):
        load_glove(tmp_path)
    _glove(tmp_path, words=("sos", "eos", "man"))
    with pytest.raises(PublishedAssetError, match="no 'unk'"):
        load_glove(tmp_path)


def test_renormalisation_from_generator_to_evaluator_statistics():
    rng = np.random.default_rng(1)
    raw = rng.normal(size=(3, 7, 263)).astype(np.float32)
    mean, std = rng.normal(size=263), rng.uniform(0.5, 2, size=263)
    eval_mean, eval_std = rng.normal(size=263), rng.uniform(0.5, 2, size=263)
    generated = ((raw - mean) / std).astype(np.float32)
    expected = (raw - eval_mean) / eval_std
    assert np.allclose(renormalise(generated, mean, std, eval_mean, eval_std), expected, atol=1e-5)
    as_torch = renormalise(torch.from_numpy(generated), mean, std, eval_mean, eval_std)
    assert as_torch.dtype == torch.float32 and np.allclose(as_torch.numpy(), expected, atol=1e-4)


def test_evaluator_loads_from_finest_tar_and_embeds(tmp_path):
    _glove(tmp_path)
    ev = load_t2m_evaluator(_finest(tmp_path))
    torch.manual_seed(0)
    motions, lengths = torch.randn(3, 40, 263), torch.tensor([24, 40, 33])
    emb = ev.embed_motion(motions, lengths)
    assert emb.shape == (3, 5)
    alone = torch.cat([ev.embed_motion(motions[i:i + 1], lengths[i:i + 1]) for i in range(3)])
    assert torch.allclose(emb, alone, atol=1e-5)  # input order kept (the GRUs pack unsorted lengths)
    # the last 4-frame unit's two convolutions see frames up to length + 2 (as in the reference); none after that
    padded = motions.clone()
    padded[0, 24 + 3:] = 7.0
    assert torch.allclose(ev.embed_motion(padded, lengths), emb, atol=1e-6)
    padded[0, 24 + 2] = 7.0
    assert not torch.allclose(ev.embed_motion(padded, lengths)[0], emb[0], atol=1e-6)
    changed = motions.clone()
    changed[..., -4:] = 5.0  # foot contacts are not evaluator inputs
    assert torch.allclose(ev.embed_motion(changed, lengths), emb, atol=1e-6)
    shorter = ev.embed_motion(motions, torch.tensor([20, 40, 33]))  # 24 // 4 = 6 units vs 20 // 4 = 5
    assert not torch.allclose(shorter[0], emb[0]) and torch.allclose(shorter[1:], emb[1:], atol=1e-6)
    words, pos, n = encode_tokens(caption_tokens(KICK), load_glove(tmp_path))
    text = ev.embed_text(torch.from_numpy(words)[None], torch.from_numpy(pos)[None], torch.tensor([n]))
    assert text.shape == (1, 5) and torch.isfinite(text).all()


def test_evaluator_refusals_name_file_and_key(tmp_path):
    parts = {k: random_state(v) for k, v in t2m_evaluator(**TINY).items()}
    parts["text_encoder"]["pos_emb.weight"] = torch.zeros(300, 14)  # the format has 15 POS classes
    with pytest.raises(PublishedAssetError,
                       match=r"finest\.tar.*text_encoder\.pos_emb\.weight has shape \[300, 14\]"):
        load_t2m_evaluator(_finest(tmp_path, parts))
    parts = {k: random_state(v) for k, v in t2m_evaluator(**TINY).items()}
    parts["motion_encoder"]["gru.weight_ih_l0_rev"] = parts["motion_encoder"].pop("gru.weight_ih_l0_reverse")
    with pytest.raises(PublishedAssetError, match=r"missing key\(s\) motion_encoder\.gru\.weight_ih_l0_reverse"):
        load_t2m_evaluator(_finest(tmp_path, parts))
    parts = {k: random_state(v) for k, v in t2m_evaluator(**TINY).items()}
    del parts["movement_encoder"]
    with pytest.raises(PublishedAssetError, match=r"missing entry \['movement_encoder'\]"):
        load_t2m_evaluator(_finest(tmp_path, parts))
    torch.save({"text_encoder": NotPlainData()}, tmp_path / "finest.tar")
    with pytest.raises(PublishedAssetError, match=r"finest\.tar: holds a pickled object"):
        load_t2m_evaluator(tmp_path / "finest.tar")


def test_glove_object_checks_rows():
    with pytest.raises(PublishedAssetError, match="'man' has no valid row"):
        GloVe(np.zeros((2, 300)), ["unk", "man"], {"unk": 0, "man": 5})
