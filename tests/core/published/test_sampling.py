"""Sampling of the released generators: schedulers, guidance batch order per family, shapes and length masking."""

import numpy as np
import pytest
import torch

from easytune.core.published.mdm import import_mdm
from easytune.core.published.mld import import_mld
from easytune.core.published.sampling import (
    ReleasedMDMGenerator,
    ReleasedMLDGenerator,
    lcm_scheduler,
    mdm_scheduler,
    mld_scheduler,
)
from tests.core.published.released_keys import (
    lightning_checkpoint,
    mdm,
    mdm_args,
    mld_denoiser,
    mld_vae,
    random_state,
)

TINY = {"d": 16, "ff": 32, "layers": 3}
TEXT_DIM = 768  # the released denoiser's text width (fixed by the format)


def text_features(captions):
    """(B, 1, 768): "" -> -1 everywhere, any other caption -> a value from its length (so cond != uncond)."""
    return torch.stack([torch.full((1, TEXT_DIM), -1.0 if not c else len(c) / 10) for c in captions])


def _stats(dim=263):
    rng = np.random.default_rng(0)
    return rng.normal(size=dim).astype(np.float32), rng.uniform(0.5, 2.0, size=dim).astype(np.float32)


def _mld(tmp_path, text_encoder="clip", lcm=False):
    path = tmp_path / "mld.ckpt"
    torch.save(lightning_checkpoint(random_state(mld_vae(**TINY) | mld_denoiser(**TINY, mem_pos=not lcm, lcm=lcm))),
               path)
    return import_mld(path, text_encoder)


def _mdm(tmp_path):
    (tmp_path / "args.json").write_text(__import__("json").dumps(mdm_args(latent_dim=16, layers=2)))
    torch.save(random_state(mdm(d=16, ff=32, layers=2, max_len=1000)), tmp_path / "model000000100.pt")
    return import_mdm(tmp_path / "model000000100.pt")


