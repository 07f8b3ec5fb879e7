"""CLIP text features from a local folder: a tiny random CLIP text model saved with save_pretrained."""

import json
import string

import pytest
import torch

from easytune.core.published.containers import PublishedAssetError
from easytune.core.published.text_encoders import ClipTextFeatures


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
