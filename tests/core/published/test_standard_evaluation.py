"""The standard T2M evaluator behind the project evaluator's interface, and released generators as motion sources."""

import numpy as np
import pytest
import torch

from easytune.core.evaluation.evaluator import denormalise_padded
from easytune.core.evaluation.protocol import ProtocolConfig, embed_captions, embed_motions, evaluate_source
from easytune.core.evaluation.published_assets import PublishedConfig, PublishedPathError
from easytune.core.published.containers import PublishedAssetError
from easytune.core.published.sampling import load_released_generator, load_text_features
from easytune.core.published.standard_evaluation import (
    caption_token_index,
    load_standard_evaluator,
    released_source,
)
from easytune.core.published.t2m_evaluator import caption_tokens, encode_tokens, load_glove, load_t2m_evaluator
from tests.core.evaluation.synthetic import make_split, make_stats, make_text
from tests.core.published.tiny_assets import published_folders, tagged


def _config(root, data, **models) -> PublishedConfig:
    return PublishedConfig(root=str(root), root_variable="EASYTUNE_PUBLISHED_DIR", dataset_dir=str(data),
                           dataset_dir_variable="EASYTUNE_DATA_DIR", models=models)


@pytest.fixture
def folders(tmp_path):
    text = make_text()
    return (*published_folders(tmp_path, text.captions.tolist()), text)


def test_caption_tags_are_read_from_the_texts_folder(folders):
    root, data, text = folders
    index = caption_token_index(data / "texts")
    assert index["A person does action 1 in style 2."] == "a/DET person/NOUN do/VERB action/NOUN 1/NUM in/ADP " \
                                                         "style/NOUN 2/NUM"
    assert len(index) == len(text) and "untagged line" not in index


def test_motions_are_renormalised_to_the_evaluator_statistics_and_captions_use_glove_and_pos(folders):
    root, data, text = folders
    paths = _config(root, data).evaluator_paths()
    ev = load_standard_evaluator(**paths)
    ref = load_t2m_evaluator(paths["checkpoint"])
    eval_mean, eval_std = (np.load(paths["meta_dir"] / n) for n in ("mean.npy", "std.npy"))
    split, stats = make_split(6, seed=3), make_stats()
    raw = denormalise_padded(split.features, split.lengths, stats)
    got = embed_motions(ev, raw, split.lengths)
    x = (raw - eval_mean) / eval_std * (np.arange(raw.shape[1])[None, :, None] < split.lengths[:, None, None])
    want = ref.embed_motion(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(split.lengths)).numpy()
    assert got.shape == (6, 5) and np.allclose(got, want, atol=1e-5)
    rows = np.array([3, 0, 7])
    glove = load_glove(paths["glove_dir"])
    enc = [encode_tokens(caption_tokens(tagged(c)), glove) for c in text.captions[rows]]
    want_text = ref.embed_text(torch.as_tensor(np.stack([e[0] for e in enc])), torch.as_tensor(np.stack([e[1] for e in enc])),
                               torch.as_tensor([e[2] for e in enc])).numpy()
    assert np.allclose(embed_captions(ev, text, rows), want_text, atol=1e-5)
    with pytest.raises(PublishedAssetError, match="no word/POS tags.*spaCy"):
        ev.caption_arrays(["a caption nobody tagged"])


def test_missing_files_name_the_parameter_the_variable_and_what_to_put_there(folders, tmp_path):
    root, data, _ = folders
    with pytest.raises(PublishedPathError, match=r"EASYTUNE_PUBLISHED_DIR is not set.*finest\.tar"):
        PublishedConfig(root="", root_variable="EASYTUNE_PUBLISHED_DIR", dataset_dir=str(data)).evaluator_paths()
    (root / "deps/glove/our_vab_data.npy").unlink()
    cfg = _config(root, data)
    cfg.t2m_evaluator.glove_dir = "elsewhere/glove"
    with pytest.raises(PublishedPathError, match=r"t2m_evaluator\.glove_dir = 'elsewhere/glove'.*"
                                                 r"EASYTUNE_PUBLISHED_DIR.*our_vab_data\.npy"):
        cfg.evaluator_paths()
    with pytest.raises(PublishedPathError, match=r"dataset_dir.*EASYTUNE_DATA_DIR is not set.*HumanML3D"):
        PublishedConfig(root=str(root), dataset_dir_variable="EASYTUNE_DATA_DIR").evaluator_paths()
    with pytest.raises(PublishedPathError, match=r"models\.mld\.checkpoint = 'x\.ckpt'.*1222_mld_humanml3d"):
        _config(root, data, mld={"checkpoint": "x.ckpt", "text_encoder_path": "deps"}).model_paths("mld")


def test_a_released_mld_scores_through_the_protocol_with_the_standard_evaluator(folders):
    root, data, text = folders
    cfg = _config(root, data, mld={"checkpoint": "checkpoints/mld_humanml3d_checkpoint/mld.ckpt",
                                   "text_encoder_path": "deps/clip-vit-large-patch14", "num_steps": 2})
    checkpoint, encoder = cfg.model_paths("mld")
    mean, std = np.load(data / "Mean.npy"), np.load(data / "Std.npy")
    gen = load_released_generator("mld", checkpoint, "clip", load_text_features("clip", encoder), mean, std,
                                  num_steps=2)
    test, stats = make_split(24, seed=1), make_stats()
    source = released_source(gen, text, stats, batch_size=8)
    feats, lengths = source(test.first_caption_ids(), test.lengths, 0)
    assert feats.shape == test.features.shape and np.array_equal(lengths, test.lengths)
    assert np.all(feats[np.arange(feats.shape[1])[None] >= lengths[:, None]] == 0)
    raw = denormalise_padded(feats, lengths, stats)  # the source hands back the project's normalisation
    again = gen.generate(text.captions[test.first_caption_ids()[:8]].tolist(), lengths[:8],
                         generator=torch.Generator().manual_seed(0))
    assert np.allclose(raw[:8, : again.shape[1]], again, atol=1e-4)
    evaluator = load_standard_evaluator(**cfg.evaluator_paths())
    config = ProtocolConfig(replications=2, group_size=4, diversity_pairs=10, mm_captions=2, mm_samples=2,
                            mm_pairs=2, batch_size=8)
    result = evaluate_source(source, test, text, stats, evaluator, None, config, 22)
    for name in ("R@1", "R@3", "FID", "MM-Dist", "Diversity", "MultiModality"):
        assert np.isfinite(result.metrics[name]["mean"]), name
