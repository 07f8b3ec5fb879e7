"""The standard T2M evaluator (Guo et al. 2022) from its released files: encoders, GloVe words, caption tokens,
motion renormalisation.

Files (PUBLISHED_ASSETS.md section 1; T2M networks/evaluator_wrapper.py, utils/word_vectorizer.py, data/dataset.py):

- ``checkpoints/t2m/text_mot_match/model/finest.tar``: a torch dict with ``text_encoder``, ``motion_encoder``,
  ``movement_encoder`` state dicts (also ``opt_*``, ``epoch``, ``iter``, unused). Read with ``weights_only=True``.
- ``glove/our_vab_data.npy`` (V, 300) float, ``our_vab_words.pkl`` (list of V words), ``our_vab_idx.pkl``
  (dict word -> row); the pickles are read with an allow-list unpickler (plain lists/dicts/strings/ints only).
- ``checkpoints/t2m/Comp_v6_KLD01/meta/{mean,std}.npy``: the evaluator's normalisation (not the dataset's Mean/Std).

Captions are HumanML3D ``word/POS`` tokens (the second ``#`` field of ``texts/<id>.txt``): cropped to 20, wrapped in
``sos/OTHER`` ... ``eos/OTHER``, padded with ``unk/OTHER`` to 22; a word of a VIP list takes that list's class, an
unknown word becomes ``unk`` with class OTHER. A free prompt has no tags: it would need spaCy ``en_core_web_sm``
(lemmatise NOUN/VERB except "left", keep alphabetic tokens), which the project does not include.

Motions: generated features are de-normalised with the generator's Mean/Std, re-normalised with the evaluator's;
the encoder sees ``features[..., :-4]`` (no foot contacts) and lengths ``m_lens // 4``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from easytune.core.models.released_t2m import MotionEncoderBiGRUCo, MovementConvEncoder, TextEncoderBiGRUCo
from easytune.core.published.containers import (
    PublishedAssetError,
    load_plain_pickle,
    load_tensor_file,
    load_weights,
    shape_of,
    tensor_dict,
)

POS_CLASSES = ("VERB", "NOUN", "DET", "ADP", "NUM", "AUX", "PRON", "ADJ", "ADV", "Loc_VIP", "Body_VIP", "Obj_VIP",
               "Act_VIP", "Desc_VIP", "OTHER")
VIP_WORDS: dict[str, tuple[str, ...]] = {
    "Loc_VIP": ("left", "right", "clockwise", "counterclockwise", "anticlockwise", "forward", "back", "backward",
                "up", "down", "straight", "curve"),
    "Body_VIP": ("arm", "chin", "foot", "feet", "face", "hand", "mouth", "leg", "waist", "eye", "knee", "shoulder",
                 "thigh"),
    "Obj_VIP": ("stair", "dumbbell", "chair", "window", "floor", "car", "ball", "handrail", "baseball",
                "basketball"),
    "Act_VIP": ("walk", "run", "swing", "pick", "bring", "kick", "put", "squat", "throw", "hop", "dance", "jump",
                "turn", "stumble", "stop", "sit", "lift", "lower", "raise", "wash", "stand", "kneel", "stroll",
                "rub", "bend", "balance", "flap", "jog", "shuffle", "lean", "rotate", "spin", "spread", "climb"),
    "Desc_VIP": ("slowly", "carefully", "fast", "careful", "slow", "quickly", "happy", "angry", "sad", "happily",
                 "angrily", "sadly"),
}
MAX_TEXT_LEN = 20
UNIT_LENGTH = 4
TAGGER = "spaCy en_core_web_sm"


class GloVe:
    """Word vectors of the evaluator: ``vector(word)`` (300,) float32; ``unk`` must be in the vocabulary."""

    def __init__(self, vectors: np.ndarray, words: Sequence[str], index: Mapping[str, int], source: str = "GloVe"):
        if vectors.ndim != 2:
            raise PublishedAssetError(f"{source}: vectors of shape {list(vectors.shape)}, expected (V, dim)")
        self.dim = vectors.shape[1]
        self.word2vec = {}
        for w in words:
            if w not in index or not 0 <= index[w] < len(vectors):
                raise PublishedAssetError(f"{source}: word {w!r} has no valid row in the index")
            self.word2vec[w] = vectors[index[w]].astype(np.float32)
        for needed in ("sos", "eos", "unk"):
            if needed not in self.word2vec:
                raise PublishedAssetError(f"{source}: the vocabulary has no {needed!r}")

    def __contains__(self, word: str) -> bool:
        return word in self.word2vec


def load_glove(folder: str | Path, prefix: str = "our_vab") -> GloVe:
    """``<prefix>_data.npy`` (np.load, no pickle), ``<prefix>_words.pkl`` and ``<prefix>_idx.pkl`` (allow-list)."""
    folder = Path(folder)
    data_path = folder / f"{prefix}_data.npy"
    if not data_path.is_file():
        raise PublishedAssetError(f"{data_path}: no such file (the GloVe vectors of the T2M evaluator)")
    try:
        vectors = np.load(data_path, allow_pickle=False)
    except ValueError as exc:
        raise PublishedAssetError(f"{data_path}: not a plain numeric array ({exc})") from None
    words = load_plain_pickle(folder / f"{prefix}_words.pkl", "a list of words")
    index = load_plain_pickle(folder / f"{prefix}_idx.pkl", "a dict word -> row")
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise PublishedAssetError(f"{folder / f'{prefix}_words.pkl'}: expected a list of strings")
    if not isinstance(index, dict) or not all(isinstance(k, str) and isinstance(v, int) for k, v in index.items()):
        raise PublishedAssetError(f"{folder / f'{prefix}_idx.pkl'}: expected a dict of string -> int")
    return GloVe(vectors, words, index, source=str(folder))


def caption_tokens(token_field: str) -> list[str]:
    """The ``word/POS`` tokens of a HumanML3D caption line's token field; a field without real POS tags (plain
    text, or only ``/X`` placeholders) is refused, naming the tagger it would need."""
    tokens = token_field.split()
    if not tokens or any(t.count("/") != 1 for t in tokens) or all(t.endswith("/X") for t in tokens):
        raise PublishedAssetError(
            f"caption tokens {token_field[:60]!r} are not HumanML3D word/POS tags; the evaluator's text input needs "
            f"them (the texts/<id>.txt token field). A free prompt would need a POS tagger and lemmatiser "
            f"({TAGGER}), which the project does not include")
    return tokens


def encode_tokens(tokens: Sequence[str], glove: GloVe) -> tuple[np.ndarray, np.ndarray, int]:
    """word/POS tokens -> word vectors (22, 300), POS one-hots (22, 15), sentence length (with sos/eos)."""
    tokens = ["sos/OTHER", *list(tokens)[:MAX_TEXT_LEN], "eos/OTHER"]
    length = len(tokens)
    tokens += ["unk/OTHER"] * (MAX_TEXT_LEN + 2 - length)
    words = np.zeros((len(tokens), glove.dim), dtype=np.float32)
    pos = np.zeros((len(tokens), len(POS_CLASSES)), dtype=np.float32)
    for i, token in enumerate(tokens):
        word, tag = token.split("/")
        if word in glove:
            words[i] = glove.word2vec[word]
            tag = next((vip for vip, listed in VIP_WORDS.items() if word in listed), tag)
        else:
            words[i], tag = glove.word2vec["unk"], "OTHER"
        pos[i, POS_CLASSES.index(tag) if tag in POS_CLASSES else POS_CLASSES.index("OTHER")] = 1.0
    return words, pos, length


def renormalise(features: np.ndarray | torch.Tensor, mean: np.ndarray, std: np.ndarray, eval_mean: np.ndarray,
                eval_std: np.ndarray):
    """Features normalised with the generator's (mean, std) -> normalised with the evaluator's statistics."""
    if isinstance(features, torch.Tensor):
        t = lambda a: torch.as_tensor(a, dtype=features.dtype, device=features.device)  # noqa: E731
        return (features * t(std) + t(mean) - t(eval_mean)) / t(eval_std)
    return (features * std + mean - eval_mean) / eval_std


@dataclass
class T2MEvaluator:
    """The three released encoders (eval mode). Embeddings come back in the input order."""

    text_encoder: TextEncoderBiGRUCo
    motion_encoder: MotionEncoderBiGRUCo
    movement_encoder: MovementConvEncoder

    @torch.no_grad()
    def embed_text(self, word_embs: torch.Tensor, pos_onehot: torch.Tensor, cap_lens: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(word_embs, pos_onehot, cap_lens)

    @torch.no_grad()
    def embed_motion(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """features (B, T, 263) in the evaluator's normalisation, lengths (B,) frames -> (B, 512)."""
        movements = self.movement_encoder(features[..., :-4])
        return self.motion_encoder(movements, torch.div(lengths, UNIT_LENGTH, rounding_mode="floor"))


