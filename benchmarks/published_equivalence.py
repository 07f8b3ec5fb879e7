"""Equivalence of the project's importers with the released Python modules (run by hand; not part of the tests).

    python benchmarks/published_equivalence.py --mld /path/to/motion-latent-diffusion \
        [--t2m /path/to/text-to-motion] [--mdm /path/to/motion-diffusion-model]

For each folder given, the released modules are imported from it (the folder is put first on ``sys.path``), built on
CPU with random weights at the published sizes, saved in the released container format (Lightning ``state_dict``,
T2M ``finest.tar``, MDM plain state dict + ``args.json``), loaded back through the project's importers
(:mod:`easytune.core.published`), and run on the same inputs. The largest absolute output difference is reported for

- ``--mld`` (ChenFengYe/motion-latent-diffusion): the denoiser (epsilon), the VAE encoder (mu) and decoder, and the
  evaluator encoders that MLD ships (``t2m_textenc``, ``t2m_motionenc``);
- ``--t2m`` (EricGuo5513/text-to-motion): the original evaluator encoders (``networks/modules.py``);
- ``--mdm`` (GuyTevet/motion-diffusion-model): the x0-predicting transformer with and without the text (``clip``,
  ``model.rotation2xyz`` and BERT are stubbed: they load files at construction and are not part of the denoiser).

Needs torch and numpy only (the released modules' own imports: see docs PUBLISHED_ASSETS.md section 3).
Exit status 1 when a difference exceeds ``--tolerance`` (default 1e-4).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Every parameter drawn at random (learned PEs and LayerNorms included), so no weight is left at a default."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            scale = 1.0 if name.endswith("weight") and p.dim() == 1 else 0.0  # LayerNorm gains around 1
            p.copy_(torch.randn(p.shape, generator=g) * 0.05 + scale)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return float((a.float() - b.float()).abs().max())


def _import_from(folder: str, *modules: str):
    sys.path.insert(0, str(Path(folder).resolve()))
    try:
        return [__import__(m, fromlist=["_"]) for m in modules]
    finally:
        sys.path.pop(0)


# ------------------------------------------------------------------------------------------------ MLD
def check_mld(folder: str, seed: int) -> dict[str, float]:
    from easytune.core.published.mld import import_mld
    from easytune.core.published.t2m_evaluator import load_t2m_evaluator

    vae_mod, den_mod, textenc, motionenc = _import_from(
        folder, "mld.models.architectures.mld_vae", "mld.models.architectures.mld_denoiser",
        "mld.models.architectures.t2m_textenc", "mld.models.architectures.t2m_motionenc")
    ablation = types.SimpleNamespace(MLP_DIST=False, PE_TYPE="mld", DIFF_PE_TYPE="mld", SKIP_CONNECT=True,
                                     VAE_TYPE="mld")
    torch.manual_seed(seed)
    vae = vae_mod.MldVae(ablation, nfeats=263, latent_dim=[1, 256], ff_size=1024, num_layers=9, num_heads=4,
                         dropout=0.1, arch="encoder_decoder", normalize_before=False, activation="gelu",
                         position_embedding="learned").eval()
    den = den_mod.MldDenoiser(ablation, nfeats=263, condition="text", latent_dim=[1, 256], ff_size=1024,
                              num_layers=9, num_heads=4, dropout=0.1, normalize_before=False, activation="gelu",
                              flip_sin_to_cos=True, return_intermediate_dec=False, position_embedding="learned",
                              arch="trans_enc", freq_shift=0, guidance_scale=7.5, guidance_uncondp=0.1,
                              text_encoded_dim=768, nclasses=10).eval()
    evaluator = {"t2m_textencoder": textenc.TextEncoderBiGRUCo(300, 15, 512, 512).eval(),
                 "t2m_moveencoder": motionenc.MovementConvEncoder(259, 512, 512).eval(),
                 "t2m_motionencoder": motionenc.MotionEncoderBiGRUCo(512, 1024, 512).eval()}
    for i, m in enumerate([vae, den, *evaluator.values()]):
        _randomise(m, seed + i)
    state = {f"vae.{k}": v for k, v in vae.state_dict().items()}
    state |= {f"denoiser.{k}": v for k, v in den.state_dict().items()}
    for prefix, module in evaluator.items():
        state |= {f"{prefix}.{k}": v for k, v in module.state_dict().items()}
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mld.ckpt"
        torch.save({"state_dict": state, "epoch": 0, "hyper_parameters": {"NAME": "mld"}}, path)
        imported = import_mld(path, "clip")
        finest = Path(tmp) / "finest.tar"
        torch.save({"text_encoder": evaluator["t2m_textencoder"].state_dict(),
                    "motion_encoder": evaluator["t2m_motionencoder"].state_dict(),
                    "movement_encoder": evaluator["t2m_moveencoder"].state_dict(), "epoch": 0, "iter": 0}, finest)
        ours_eval = load_t2m_evaluator(finest)
    g = torch.Generator().manual_seed(seed)
    b = 4
    with torch.no_grad():
        z = torch.randn(b, 1, 256, generator=g)
        text = torch.randn(b, 1, 768, generator=g)
        for t in (981, 500, 1):
            ref = den(sample=z, timestep=torch.tensor(t), encoder_hidden_states=text)[0]  # (B, 1, 256)
            out[f"denoiser eps (t={t})"] = _max_diff(imported.denoiser(z, torch.tensor(t), text), ref)
        lengths = [60, 48, 40, 17]
        feats = torch.randn(b, 60, 263, generator=g)
        _, dist = vae.encode(feats, lengths)
        mu, _ = imported.vae.encode(feats, torch.tensor(lengths))
        out["VAE encoder mu"] = _max_diff(mu, dist.loc.permute(1, 0, 2))
        ref = vae.decode(z.permute(1, 0, 2), lengths)  # (B, T, 263)
        out["VAE decoder"] = _max_diff(imported.vae.decode(z, torch.tensor(lengths)), ref)
        out |= _evaluator_diffs(evaluator["t2m_textencoder"], evaluator["t2m_moveencoder"],
                                evaluator["t2m_motionencoder"], ours_eval, g, "MLD copies")
    return out


def _evaluator_diffs(text_enc, move_enc, motion_enc, ours, g, label: str) -> dict[str, float]:
    b = 4
    lengths = torch.tensor([196, 120, 64, 40])  # frames, descending (the reference packs sorted sequences)
    motions = torch.randn(b, 196, 263, generator=g)
    movements = move_enc(motions[..., :-4])
    ref_motion = motion_enc(movements, lengths // 4)
    words, pos = torch.randn(b, 22, 300, generator=g), torch.zeros(b, 22, 15)
    pos[torch.arange(b)[:, None], torch.arange(22)[None], torch.randint(0, 15, (b, 22), generator=g)] = 1.0
    cap_lens = torch.tensor([22, 15, 9, 4])
    ref_text = text_enc(words, pos, cap_lens)
    return {f"evaluator motion embedding ({label})": _max_diff(ours.embed_motion(motions, lengths), ref_motion),
            f"evaluator text embedding ({label})": _max_diff(ours.embed_text(words, pos, cap_lens), ref_text)}


# ------------------------------------------------------------------------------------------------ T2M original
def check_t2m(folder: str, seed: int) -> dict[str, float]:
    from easytune.core.published.t2m_evaluator import load_t2m_evaluator

    (modules,) = _import_from(folder, "networks.modules")
    text_enc = modules.TextEncoderBiGRUCo(300, 15, 512, 512, "cpu").eval()
    move_enc = modules.MovementConvEncoder(259, 512, 512).eval()
    motion_enc = modules.MotionEncoderBiGRUCo(512, 1024, 512, "cpu").eval()
    for i, m in enumerate((text_enc, move_enc, motion_enc)):
        _randomise(m, seed + i)
    with tempfile.TemporaryDirectory() as tmp:
        finest = Path(tmp) / "finest.tar"
        torch.save({"text_encoder": text_enc.state_dict(), "motion_encoder": motion_enc.state_dict(),
                    "movement_encoder": move_enc.state_dict(), "opt_text_encoder": {}, "opt_motion_encoder": {},
                    "epoch": 0, "iter": 0}, finest)
        ours = load_t2m_evaluator(finest)
    with torch.no_grad():
        return _evaluator_diffs(text_enc, move_enc, motion_enc, ours, torch.Generator().manual_seed(seed),
                                "T2M original")


# ------------------------------------------------------------------------------------------------ MDM
def _stub_mdm_dependencies() -> None:
    """``clip`` (loads a model at construction), ``model.rotation2xyz`` (SMPL files) and BERT: not denoiser parts."""
    clip = types.ModuleType("clip")
    clip.load = lambda *a, **k: (_FakeClip(), None)
    clip.tokenize = lambda *a, **k: None
    clip.model = types.SimpleNamespace(convert_weights=lambda model: None)
    sys.modules.setdefault("clip", clip)
    rot = types.ModuleType("model.rotation2xyz")
    rot.Rotation2xyz = lambda *a, **k: types.SimpleNamespace(smpl_model=torch.nn.Identity())
    sys.modules["model.rotation2xyz"] = rot


class _FakeClip(torch.nn.Module):
    dtype = torch.float32

    def float(self):  # noqa: A003 - the released code calls clip_model.float()
        return self

    def parameters(self, recurse: bool = True):
        return iter(())


def check_mdm(folder: str, seed: int) -> dict[str, float]:
    from easytune.core.published.mdm import import_mdm

    sys.path.insert(0, str(Path(folder).resolve()))
    try:
        import model as _pkg  # noqa: F401 - the released package, so the stubs sit under it

        _stub_mdm_dependencies()
        from model.mdm import MDM
    finally:
        sys.path.pop(0)
    torch.manual_seed(seed)
    kwargs = dict(modeltype="", njoints=263, nfeats=1, num_actions=1, translation=True, pose_rep="rot6d", glob=True,
                  glob_rot=True, latent_dim=512, ff_size=1024, num_layers=8, num_heads=4, dropout=0.1,
                  activation="gelu", data_rep="hml_vec", dataset="humanml", clip_dim=512, arch="trans_enc",
                  emb_trans_dec=False, clip_version="ViT-B/32", cond_mode="text", cond_mask_prob=0.1)
    ref = MDM(**kwargs)
    ref.eval()  # the released train() override returns None
    _randomise(ref, seed)
    state = {k: v for k, v in ref.state_dict().items() if not k.startswith("clip_model.")}
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "args.json").write_text(json.dumps({"dataset": "humanml", "arch": "trans_enc", "latent_dim": 512,
                                                         "layers": 8, "noise_schedule": "cosine",
                                                         "sigma_small": True, "cond_mask_prob": 0.1}))
        torch.save(state, Path(tmp) / "model000000000.pt")
        ours = import_mdm(Path(tmp) / "model000000000.pt").model
    g = torch.Generator().manual_seed(seed)
    b, frames = 3, 60
    x = torch.randn(b, frames, 263, generator=g)
    t = torch.tensor([999, 500, 3])
    text = torch.randn(b, 512, generator=g)
    with torch.no_grad():
        for uncond in (False, True):
            y = {"mask": torch.ones(b, 1, 1, frames, dtype=torch.bool), "lengths": torch.full((b,), frames),
                 "text_embed": text[None], "uncond": uncond}  # (1, B, 512), as clip_encode_text returns
            try:
                released = ref(x.permute(0, 2, 1)[:, :, None], t, y)  # (B, 263, 1, T)
            except (KeyError, TypeError):  # an older MDM without 'text_embed': encode_text is bypassed
                ref.encode_text = lambda raw, _text=text: _text[None]
                released = ref(x.permute(0, 2, 1)[:, :, None], t, {**y, "text": ["x"] * b})
            mine = ours(x, t, text, drop_text=torch.full((b,), uncond))
            out[f"MDM x0 ({'uncond' if uncond else 'cond'})"] = _max_diff(mine, released[:, :, 0].permute(0, 2, 1))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mld", help="a checkout of ChenFengYe/motion-latent-diffusion (the folder holding mld/)")
    parser.add_argument("--t2m", help="a checkout of EricGuo5513/text-to-motion (the folder holding networks/)")
    parser.add_argument("--mdm", help="a checkout of GuyTevet/motion-diffusion-model (the folder holding model/)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args(argv)
    if not (args.mld or args.t2m or args.mdm):
        parser.error("name at least one of --mld, --t2m, --mdm")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results: dict[str, float] = {}
    for flag, check in (("mld", check_mld), ("t2m", check_t2m), ("mdm", check_mdm)):
        if getattr(args, flag):
            results |= check(getattr(args, flag), args.seed)
    width = max(map(len, results))
    for name, diff in results.items():
        print(f"{name:<{width}}  max |ours - released| = {diff:.3e}{'' if diff <= args.tolerance else '  FAIL'}")
    worst = max(results.values())
    print(f"largest difference {worst:.3e} (tolerance {args.tolerance:g})")
    return 0 if np.isfinite(worst) and worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
