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


WORDS = "a man walks forward and jumps the person turns left slowly".split()


def t5_tokenizer():
    """A T5 fast tokenizer (Unigram over WORDS and single letters, ``</s>`` appended) -> (tokenizer, vocab size)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -3.0)]
    vocab += [("\u2581" + w, -2.0) for w in WORDS] + [(c, -5.0) for c in string.ascii_lowercase + ".,"]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                           extra_ids=0), len(vocab)


def write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))


def write_tiny_sentence_t5(folder: Path, d_model: int = 16, out: int = CLIP_DIM, seed: int = 0,
                           max_seq_length: int = 16):
    """The released sentence-t5-large folder layout (sentence-transformers) with a tiny random T5 (``d_model``) and
    a Dense ``d_model`` -> ``out`` -> (model, tokenizer, dense weight (out, d_model))."""
    from safetensors.torch import save_file
    from transformers import T5Config, T5EncoderModel

    tokenizer, vocab_size = t5_tokenizer()
    torch.manual_seed(seed)
    model = T5EncoderModel(T5Config(vocab_size=vocab_size, d_model=d_model, d_kv=4, d_ff=32, num_layers=1,
                                    num_heads=2, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_json(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
        {"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"}])
    write_json(folder / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False})
    write_json(folder / "1_Pooling" / "config.json", {
        "word_embedding_dimension": d_model, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False})
    write_json(folder / "2_Dense" / "config.json", {"in_features": d_model, "out_features": out, "bias": False,
                                                    "activation_function": "torch.nn.modules.linear.Identity"})
    dense = torch.randn(out, d_model)
    save_file({"linear.weight": dense}, folder / "2_Dense" / "model.safetensors")
    (folder / "3_Normalize").mkdir()
    return model, tokenizer, dense


def tiny_sentence_t5_folder(folder: Path, d_model: int = 16, out: int = CLIP_DIM, seed: int = 0) -> Path:
    """:func:`write_tiny_sentence_t5` -> the folder: the T5 MLD's text input is ``out``-d, the SPM's token states
    ``d_model``-d."""
    write_tiny_sentence_t5(folder, d_model, out, seed)
    return folder


def released_finetune_folder(root: Path, seed: int = 0) -> dict[str, str]:
    """A tiny bring-your-own folder for fine-tuning (paths relative to ``root``): the T5 MLD in MotionLCM's layout,
    sentence-t5 and an SPM checkpoint whose text width is the T5's ``d_model``."""
    from tests.core.published.released_keys import shared_spm_norm, spm

    (root / "checkpoints/mld_humanml").mkdir(parents=True, exist_ok=True)
    state = random_state(mld_vae(d=16, ff=32, layers=3) | mld_denoiser(d=16, ff=32, layers=3, text=CLIP_DIM), seed)
    torch.save(lightning_checkpoint(state), root / "checkpoints/mld_humanml/mld_humanml_v1.ckpt")
    tiny_sentence_t5_folder(root / "deps/sentence-t5-large", d_model=16, out=CLIP_DIM)
    (root / "checkpoints/spm").mkdir(parents=True, exist_ok=True)
    spm_state = shared_spm_norm(random_state(spm(d=16, ff=32, layers=3, text=16), seed + 1))
    torch.save({"state_dict": spm_state}, root / "checkpoints/spm/spm.pth")
    return {"checkpoint": "checkpoints/mld_humanml/mld_humanml_v1.ckpt", "text_encoder_path": "deps/sentence-t5-large",
            "spm": "checkpoints/spm/spm.pth"}


__all__ = ["T2M_TINY", "WORDS", "published_folders", "released_finetune_folder", "t5_tokenizer", "tagged",
           "tiny_clip_folder", "tiny_sentence_t5_folder", "write_json", "write_tiny_sentence_t5"]
