"""CLIP text features from a local folder: a tiny random CLIP text model saved with save_pretrained."""

import json
import string

import pytest
import torch

from easytune.core.published.containers import PublishedAssetError
from easytune.core.published.text_encoders import (
    ClipTextFeatures,
    DistilbertTokenFeatures,
    MDMClipTextFeatures,
    SentenceT5Features,
)
from tests.core.published.tiny_assets import WORDS, write_json, write_tiny_sentence_t5


@pytest.fixture
def tiny_clip(tmp_path):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    chars = list(string.ascii_lowercase) + list(".,'!")
    vocab = {c: i for i, c in enumerate(chars)} | {c + "</w>": len(chars) + i for i, c in enumerate(chars)}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    eos = vocab["<|endoftext|>"]
    config = CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                            num_attention_heads=2, max_position_embeddings=77, projection_dim=12, eos_token_id=eos,
                            bos_token_id=vocab["<|startoftext|>"], pad_token_id=eos)
    torch.manual_seed(0)
    model = CLIPTextModelWithProjection(config).eval()
    folder = tmp_path / "clip"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model, tokenizer


def test_clip_features_are_the_pooled_projection(tiny_clip):
    folder, model, tokenizer = tiny_clip
    features = ClipTextFeatures(folder).encode(["a man walks.", ""])
    assert features.shape == (2, 1, 12)
    ids = tokenizer(["a man walks."], return_tensors="pt")["input_ids"]  # unpadded; causal: same end-of-text state
    with torch.no_grad():
        hidden = model.text_model(input_ids=ids).last_hidden_state[0, -1]
        expected = model.text_projection(hidden)  # last_hidden_state is after the final layer norm
    assert torch.allclose(features[0, 0], expected, atol=1e-5)
    assert not torch.allclose(features[0], features[1])


def test_a_missing_folder_names_the_parameter(tmp_path):
    with pytest.raises(PublishedAssetError, match=r"clip_path = .*nowhere.*openai/clip-vit-large-patch14"):
        ClipTextFeatures(tmp_path / "nowhere")


# --- MDM: CLIP ViT-B/32, captions cut to 20 tokens ------------------------------------------------------------------


def test_mdm_clip_features_cut_captions_to_20_tokens(tiny_clip):
    folder, model, tokenizer = tiny_clip
    long = "a person walks forward then turns left and sits"  # char-level vocabulary: far more than 20 tokens
    features = MDMClipTextFeatures(folder).encode([long, "a man walks."])
    assert features.shape == (2, 12)
    ids = tokenizer([long], add_special_tokens=False)["input_ids"][0]
    assert len(ids) > 20
    cut = torch.tensor([[tokenizer.bos_token_id, *ids[:20], tokenizer.eos_token_id]])  # clip.tokenize(truncate=True)
    with torch.no_grad():
        expected = model(input_ids=cut).text_embeds[0]
    assert torch.allclose(features[0], expected, atol=1e-5)
    with torch.no_grad():
        short = model(input_ids=tokenizer(["a man walks."], return_tensors="pt")["input_ids"]).text_embeds[0]
    assert torch.allclose(features[1], short, atol=1e-5)


def test_mdm_clip_missing_folder_names_the_parameter(tmp_path):
    with pytest.raises(PublishedAssetError, match=r"clip_path = .*openai/clip-vit-base-patch32"):
        MDMClipTextFeatures(tmp_path / "nowhere")


# --- sentence-t5 (sentence-transformers layout) ---------------------------------------------------------------------

@pytest.fixture
def tiny_sentence_t5(tmp_path):
    """The released sentence-t5-large folder layout with a tiny random T5 (d_model 16), Dense 16 -> 12 and
    max_seq_length 8 -> (folder, model, tokenizer, dense weight)."""
    folder = tmp_path / "sentence-t5"
    model, tokenizer, dense = write_tiny_sentence_t5(folder, d_model=16, out=12, max_seq_length=8)
    return folder, model, tokenizer, dense


def test_sentence_t5_embedding_is_mean_pooled_dense_normalised(tiny_sentence_t5):
    folder, model, tokenizer, dense = tiny_sentence_t5
    encoder = SentenceT5Features(folder)
    captions = ["a man walks forward", " the person turns left ", ""]
    emb = encoder.sentence_embedding(captions)
    assert emb.shape == (3, 12)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(encoder.encode(captions), emb[:, None])
    for i, caption in enumerate(captions):  # one at a time, unpadded: padding must not change the pooled state
        ids = tokenizer([caption.strip()], return_tensors="pt")["input_ids"]
        with torch.no_grad():
            pooled = model(input_ids=ids).last_hidden_state[0].mean(0)
        assert torch.allclose(emb[i], torch.nn.functional.normalize(dense @ pooled, dim=0), atol=1e-5)
    assert not torch.allclose(emb[0], emb[2])


