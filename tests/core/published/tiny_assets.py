"""A tiny bring-your-own folder in the released layouts (MLD's ``deps/`` and ``checkpoints/``, HumanML3D's
``texts/`` and ``Mean.npy``/``Std.npy``), random weights, for the evaluation tests."""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import torch

from tests.core.published.released_keys import lightning_checkpoint, mld_denoiser, mld_vae, random_state
from tests.core.published.test_t2m_evaluator import TINY as T2M_TINY
from tests.core.published.test_t2m_evaluator import _finest, _glove

CLIP_DIM = 12


def tiny_clip_folder(folder: Path, projection_dim: int = CLIP_DIM) -> Path:
    """A random CLIP text model with projection and a character tokenizer, saved with save_pretrained."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = list(string.ascii_lowercase) + list(string.digits) + list(".,'!")
    vocab = {c: i for i, c in enumerate(chars)} | {c + "</w>": len(chars) + i for i, c in enumerate(chars)}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    eos = vocab["<|endoftext|>"]
    config = CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                            num_attention_heads=2, max_position_embeddings=77, projection_dim=projection_dim,
                            eos_token_id=eos, bos_token_id=vocab["<|startoftext|>"], pad_token_id=eos)
    torch.manual_seed(0)
    CLIPTextModelWithProjection(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tagged(caption: str) -> str:
    """A word/POS token field for the synthetic captions ("A person does action 1 in style 2.")."""
    tags = {"a": "DET", "person": "NOUN", "does": "VERB", "action": "NOUN", "in": "ADP", "style": "NOUN"}
    words = caption.lower().rstrip(".").split()
    return " ".join(f"{'do' if w == 'does' else w}/{tags.get(w, 'NUM')}" for w in words)


def published_folders(tmp_path: Path, captions, dim: int = 263) -> tuple[Path, Path]:
    """(published root in MLD's layout, HumanML3D folder with texts/ tagging ``captions`` and Mean/Std)."""
    root, data = tmp_path / "published", tmp_path / "HumanML3D"
    t2m = root / "deps/t2m/t2m"
    (t2m / "text_mot_match/model").mkdir(parents=True)
    _finest(t2m / "text_mot_match/model")
    rng = np.random.default_rng(5)
    (t2m / "Comp_v6_KLD01/meta").mkdir(parents=True)
    np.save(t2m / "Comp_v6_KLD01/meta/mean.npy", rng.normal(size=dim).astype(np.float32))
    np.save(t2m / "Comp_v6_KLD01/meta/std.npy", rng.uniform(0.5, 2.0, size=dim).astype(np.float32))
    (root / "deps/glove").mkdir(parents=True)
    _glove(root / "deps/glove", words=("sos", "eos", "unk", "a", "person", "do", "action", "in", "style", "0", "1"))
    (root / "checkpoints/mld_humanml3d_checkpoint").mkdir(parents=True)
    state = random_state(mld_vae(d=16, ff=32, layers=3) | mld_denoiser(d=16, ff=32, layers=3, text=CLIP_DIM))
    torch.save(lightning_checkpoint(state), root / "checkpoints/mld_humanml3d_checkpoint/mld.ckpt")
    tiny_clip_folder(root / "deps/clip-vit-large-patch14")
    (data / "texts").mkdir(parents=True)
    for i, caption in enumerate(captions):
        (data / "texts" / f"{i:06d}.txt").write_text(f"{caption}#{tagged(caption)}#0.0#0.0\nuntagged line\n")
    np.save(data / "Mean.npy", rng.normal(size=dim).astype(np.float32))
    np.save(data / "Std.npy", rng.uniform(0.5, 2.0, size=dim).astype(np.float32))
    return root, data


__all__ = ["T2M_TINY", "published_folders", "tiny_clip_folder", "tagged"]