def load_t2m_evaluator(path: str | Path) -> T2MEvaluator:
    """Rebuild the encoders from ``finest.tar`` (sizes read off the weights)."""
    path = Path(path)
    blob = load_tensor_file(path, "the T2M evaluator's finest.tar")
    if not isinstance(blob, dict):
        raise PublishedAssetError(f"{path}: a {type(blob).__name__}, not the evaluator's dict")
    missing = [k for k in ("text_encoder", "motion_encoder", "movement_encoder") if k not in blob]
    if missing:
        raise PublishedAssetError(f"{path}: missing entr{'y' if len(missing) == 1 else 'ies'} {missing}")
    parts = {k: tensor_dict(blob[k], path, k) for k in ("text_encoder", "motion_encoder", "movement_encoder")}
    mv = parts["movement_encoder"]
    hidden, feats, _ = shape_of(mv, "main.0.weight", f"{path} movement_encoder", 3)
    out = shape_of(mv, "main.3.weight", f"{path} movement_encoder", 3)[0]
    movement = MovementConvEncoder(feats, hidden, out)
    mo = parts["motion_encoder"]
    m_hidden, m_in = shape_of(mo, "input_emb.weight", f"{path} motion_encoder", 2)
    motion = MotionEncoderBiGRUCo(m_in, m_hidden, shape_of(mo, "output_net.3.weight", f"{path} motion_encoder", 2)[0])
    te = parts["text_encoder"]
    word = shape_of(te, "pos_emb.weight", f"{path} text_encoder", 2)[0]
    pos = len(POS_CLASSES)  # fixed by the format: the one-hot POS classes
    t_hidden = shape_of(te, "input_emb.weight", f"{path} text_encoder", 2)[0]
    text = TextEncoderBiGRUCo(word, pos, t_hidden, shape_of(te, "output_net.3.weight", f"{path} text_encoder", 2)[0])
    for name, module in (("text_encoder", text), ("motion_encoder", motion), ("movement_encoder", movement)):
        load_weights(module, parts[name], path, prefix=f"{name}.")
    return T2MEvaluator(text.eval(), motion.eval(), movement.eval())
