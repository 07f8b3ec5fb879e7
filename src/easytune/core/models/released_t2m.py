"""The standard text-to-motion evaluator's encoders (Guo et al. 2022), under the released key names and shapes of
``text_mot_match/model/finest.tar`` (PUBLISHED_ASSETS.md section 1; T2M networks/modules.py, MLD's copies):

- ``movement_encoder``: Conv1d(k4, s2, p1) -> Dropout(0.2) -> LeakyReLU(0.2), twice (``main.0``, ``main.3``),
  then ``out_net`` Linear: (B, T, 259) -> (B, T/4, 512).
- ``motion_encoder``: ``input_emb`` Linear -> bidirectional GRU from the learned ``hidden`` (2, 1, H) over the
  first ``m_lens`` steps -> [h_forward, h_backward] -> ``output_net`` (Linear, LayerNorm, LeakyReLU(0.2), Linear).
- ``text_encoder``: word vectors + ``pos_emb``(one-hot POS, 15) -> ``input_emb`` -> bidirectional GRU over
  ``cap_lens`` -> ``output_net`` as above.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence


class MovementConvEncoder(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, output_size: int):
        super().__init__()
        self.main = nn.Sequential(nn.Conv1d(input_size, hidden_size, 4, 2, 1), nn.Dropout(0.2), nn.LeakyReLU(0.2),
                                  nn.Conv1d(hidden_size, output_size, 4, 2, 1), nn.Dropout(0.2), nn.LeakyReLU(0.2))
        self.out_net = nn.Linear(output_size, output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, input_size) -> (B, T // 4, output_size)."""
        return self.out_net(self.main(x.transpose(1, 2)).transpose(1, 2))


class _BiGRUHead(nn.Module):
    def _init_head(self, input_size: int, hidden_size: int, output_size: int) -> None:
        self.input_emb = nn.Linear(input_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True, bidirectional=True)
        self.output_net = nn.Sequential(nn.Linear(2 * hidden_size, hidden_size), nn.LayerNorm(hidden_size),
                                        nn.LeakyReLU(0.2), nn.Linear(hidden_size, output_size))
        self.hidden = nn.Parameter(torch.randn(2, 1, hidden_size))

    def _run(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x (B, S, input) and lengths (B,) (any order; each >= 1) -> (B, output) in the input order."""
        if int(lengths.min()) < 1 or int(lengths.max()) > x.shape[1]:
            raise ValueError(f"lengths must be in [1, {x.shape[1]}], got {lengths.tolist()}")
        packed = pack_padded_sequence(self.input_emb(x), lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, last = self.gru(packed, self.hidden.expand(-1, x.shape[0], -1).contiguous())  # (2, B, H), input order
        return self.output_net(torch.cat([last[0], last[1]], dim=-1))


class MotionEncoderBiGRUCo(_BiGRUHead):
    def __init__(self, input_size: int, hidden_size: int, output_size: int):
        super().__init__()
        self._init_head(input_size, hidden_size, output_size)

    def forward(self, movements: torch.Tensor, m_lens: torch.Tensor) -> torch.Tensor:
        """movements (B, T/4, input), m_lens (B,) in units of 4 frames -> (B, output)."""
        return self._run(movements, m_lens)


class TextEncoderBiGRUCo(_BiGRUHead):
    def __init__(self, word_size: int, pos_size: int, hidden_size: int, output_size: int):
        super().__init__()
        self.pos_emb = nn.Linear(pos_size, word_size)
        self._init_head(word_size, hidden_size, output_size)

    def forward(self, word_embs: torch.Tensor, pos_onehot: torch.Tensor, cap_lens: torch.Tensor) -> torch.Tensor:
        """word_embs (B, L, 300), pos_onehot (B, L, 15), cap_lens (B,) -> (B, output)."""
        return self._run(word_embs + self.pos_emb(pos_onehot), cap_lens)
