"""The frozen, differentiable reward R(x, t, c) = tau * cos(E_M(x, t), E_T(c)) (paper Eq. 4 / Eq. 12).

Per-sample output (B,): callers that need a scalar take the batch mean themselves, explicitly (the authors'
release used the per-sample reward as a scalar, METHOD.md sec. 7). Latent generators decode to normalised
features before calling. Scores use the latent means (no sampling).

The empty caption: the data pipeline's :class:`TextEmbeddings` need not contain "". Either encode "" with the
same MiniLM encoder as the data pipeline and pass ``TextBatch.from_embeddings(...)``, or use
:func:`empty_caption_batch`, which builds a caption of one all-zero token (the convention this module uses for
the reward sanity figures): the text encoder then sees only its own distribution tokens and the projection bias.
"""

from __future__ import annotations

import numpy as np
import torch

from easytune.core.data.text import TextBatch
from easytune.core.infra.checkpoint import build_from_checkpoint
from easytune.core.reward.retrieval_model import RetrievalModel

REWARD_KINDS = ("retrieval_model",)


def empty_caption_batch(batch_size: int = 1, dim: int = 384, device: torch.device | str = "cpu") -> TextBatch:
    """TextBatch of ``batch_size`` empty captions: one all-zero token each (rows = -1)."""
    return TextBatch(
        sentence=torch.zeros(batch_size, dim, device=device),
        tokens=torch.zeros(batch_size, 1, dim, device=device),
        token_lengths=torch.ones(batch_size, dtype=torch.int64, device=device),
        rows=torch.full((batch_size,), -1, dtype=torch.int64, device=device),
    )


class Reward:
    """Frozen reward on a :class:`RetrievalModel`: ``reward(features, lengths, text, t=None) -> (B,)``.

    ``Reward(model)`` sets ``requires_grad=False`` on every parameter and puts the model in eval mode; gradients
    still flow to ``features`` (reward backpropagation through the generator). ``t`` is a timestep of the
    1000-step training schedule; a noise-aware model saw t in [0, training.noise_t_max] (default 500) only, so
    larger t are extrapolation (score x0_hat with t=None there, METHOD.md sec. 2).
    """

    def __init__(self, model: RetrievalModel):
        if not isinstance(model, RetrievalModel):
            raise TypeError(f"Reward needs a RetrievalModel, got {type(model).__name__}")
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @classmethod
    def from_checkpoint(cls, ckpt: dict, device: torch.device | str = "cpu") -> Reward:
        """Rebuild from a ``retrieval_model`` checkpoint dict (the ``reward_model`` catalog entry)."""
        return cls(build_from_checkpoint(ckpt, device, allowed_kinds=REWARD_KINDS, source="reward_model"))

    @property
    def device(self) -> torch.device:
        return self.model.log_reward_scale.device

    @property
    def noise_aware(self) -> bool:
        return self.model.config.noise_aware

    @property
    def scale(self) -> float:
        """tau."""
        return float(self.model.reward_scale)

    def __call__(self, features: torch.Tensor, lengths: torch.Tensor, text: TextBatch,
                 t: torch.Tensor | None = None) -> torch.Tensor:
        """features (B, T, D) normalised, lengths (B,), text of B captions (or 1, broadcast), t (B,)|None -> (B,)."""
        b = features.shape[0]
        if len(text) not in (1, b):
            raise ValueError(f"text has {len(text)} captions for {b} motions (need {b} or 1)")
        self.model.eval()
        motion_mu, _ = self.model.encode_motion(features, lengths, t)  # (B, latent)
        text_mu, _ = self.model.encode_text(text.to(features.device))  # (B or 1, latent)
        cos = torch.nn.functional.cosine_similarity(motion_mu, text_mu.expand_as(motion_mu), dim=-1)  # (B,)
        return self.model.reward_scale * cos


@torch.no_grad()
def reward_sanity(reward: Reward, split, text, device: torch.device | str, seed: int = 0,
                  batch_size: int = 64) -> dict[str, float | int | str]:
    """Reward sanity on a split (acceptance 3): does R(x_gt, c) beat R(x_other, c)?

    For every sample i (caption c = its first caption) a seeded random sample j with ANOTHER content label is drawn
    (when the split has no labels: another normalised caption, ``other_by`` says which). Returns
    ``sanity_gt_beats_other_label`` = mean over samples of [R(x_i, c_i) > R(x_j, c_i)], the mean margin, and the same
    comparison with the empty caption (:func:`empty_caption_batch`; about 0.5 is expected: no text, no preference).
    """
    from easytune.core.reward.losses import caption_groups  # local: keeps this module's imports minimal

    rng = np.random.default_rng(seed)
    rows = split.first_caption_ids()
    by_label = (split.labels != "").all()
    keys = split.labels if by_label else caption_groups(text.captions)[rows].astype(str)
    others = np.zeros(len(split), np.int64)
    valid = np.zeros(len(split), bool)
    for i in range(len(split)):
        candidates = np.flatnonzero(keys != keys[i])
        if len(candidates):
            others[i] = rng.choice(candidates)
            valid[i] = True
    idx = np.flatnonzero(valid)
    gt, other, gt_empty, other_empty = [], [], [], []
    empty = empty_caption_batch(1, text.dim, device)
    for s in range(0, len(idx), batch_size):
        b = idx[s:s + batch_size]
        caps = TextBatch.from_embeddings(text, rows[b], device)
        for target, which, caption in ((gt, b, caps), (other, others[b], caps), (gt_empty, b, empty),
                                       (other_empty, others[b], empty)):
            max_len = int(split.lengths[which].max())
            x = torch.as_tensor(split.features[which, :max_len], device=device)  # (b, T, D)
            target.append(reward(x, torch.as_tensor(split.lengths[which], device=device), caption).cpu())
    if not len(idx):
        raise ValueError("reward sanity needs samples of at least two different labels/captions")
    gt_r, other_r = torch.cat(gt).numpy(), torch.cat(other).numpy()
    gte_r, othere_r = torch.cat(gt_empty).numpy(), torch.cat(other_empty).numpy()
    return {
        "sanity_gt_beats_other_label": float((gt_r > other_r).mean()),
        "sanity_mean_margin": float((gt_r - other_r).mean()),
        "sanity_mean_reward_gt": float(gt_r.mean()),
        "sanity_empty_caption_gt_beats_other": float((gte_r > othere_r).mean()),
        "sanity_empty_caption_mean_margin": float((gte_r - othere_r).mean()),
        "sanity_samples": int(len(idx)),
        "sanity_other_by": "label" if by_label else "caption",
    }
