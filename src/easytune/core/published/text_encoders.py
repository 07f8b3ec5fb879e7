"""Text features of the released models (MLD, MotionLCM, MDM, the SPM and TMR rewards), from a local model folder
(no download).

- ChenFengYe's CLIP MLD: CLIP ViT-L/14 ``get_text_features`` -- the pooled (end-of-text token) state through the text
  projection, 768-d, not normalised -- as one token (B, 1, 768); captions tokenised to CLIP's 77 tokens, padded and
  truncated (MLD mld/models/architectures/mld_clip.py; text_encoder.yaml ``last_hidden_state: false``). The
  unconditional input of classifier-free guidance is the feature of "".
  Folder: a transformers save of ``openai/clip-vit-large-patch14`` (config.json, model weights, tokenizer files).
- MotionLCM v1 / EasyTune's MLD and EasyTune's SPM reward: ``sentence-transformers/sentence-t5-large`` in the
  sentence-transformers layout (T5 encoder -> mean pooling over the attention mask -> ``2_Dense`` 1024 -> 768, no
  bias, identity -> ``Normalize``); the MLD text input is the normalised ``sentence_embedding`` as one token
  (B, 1, 768) (ET mld/models/architectures/mld_clip.py:67-69); the SPM reward's text input is the T5 encoder's token
  states (B, L, 1024) with their attention mask (ET GradGuidance/spm.py:85-93, ``token_embeddings``). Computed here
  with transformers alone (no sentence-transformers import, nothing in ``modules.json`` is executed); captions are
  stripped, padded to the batch's longest and cut to ``max_seq_length`` (``sentence_bert_config.json``) as
  sentence-transformers does. Unconditional input: the features of "".
- MDM: CLIP ViT-B/32 ``encode_text`` (512-d, projected, not normalised), captions cut to 20 tokens (context 22) and
  zero-padded to 77 (MDM model/mdm.py ``encode_text``; PUBLISHED_ASSETS.md MDM). MDM computes it in float16 on GPU;
  here float32. MDM's unconditional branch is a *zero* feature (``mask_cond``), not the features of "": use
  ``ReleasedMDM(..., drop_text=...)``.
- TMR: distilbert-base-uncased token states (B, L, 768) and their mask, padded to the batch's longest (TMR
  src/model/text_encoder.py:50-66).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from easytune.core.published.containers import PublishedAssetError, load_tensor_file, load_weights, tensor_dict

CLIP_CONTEXT = 77
MDM_CLIP_CONTEXT = 22  # MDM model/mdm.py encode_text: 20 tokens + start + end, then zero-padded to 77


def require_model_folder(folder: str | Path | None, parameter: str, what: str) -> Path:
    """``folder`` as a Path if it holds a ``config.json``; else one error naming ``parameter`` and what to put there."""
    if folder is None or not (Path(folder) / "config.json").is_file():
        raise PublishedAssetError(
            f"{parameter} = {str(folder)!r}: not a local model folder (no config.json). Put there {what}, saved with "
            f"save_pretrained (nothing is downloaded)")
    return Path(folder)


class ClipTextFeatures:
    """CLIP pooled projected text features (B, 1, projection_dim) from the folder ``clip_path``."""

    #: what the folder must hold (named in the error for a missing folder)
    WHAT = "openai/clip-vit-large-patch14 (text model with projection and its tokenizer)"

    def __init__(self, clip_path: str | Path | None, device: torch.device | str = "cpu"):
        from transformers import AutoTokenizer, CLIPTextModelWithProjection

        folder = require_model_folder(clip_path, "clip_path", self.WHAT)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = CLIPTextModelWithProjection.from_pretrained(folder, local_files_only=True).to(device).eval()
        self.device = torch.device(device)

    @torch.no_grad()
    def encode(self, captions: Sequence[str]) -> torch.Tensor:
        enc = self.tokenizer(list(captions), padding="max_length", max_length=CLIP_CONTEXT, truncation=True,
                             return_tensors="pt").to(self.device)
        return self.model(input_ids=enc["input_ids"]).text_embeds[:, None].float()


class MDMClipTextFeatures(ClipTextFeatures):
    """MDM's CLIP ViT-B/32 text features (B, 512) from the folder ``clip_path``: ``encode_text`` of the caption cut to
    20 tokens (context 22, end token kept) and zero-padded to 77. CLIP attends causally, so the padding does not change
    the end-token state that is pooled."""

    WHAT = "openai/clip-vit-base-patch32 (text model with projection and its tokenizer)"

    @torch.no_grad()
    def encode(self, captions: Sequence[str]) -> torch.Tensor:
        ids = self.tokenizer(list(captions), padding="max_length", max_length=MDM_CLIP_CONTEXT, truncation=True,
                             return_tensors="pt")["input_ids"]
        ids = nn.functional.pad(ids, (0, CLIP_CONTEXT - MDM_CLIP_CONTEXT)).to(self.device)  # zeros, as MDM
        return self.model(input_ids=ids).text_embeds.float()


#: the sentence-transformers modules of sentence-t5, in order (its ``modules.json``)
SENTENCE_T5_MODULES = ("Transformer", "Pooling", "Dense", "Normalize")
_DENSE_ACTIVATIONS = {"torch.nn.modules.linear.Identity": nn.Identity, "torch.nn.modules.activation.Tanh": nn.Tanh}
_T5_FOLDER = ("sentence-transformers/sentence-t5-large, the whole sentence-transformers folder (config.json, model "
              "weights, tokenizer files, modules.json, sentence_bert_config.json, 1_Pooling/, 2_Dense/)")


def _json(path: Path, parameter: str) -> Any:
    if not path.is_file():
        raise PublishedAssetError(f"{path}: no such file; {parameter} must hold {_T5_FOLDER}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PublishedAssetError(f"{path}: not JSON ({exc})") from None


class _Dense(nn.Module):
    """sentence-transformers ``Dense``: ``linear`` then the activation (keys ``linear.weight`` [out, in])."""

    def __init__(self, config: dict, path: Path):
        super().__init__()
        try:
            self.linear = nn.Linear(int(config["in_features"]), int(config["out_features"]),
                                    bias=bool(config.get("bias", True)))
        except (KeyError, TypeError, ValueError) as exc:
            raise PublishedAssetError(f"{path}: no valid in_features / out_features ({exc})") from None
        activation = config.get("activation_function", "torch.nn.modules.linear.Identity")
        if activation not in _DENSE_ACTIVATIONS:
            raise PublishedAssetError(f"{path}: activation_function {activation!r}; sentence-t5 uses "
                                      f"{sorted(_DENSE_ACTIVATIONS)}")
        self.activation = _DENSE_ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.linear(x))


def _load_dense(folder: Path) -> _Dense:
    dense = _Dense(_json(folder / "config.json", "t5_path"), folder / "config.json")
    if (folder / "model.safetensors").is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = folder / "model.safetensors"
        try:
            state = load_file(path)
        except (SafetensorError, OSError) as exc:
            raise PublishedAssetError(f"{path}: not readable as safetensors ({exc})") from None
    else:
        path = folder / "pytorch_model.bin"
        state = tensor_dict(load_tensor_file(path, "the Dense weights of sentence-t5"), path, "Dense weights")
    load_weights(dense, state, path)
    return dense.eval()


class SentenceT5Features:
    """sentence-t5 from the sentence-transformers folder ``t5_path``: normalised sentence embeddings (MLD text input)
    and T5 token states (SPM reward text input)."""

    def __init__(self, t5_path: str | Path | None, device: torch.device | str = "cpu"):
        from transformers import AutoTokenizer, T5EncoderModel

        folder = require_model_folder(t5_path, "t5_path", _T5_FOLDER)
        modules = _json(folder / "modules.json", "t5_path")
        kinds = tuple(str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules) if isinstance(modules, list) else ()
        if kinds != SENTENCE_T5_MODULES or modules[0].get("path", "") != "":
            raise PublishedAssetError(f"{folder / 'modules.json'}: modules {list(kinds)}; sentence-t5 is "
                                      f"{list(SENTENCE_T5_MODULES)} with the transformer at the folder's root")
        pooling_path = folder / modules[1]["path"] / "config.json"
        pooling = _json(pooling_path, "t5_path")
        modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode_") and v is True)
        if modes != ["pooling_mode_mean_tokens"] and pooling.get("pooling_mode") != "mean":
            raise PublishedAssetError(f"{pooling_path}: pooling {modes}; sentence-t5 uses mean pooling only")
        settings = _json(folder / "sentence_bert_config.json", "t5_path") if (
            folder / "sentence_bert_config.json").is_file() else {}
        self.max_seq_length = settings.get("max_seq_length")
        self.do_lower_case = bool(settings.get("do_lower_case", False))
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = T5EncoderModel.from_pretrained(folder, local_files_only=True).to(device).eval()
        self.dense = _load_dense(folder / modules[2]["path"]).to(device)
        self.device = torch.device(device)

    @torch.no_grad()
    def token_states(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """captions -> T5 encoder token states (B, L, d_model) and their mask (B, L) bool (True = a token), L the
        longest tokenised caption (end token included) up to ``max_seq_length``."""
        texts = [str(c).strip() for c in captions]
        texts = [t.lower() for t in texts] if self.do_lower_case else texts
        extra = {"max_length": self.max_seq_length} if self.max_seq_length else {}
        enc = self.tokenizer(texts, padding=True, truncation="longest_first", return_tensors="pt", **extra)
        enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        states = self.model(**enc).last_hidden_state.float()
        return states, enc["attention_mask"].bool()

    @torch.no_grad()
    def sentence_embedding(self, captions: Sequence[str]) -> torch.Tensor:
        """captions -> normalised sentence embeddings (B, out_features) (768 for sentence-t5-large)."""
        states, mask = self.token_states(captions)
        weights = mask[..., None].to(states.dtype)
        pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)  # (B, d_model)
        return nn.functional.normalize(self.dense(pooled), p=2, dim=1)

    def encode(self, captions: Sequence[str]) -> torch.Tensor:
        """The MLD text input: ``sentence_embedding`` as one token (B, 1, out_features)."""
        return self.sentence_embedding(captions)[:, None]


class DistilbertTokenFeatures:
    """TMR's text input: token states (B, L, hidden) and mask (B, L) bool of distilbert-base-uncased in the folder
    ``distilbert_path``, captions padded to the batch's longest (special tokens included)."""

    def __init__(self, distilbert_path: str | Path | None, device: torch.device | str = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        folder = require_model_folder(distilbert_path, "distilbert_path",
                                      "distilbert-base-uncased (model and tokenizer)")
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True).to(device).eval()
        self.device = torch.device(device)

    @torch.no_grad()
    def encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(list(captions), padding=True, return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        return self.model(**enc).last_hidden_state.float(), enc["attention_mask"].bool()
