"""Batches of cached caption embeddings as tensors (the conditioning every model consumes)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from easytune.core.data.dataset import TextEmbeddings


@dataclass
class TextBatch:
    """Caption embeddings for a batch.

    Attributes:
        sentence: (B, E) float32 sentence embeddings (generators' condition).
        tokens: (B, L, E) float32 token embeddings, zero beyond ``token_lengths`` (reward model, evaluator).
        token_lengths: (B,) int64 valid tokens per caption.
        rows: (B,) int64 rows of the :class:`TextEmbeddings` they came from (-1 for the empty caption).
    """

    sentence: torch.Tensor
    tokens: torch.Tensor
    token_lengths: torch.Tensor
    rows: torch.Tensor

    def __len__(self) -> int:
        return int(self.sentence.shape[0])

    @classmethod
    def from_embeddings(cls, text: TextEmbeddings, rows, device: torch.device | str = "cpu") -> TextBatch:
        """Gather ``rows`` (array-like of ints) of ``text`` onto ``device``."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1:
            raise ValueError(f"rows must be 1-D, got shape {rows.shape}")
        if len(rows) and (rows.min() < 0 or rows.max() >= len(text)):
            raise IndexError(f"caption rows outside 0..{len(text) - 1}")
        max_len = int(text.token_lengths[rows].max()) if len(rows) else 1
        return cls(
            sentence=torch.as_tensor(text.sentence[rows], dtype=torch.float32, device=device),
            tokens=torch.as_tensor(text.tokens[rows, :max_len].astype(np.float32), device=device),
            token_lengths=torch.as_tensor(text.token_lengths[rows], dtype=torch.int64, device=device),
            rows=torch.as_tensor(rows, dtype=torch.int64, device=device),
        )

    def to(self, device: torch.device | str) -> TextBatch:
        return TextBatch(self.sentence.to(device), self.tokens.to(device), self.token_lengths.to(device),
                         self.rows.to(device))

    def index(self, idx) -> TextBatch:
        """Sub-batch (tensor or list of indices)."""
        return TextBatch(self.sentence[idx], self.tokens[idx], self.token_lengths[idx], self.rows[idx])

    def repeat(self, times: int) -> TextBatch:
        """The batch ``times`` times over along the batch axis (classifier-free guidance's two branches)."""
        return TextBatch(self.sentence.repeat(times, 1), self.tokens.repeat(times, 1, 1),
                         self.token_lengths.repeat(times), self.rows.repeat(times))

    def token_mask(self) -> torch.Tensor:
        """(B, L) bool, True on valid tokens."""
        return lengths_to_mask(self.token_lengths, self.tokens.shape[1])


def lengths_to_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """(B,) int lengths -> (B, T) bool mask, True on valid frames."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]
