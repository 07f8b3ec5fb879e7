"""Text features of the released MLD models, from a local model folder (no download).

- ChenFengYe's CLIP MLD: CLIP ViT-L/14 ``get_text_features`` -- the pooled (end-of-text token) state through the text
  projection, 768-d, not normalised -- as one token (B, 1, 768); captions tokenised to CLIP's 77 tokens, padded and
  truncated (MLD mld/models/architectures/mld_clip.py; text_encoder.yaml ``last_hidden_state: false``). The
  unconditional input of classifier-free guidance is the feature of "".
  Folder: a transformers save of ``openai/clip-vit-large-patch14`` (config.json, model weights, tokenizer files).

The sentence-T5 encoder of MotionLCM / EasyTune (``sentence-t5-large``, normalised) is not implemented here yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from easytune.core.published.containers import PublishedAssetError

CLIP_CONTEXT = 77


def require_model_folder(folder: str | Path | None, parameter: str, what: str) -> Path:
    """``folder`` as a Path if it holds a ``config.json``; else one error naming ``parameter`` and what to put there."""
    if folder is None or not (Path(folder) / "config.json").is_file():
        raise PublishedAssetError(
            f"{parameter} = {str(folder)!r}: not a local model folder (no config.json). Put there {what}, saved with "
            f"save_pretrained (nothing is downloaded)")
    return Path(folder)


class ClipTextFeatures:
    """CLIP pooled projected text features (B, 1, projection_dim) from the folder ``clip_path``."""

    def __init__(self, clip_path: str | Path | None, device: torch.device | str = "cpu"):
        from transformers import AutoTokenizer, CLIPTextModelWithProjection

        folder = require_model_folder(clip_path, "clip_path", "openai/clip-vit-large-patch14 (text model with "
                                                               "projection and its tokenizer)")
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = CLIPTextModelWithProjection.from_pretrained(folder, local_files_only=True).to(device).eval()
        self.device = torch.device(device)

    @torch.no_grad()
    def encode(self, captions: Sequence[str]) -> torch.Tensor:
        enc = self.tokenizer(list(captions), padding="max_length", max_length=CLIP_CONTEXT, truncation=True,
                             return_tensors="pt").to(self.device)
        return self.model(input_ids=enc["input_ids"]).text_embeds[:, None].float()
