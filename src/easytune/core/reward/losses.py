"""Losses of the retrieval model and of Self-refining Preference Learning (METHOD.md sec. 3).

- :func:`info_nce_loss`: symmetric InfoNCE over cosine similarities divided ONCE by the temperature (0.1), with
  near-duplicate negatives masked out.
- :func:`reconstruction_loss`: masked smooth-L1 between decoded and clean features.
- :func:`kl_to_standard_normal`: KL(N(mu, sigma) || N(0, I)), averaged over the batch.
- :func:`spl_loss`: KL(Q || P), P = softmax([R(x_w), R(x_l)]) of rewards that already carry tau (applied once).
"""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F

_NON_WORD = re.compile(r"[^a-z0-9]+")


def normalise_caption(caption: str) -> str:
    """Lower case, punctuation dropped, whitespace collapsed: 'A man walks.' == 'a man  walks'."""
    return _NON_WORD.sub(" ", caption.lower()).strip()


def caption_groups(captions) -> np.ndarray:
    """(U,) captions -> (U,) int64 group id; equal ids = identical normalised captions."""
    seen: dict[str, int] = {}
    return np.asarray([seen.setdefault(normalise_caption(str(c)), len(seen)) for c in captions], dtype=np.int64)


def near_duplicate_mask(sentence: torch.Tensor, groups: torch.Tensor | None = None,
                        threshold: float | None = 0.95) -> torch.Tensor:
    """(B, E) sentence embeddings [+ (B,) caption groups] -> (B, B) bool, True where captions i, j are duplicates.

    Duplicates: cosine of the sentence embeddings above ``threshold`` (None disables it) or the same normalised
    caption. The diagonal is True.
    """
    b = sentence.shape[0]
    mask = torch.eye(b, dtype=torch.bool, device=sentence.device)
    if threshold is not None:
        s = F.normalize(sentence.float(), dim=-1)
        mask |= (s @ s.T) > threshold
    if groups is not None:
        mask |= groups[:, None] == groups[None, :]
    return mask


def info_nce_loss(motion_emb: torch.Tensor, text_emb: torch.Tensor, temperature: float = 0.1,
                  duplicate_mask: torch.Tensor | None = None, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE; motion_emb, text_emb (B, L); pair i is (motion i, text i).

    logits = cos / temperature (the temperature is applied exactly once). Off-diagonal entries of
    ``duplicate_mask`` (B, B) are removed from the negatives of both directions. ``weights`` (B,) scale query i's
    text->motion row and motion->text column terms; the sum is divided by B (all ones = the plain mean).
    """
    m = F.normalize(motion_emb, dim=-1)
    c = F.normalize(text_emb, dim=-1)
    logits = c @ m.T / temperature  # (B, B) text x motion
    if duplicate_mask is not None:
        eye = torch.eye(len(logits), dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(duplicate_mask & ~eye, float("-inf"))
    target = torch.arange(len(logits), device=logits.device)
    if weights is None:
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    per_query = F.cross_entropy(logits, target, reduction="none") + F.cross_entropy(logits.T, target, reduction="none")
    return 0.5 * (per_query * weights).sum() / len(logits)


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                        weights: torch.Tensor | None = None) -> torch.Tensor:
    """Smooth-L1 over valid frames; pred, target (B, T, D), mask (B, T) bool, weights (B,) | None -> scalar
    (divided by all valid frames of the batch, weighted or not)."""
    per_frame = F.smooth_l1_loss(pred, target, reduction="none").mean(-1) * mask  # (B, T)
    if weights is not None:
        per_frame = per_frame * weights[:, None]
    return per_frame.sum() / mask.sum().clamp_min(1)


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over latent dims, mean over the batch; mu, logvar (B, L),
    weights (B,) | None (weighted sum / B)."""
    per_sample = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)  # (B,)
    return per_sample.mean() if weights is None else (per_sample * weights).sum() / len(per_sample)


def spl_loss(reward_winner: torch.Tensor, reward_loser: torch.Tensor, has_preference: torch.Tensor,
             reduction: str = "mean") -> torch.Tensor:
    """SPL preference loss KL(Q || P) (paper Eqs. 15-17, Algorithm 2), mean over the batch or per pair.

    Args:
        reward_winner, reward_loser: (B,) rewards tau * cos (the temperature is already in them: do not divide again).
        has_preference: (B,) bool; Q = (1, 0) where True, (0.5, 0.5) otherwise.
        reduction: "mean" -> scalar, "none" -> (B,).
    """
    log_p = torch.log_softmax(torch.stack([reward_winner, reward_loser], dim=-1), dim=-1)  # (B, 2)
    pref = has_preference.to(log_p.dtype)[:, None]  # (B, 1)
    q = pref * torch.tensor([1.0, 0.0], device=log_p.device) + (1 - pref) * 0.5  # (B, 2)
    log_q = torch.log(q.clamp_min(1e-12))
    per_pair = (torch.where(q > 0, q * (log_q - log_p), torch.zeros_like(q))).sum(-1)  # (B,)
    return per_pair if reduction == "none" else per_pair.mean()
