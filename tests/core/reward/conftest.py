"""Tiny deterministic data for the reward tests: 4 content classes with distinct motion patterns and captions."""

import numpy as np
import pytest
import torch

from easytune.core.data.dataset import MotionSplit, TextEmbeddings
from easytune.core.reward.retrieval_model import RetrievalModel, RetrievalModelConfig

FEATURE_DIM = 8
TEXT_DIM = 16
CAPTIONS = ["a person walks.", "A person walks", "a person jumps.", "someone waves the hand.", "a person kicks.",
            "someone squats down."]
# caption row -> class: rows 0 and 1 are the same normalised caption
CAPTION_CLASS = [0, 0, 1, 2, 3, 3]


def make_text(seed: int = 0) -> TextEmbeddings:
    rng = np.random.default_rng(seed)
    u, length = len(CAPTIONS), 5
    base = rng.normal(size=(4, TEXT_DIM)).astype(np.float32)
    tokens = np.zeros((u, length, TEXT_DIM), np.float16)
    lengths = np.array([3, 3, 4, 5, 2, 4], np.int64)
    sentence = np.zeros((u, TEXT_DIM), np.float32)
    for i, cls in enumerate(CAPTION_CLASS):
        noise = rng.normal(scale=0.3, size=(lengths[i], TEXT_DIM))
        tokens[i, :lengths[i]] = base[cls] + noise
        s = base[cls] + 0.05 * rng.normal(size=TEXT_DIM) + (i == 5) * 0.9 * rng.normal(size=TEXT_DIM)
        sentence[i] = s / np.linalg.norm(s)
    return TextEmbeddings(np.array(CAPTIONS), sentence, tokens, lengths)


def make_split(n: int = 16, t_max: int = 20, seed: int = 0) -> MotionSplit:
    rng = np.random.default_rng(seed)
    caption_rows = np.array([0, 2, 3, 4] * (n // 4))[:n]
    classes = np.array([CAPTION_CLASS[r] for r in caption_rows])
    lengths = rng.integers(t_max // 2, t_max + 1, n).astype(np.int64)
    feats = np.zeros((n, t_max, FEATURE_DIM), np.float32)
    for i in range(n):
        frames = np.arange(lengths[i])[:, None]
        pattern = np.sin(frames * (0.3 + 0.4 * classes[i]) + np.arange(FEATURE_DIM)[None] * classes[i])
        feats[i, :lengths[i]] = pattern + 0.1 * rng.normal(size=(lengths[i], FEATURE_DIM))
    offsets = np.arange(n + 1, dtype=np.int64)
    labels = np.array([f"class{c}" for c in classes])
    ids = np.array([f"clip{i:03d}" for i in range(n)])
    return MotionSplit(ids, feats, lengths, offsets, caption_rows.astype(np.int64), labels)


def tiny_config(**overrides) -> RetrievalModelConfig:
    params = dict(feature_dim=FEATURE_DIM, text_dim=TEXT_DIM, latent_dim=16, d_model=16, ff_dim=32, num_heads=2,
                  num_layers=1, decoder_layers=1, dropout=0.0)
    params.update(overrides)
    return RetrievalModelConfig(**params)


@pytest.fixture
def text() -> TextEmbeddings:
    return make_text()


@pytest.fixture
def split() -> MotionSplit:
    return make_split()


@pytest.fixture
def model() -> RetrievalModel:
    torch.manual_seed(0)
    return RetrievalModel(tiny_config())


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs on one torch thread (fixture in tests/conftest.py)."""