def test_sentence_t5_token_states_and_max_seq_length(tiny_sentence_t5):
    folder, model, tokenizer, _ = tiny_sentence_t5
    states, mask = SentenceT5Features(folder).token_states(["a man walks forward", "a man walks forward and jumps "
                                                            "the person turns left slowly"])
    assert states.shape == (2, 8, 16) and mask.dtype == torch.bool  # cut to max_seq_length 8
    assert mask.sum(1).tolist() == [5, 8]  # 4 words + </s>; 10 words cut to 7 + </s>
    with torch.no_grad():
        expected = model(input_ids=tokenizer(["a man walks forward"], return_tensors="pt")["input_ids"])
    assert torch.allclose(states[0, :5], expected.last_hidden_state[0], atol=1e-5)


def test_sentence_t5_matches_sentence_transformers(tiny_sentence_t5):
    """The published path (ET mld_clip.py: SentenceTransformer(...).encode) on the same folder."""
    st = pytest.importorskip("sentence_transformers")
    folder = tiny_sentence_t5[0]
    captions = ["a man walks forward", "the person turns left slowly", ""]
    reference = st.SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    expected = reference.encode(captions, convert_to_tensor=True)
    assert torch.allclose(SentenceT5Features(folder).sentence_embedding(captions), expected, atol=1e-5)
    tokens = reference.encode(captions[:1], output_value="token_embeddings")[0]
    assert torch.allclose(SentenceT5Features(folder).token_states(captions[:1])[0][0], tokens, atol=1e-5)


def test_sentence_t5_refusals_name_the_file(tiny_sentence_t5, tmp_path):
    folder = tiny_sentence_t5[0]
    with pytest.raises(PublishedAssetError, match=r"t5_path = .*nowhere.*sentence-transformers/sentence-t5-large"):
        SentenceT5Features(tmp_path / "nowhere")
    write_json(folder / "1_Pooling" / "config.json", {"pooling_mode_cls_token": True})
    with pytest.raises(PublishedAssetError, match=r"1_Pooling/config\.json: pooling \['pooling_mode_cls_token'\]"):
        SentenceT5Features(folder)
    write_json(folder / "1_Pooling" / "config.json", {"pooling_mode_mean_tokens": True})
    (folder / "2_Dense" / "model.safetensors").unlink()
    torch.save({"linear.weight": torch.zeros(12, 16), "cfg": NotPlainData()}, folder / "2_Dense" / "pytorch_model.bin")
    with pytest.raises(PublishedAssetError, match=r"pytorch_model\.bin: holds a pickled object"):
        SentenceT5Features(folder)
    torch.save({"linear.weight": torch.zeros(12, 15)}, folder / "2_Dense" / "pytorch_model.bin")
    with pytest.raises(PublishedAssetError, match=r"pytorch_model\.bin.*key linear\.weight has shape \[12, 15\]"):
        SentenceT5Features(folder)
    (folder / "modules.json").unlink()
    with pytest.raises(PublishedAssetError, match=r"modules\.json: no such file; t5_path must hold"):
        SentenceT5Features(folder)


class NotPlainData:
    """A class instance in a weights file: unpickling it could run code."""


# --- TMR: distilbert token states -----------------------------------------------------------------------------------


def test_distilbert_token_features(tmp_path):
    from transformers import BertTokenizer, DistilBertConfig, DistilBertModel

    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]))
    tokenizer = BertTokenizer(str(tmp_path / "vocab.txt"))
    torch.manual_seed(0)
    model = DistilBertModel(DistilBertConfig(vocab_size=len(WORDS) + 5, dim=16, hidden_dim=32, n_layers=1, n_heads=2,
                                             max_position_embeddings=32)).eval()
    folder = tmp_path / "distilbert"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    states, mask = DistilbertTokenFeatures(folder).encode(["a man walks", "the person turns left slowly"])
    assert states.shape == (2, 7, 16) and mask.sum(1).tolist() == [5, 7]  # [CLS] words [SEP]
    with torch.no_grad():
        expected = model(**tokenizer(["a man walks"], return_tensors="pt")).last_hidden_state[0]
    assert torch.allclose(states[0, :5], expected, atol=1e-5)
    with pytest.raises(PublishedAssetError, match=r"distilbert_path = .*distilbert-base-uncased"):
        DistilbertTokenFeatures(tmp_path / "nowhere")
