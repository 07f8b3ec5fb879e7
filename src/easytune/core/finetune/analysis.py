"""Why step-aware fine-tuning: the two analyses of the paper, on any generator (no training involved).

* :func:`chain_jacobian_norms` (paper Fig. 3, App. B.1): along one trajectory, the norm of the one-step Jacobian
  d x_{t-1} / d x_t and of the chain product d x_0 / d x_t = prod_{s <= t} d pi(x_s)/d x_s, each applied to a
  random probe (vector-Jacobian products, ``||J^T u|| / ||u||`` with u ~ N(0, I)). The product's norm shrinks
  towards 0 for the early, noisy steps: their chain gradient is scaled away.
* :func:`noisy_clean_similarity` (paper Fig. 4, App. A.8): cosine similarity between each step's state and the
  final clean sample: the noisy state x_t (the sampler's space), the decoded one-step prediction x0_hat_t (features)
  and, when a motion embedding is given, the reward model's embedding of x0_hat_t.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from easytune.core.data.text import TextBatch


def _trajectory(generator, text: TextBatch, lengths: torch.Tensor, noise_generator, num_steps, guidance_scale,
                track_x: bool):
    n = generator.steps(num_steps)
    timesteps = generator.diffusion.timesteps(n)
    x_t, mask = generator.initial_noise(lengths, noise_generator)
    frame_mask = mask[..., None].to(x_t.dtype) if generator.vae is None else None
    if track_x:
        x_t = x_t.clone().requires_grad_(True)
    states, x0_hats = [], []
    for t in timesteps.tolist():
        states.append(x_t)
        out = generator.denoise(x_t, int(t), text, mask, guidance_scale=guidance_scale)
        x_prev, x0_hat = generator.diffusion.step(out, int(t), x_t, generator=noise_generator, num_steps=n)
        if frame_mask is not None:
            x_prev, x0_hat = x_prev * frame_mask, x0_hat * frame_mask
        x0_hats.append(x0_hat)
        x_t = x_prev
    return states, x0_hats, x_t, mask


def chain_jacobian_norms(generator, text: TextBatch, lengths: torch.Tensor, *, seed: int = 0,
                         num_steps: int | None = None, guidance_scale: float | None = None
                         ) -> dict[str, list[float]]:
    """Per step i (0 = noisiest): ``step`` = ||(d x_{t-1}/d x_t)^T u|| / ||u|| and ``chain`` =
    ||(d x_0/d x_t)^T u|| / ||u|| with a fixed Gaussian probe u (shape of x_0). Returns lists of length T."""
    requires = [p.requires_grad for p in generator.denoiser.parameters()]
    generator.denoiser.requires_grad_(False)  # only the state path matters here
    try:
        with torch.enable_grad():
            noise = torch.Generator().manual_seed(seed)
            states, _, x0, _ = _trajectory(generator, text, lengths, noise, num_steps, guidance_scale, True)
            probe_gen = torch.Generator().manual_seed(seed + 1)
            u = torch.randn(x0.shape, generator=probe_gen).to(x0.device, x0.dtype)  # (B, ...)
            chain = torch.autograd.grad(x0, states, grad_outputs=u, retain_graph=True, allow_unused=True)
            chain_norm = [0.0 if g is None else float(g.norm() / u.norm()) for g in chain]
            step_norm = []
            for i, x_in in enumerate(states):
                x_out = states[i + 1] if i + 1 < len(states) else x0
                g = torch.autograd.grad(x_out, x_in, grad_outputs=u, retain_graph=True, allow_unused=True)[0]
                step_norm.append(0.0 if g is None else float(g.norm() / u.norm()))
    finally:
        for p, r in zip(generator.denoiser.parameters(), requires, strict=True):
            p.requires_grad_(r)
    return {"step": step_norm, "chain": chain_norm}


@torch.no_grad()
def noisy_clean_similarity(generator, text: TextBatch, lengths: torch.Tensor, *, seed: int = 0,
                           num_steps: int | None = None, guidance_scale: float | None = None,
                           embed: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
                           ) -> dict[str, list[float]]:
    """Mean cosine similarity per step i between the step's state and the final sample.

    Returns ``noisy_state`` (x_t vs x_0, the sampler's space), ``x0_hat_features`` (decoded x0_hat_t vs the
    final features) and, with ``embed(features, lengths) -> (B, E)``, ``x0_hat_embedding``.
    """
    noise = torch.Generator().manual_seed(seed)
    states, x0_hats, x0, mask = _trajectory(generator, text, lengths, noise, num_steps, guidance_scale, False)
    final_feats = generator.decode(x0, mask)  # (B, T, D)

    def cos(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1).mean())

    out = {"noisy_state": [cos(s, x0) for s in states], "x0_hat_features": [], "x0_hat_embedding": []}
    final_emb = embed(final_feats, lengths) if embed is not None else None
    for x0_hat in x0_hats:
        feats = generator.decode(x0_hat, mask)
        out["x0_hat_features"].append(cos(feats, final_feats))
        if embed is not None:
            out["x0_hat_embedding"].append(cos(embed(feats, lengths), final_emb))
    if embed is None:
        del out["x0_hat_embedding"]
    return out