class Recorder(torch.nn.Module):
    """Wraps a denoiser and records the (text / drop_text) batch of every call."""

    def __init__(self, inner, key):
        super().__init__()
        self.inner, self.key, self.calls = inner, key, []
        self.config = inner.config

    def forward(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.inner(*args, **kwargs)


def test_released_scheduler_timesteps():
    """PUBLISHED_ASSETS.md: MLD DDIM 981, 961, ..., 1; MotionLCM v1 1 -> [999], 2 -> [999, 499], 4 -> [999, 759,
    499, 259]; MDM cosine over 1000 steps."""
    ddim = mld_scheduler(50).timesteps.tolist()
    assert len(ddim) == 50 and ddim[:2] == [981, 961] and ddim[-1] == 1
    assert [lcm_scheduler(n).timesteps.tolist() for n in (1, 2, 4)] == [[999], [999, 499], [999, 759, 499, 259]]
    mdm_sched = mdm_scheduler(1000)
    assert mdm_sched.timesteps[0] == 999 and len(mdm_sched.timesteps) == 1000
    assert mdm_sched.config.prediction_type == "sample" and abs(float(mdm_sched.betas.max()) - 0.999) < 1e-6


@pytest.mark.parametrize(("encoder", "uncond_first"), [("clip", True), ("t5", False)])
def test_mld_guidance_batch_order_and_combination(tmp_path, encoder, uncond_first):
    """MLD (CLIP): [uncond, cond]; MotionLCM/EasyTune T5 MLD: [cond, uncond]; eps = u + s (c - u) either way."""
    imported = _mld(tmp_path, encoder)
    mean, std = _stats()
    gen = ReleasedMLDGenerator(imported, text_features, mean, std, num_steps=3)
    recorder = Recorder(gen.denoiser, "text")
    gen.denoiser = recorder
    captions, lengths = ["a man walks", "jump"], np.array([8, 5])
    out = gen.generate(captions, lengths, generator=torch.Generator().manual_seed(0))
    assert len(recorder.calls) == 3
    text = recorder.calls[0][0][2]  # (2B, 1, 768)
    assert text.shape == (4, 1, TEXT_DIM)
    uncond_rows, cond_rows = (slice(0, 2), slice(2, 4)) if uncond_first else (slice(2, 4), slice(0, 2))
    assert torch.all(text[uncond_rows] == -1.0)
    assert torch.allclose(text[cond_rows, 0, 0], torch.tensor([1.1, 0.4]))
    sample = recorder.calls[0][0][0]
    assert torch.equal(sample[:2], sample[2:])  # the same latents in both halves
    # golden: the same DDIM loop written out with eps = u + 7.5 (c - u) gives the same motions
    sched, den = mld_scheduler(3), recorder.inner
    z = torch.randn((2, 1, 16), generator=torch.Generator().manual_seed(0))
    cond, uncond = text_features(captions), text_features(["", ""])
    with torch.no_grad():
        for t in sched.timesteps:
            u, c = den(z, t, uncond), den(z, t, cond)
            z = sched.step(u + 7.5 * (c - u), t, z).prev_sample
        expected = imported.vae.decode(z, torch.as_tensor(lengths)).numpy() * std + mean
    expected *= (np.arange(8)[None, :, None] < lengths[:, None, None])
    assert np.allclose(out, expected, atol=1e-4)


def test_motionlcm_embeds_the_guidance_and_does_not_double(tmp_path):
    imported = _mld(tmp_path, "t5", lcm=True)
    mean, std = _stats()
    gen = ReleasedMLDGenerator(imported, text_features, mean, std)
    assert gen.defaults.num_steps == 1 and gen.defaults.guidance_scale == 7.5 and gen.family == "motionlcm"
    recorder = Recorder(gen.denoiser, "text")
    gen.denoiser = recorder
    out = gen.generate(["a man walks", "jump"], [8, 6], generator=torch.Generator().manual_seed(0), num_steps=2)
    assert len(recorder.calls) == 2
    args, kwargs = recorder.calls[0]
    assert args[2].shape == (2, 1, TEXT_DIM) and torch.all(args[2] != -1.0)  # no unconditional half
    assert kwargs["timestep_cond"].shape == (2, 256)
    assert out.shape == (2, 8, 263) and np.isfinite(out).all() and np.all(out[1, 6:] == 0)


def test_mdm_guidance_on_x0_with_the_text_dropped_in_the_second_half(tmp_path):
    imported = _mdm(tmp_path)
    mean, std = _stats()
    text = lambda caps: torch.stack([torch.full((512,), float(len(c))) for c in caps])  # noqa: E731
    gen = ReleasedMDMGenerator(imported, text, mean, std, num_steps=4)
    assert ReleasedMDMGenerator(imported, text, mean, std).defaults.num_steps == 1000  # diffusion_steps default
    assert gen.defaults.guidance_scale == 2.5
    recorder = Recorder(gen.model, "drop_text")
    gen.model = recorder
    out = gen.generate(["a man walks", "jump", "sit"], [10, 7, 4], generator=torch.Generator().manual_seed(1))
    assert len(recorder.calls) == 4
    drop = recorder.calls[0][1]["drop_text"]
    assert drop.tolist() == [False] * 3 + [True] * 3  # [cond, uncond]
    assert out.shape == (3, 10, 263) and np.isfinite(out).all()
    assert np.all(out[1, 7:] == 0) and np.all(out[2, 4:] == 0) and not np.all(out[2, :4] == 0)


def test_tiny_mld_generates_finite_masked_motions_reproducibly(tmp_path):
    imported = _mld(tmp_path, "clip")
    mean, std = _stats()
    gen = ReleasedMLDGenerator(imported, text_features, mean, std)
    assert gen.defaults.num_steps == 50 and gen.cfg_order == "uncond_first"
    lengths = np.array([12, 40, 3])
    a = gen.generate(["walk", "run in a circle", "sit"], lengths, generator=torch.Generator().manual_seed(3))
    b = gen.generate(["walk", "run in a circle", "sit"], lengths, generator=torch.Generator().manual_seed(3))
    assert a.shape == (3, 40, 263) and np.isfinite(a).all() and np.array_equal(a, b)
    assert np.all(a[0, 12:] == 0) and np.all(a[2, 3:] == 0) and np.abs(a[2, :3]).sum() > 0
    with pytest.raises(ValueError, match="lengths must be in 1..196"):
        gen.generate(["walk"], [197])
