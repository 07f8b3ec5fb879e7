"""Fine-tuning a released MLD with a released reward through the project's loop: the adapters sample what the released
sampler samples, the SPM / TMR rewards are the released scores, one EasyTune update reaches and changes the released
denoiser, and the settings name what is missing."""

import numpy as np
import pytest
import torch

from easytune.core.data.dataset import TextEmbeddings
from easytune.core.data.text import TextBatch
from easytune.core.finetune import ALLOWED_CHECKPOINT_KINDS
from easytune.core.finetune.config import method_config
from easytune.core.finetune.policies import make_policy
from easytune.core.finetune.released import (
    RELEASED_DENOISER_KIND,
    CaptionFeatures,
    ReleasedFinetuneSettings,
    ReleasedMLDGenerator,
    SPMReward,
    TMRReward,
    finetune_released,
)
from easytune.core.finetune.rollout import run_rollout
from easytune.core.finetune.trainer import finetune
from easytune.core.infra.checkpoint import build_from_checkpoint
from easytune.core.infra.config import from_dict
from easytune.core.models.released_spm import ReleasedSPM, ReleasedSPMConfig
from easytune.core.published.containers import PublishedAssetError
from easytune.core.published.mld import import_mld
from easytune.core.published.sampling import ReleasedMLDGenerator as ReleasedSampler
from easytune.core.published.tmr import import_tmr, tmr_score
from tests.core.finetune.tiny import make_splits
from tests.core.published.released_keys import (
    lightning_checkpoint,
    mld_denoiser,
    mld_vae,
    random_state,
    shared_spm_norm,
    spm,
    tmr,
)
from tests.core.published.tiny_assets import released_finetune_folder

TEXT = 12  # the tiny released denoiser's text width
TOKENS = 16  # the tiny SPM's token width
CAPTIONS = ["a man walks forward", "the person jumps", "a person turns left slowly", "walks and jumps",
            "a man turns", "jumps forward", "the man walks left", "turns slowly"]


def sentence_features(captions):
    """(B, 1, TEXT): "" -> -1, any other caption -> values from its characters (so every caption differs)."""
    out = []
    for c in captions:
        codes = torch.tensor([float(ord(ch)) for ch in (c or " ")])
        base = torch.full((TEXT,), -1.0) if not c else torch.sin(torch.arange(TEXT) * 0.3 + codes.mean() / 7)
        out.append(base[None])
    return torch.stack(out)


def token_features(captions):
    """(states (B, L, TOKENS), mask (B, L)): one token per word, values from the word."""
    longest = max(len(c.split()) for c in captions) or 1
    states, mask = torch.zeros(len(captions), longest, TOKENS), torch.zeros(len(captions), longest, dtype=torch.bool)
    for i, c in enumerate(captions):
        for j, w in enumerate(c.split()):
            states[i, j] = torch.cos(torch.arange(TOKENS) * 0.2 + sum(map(ord, w)) / 50)
            mask[i, j] = True
    return states, mask


def _imported(tmp_path, text_encoder="t5", seed=0):
    path = tmp_path / f"mld_{text_encoder}.ckpt"
    torch.save(lightning_checkpoint(random_state(mld_vae(d=16, ff=32, layers=3)
                                                 | mld_denoiser(d=16, ff=32, layers=3, text=TEXT), seed)), path)
    return import_mld(path, text_encoder)


def _spm(seed=1):
    model = ReleasedSPM(ReleasedSPMConfig(text_dim=TOKENS, latent_dim=16, ff_size=32, num_layers=3))
    model.load_state_dict(shared_spm_norm(random_state(spm(d=16, ff=32, layers=3, text=TOKENS), seed)))
    return model.eval()


def _rows(n):
    return TextBatch(sentence=torch.zeros(n, 1), tokens=torch.zeros(n, 1, 1), token_lengths=torch.ones(n, dtype=torch.int64),
                     rows=torch.arange(n))


@pytest.mark.parametrize("encoder", ["t5", "clip"])
def test_the_adapter_samples_what_the_released_sampler_samples(tmp_path, encoder):
    imported = _imported(tmp_path, encoder)
    latents = []  # the final latents both samplers decode (the tiny VAE's output varies little with them)
    decode = imported.vae.decode
    imported.vae.decode = lambda z, *args, **kwargs: latents.append(z.detach().clone()) or decode(z, *args, **kwargs)
    captions = CAPTIONS[:3]
    mean, std = np.zeros(263, np.float32), np.ones(263, np.float32)
    released = ReleasedSampler(imported, sentence_features, mean, std)
    ours = ReleasedMLDGenerator(imported, CaptionFeatures(captions, sentence_features)).eval()
    assert ours.diffusion.timesteps(50).tolist() == list(range(981, 0, -20))
    lengths = torch.tensor([12, 40, 3])
    expected = released._sample(captions, lengths, torch.Generator().manual_seed(4), 50, 7.5)
    got = ours.generate(_rows(3), lengths, generator=torch.Generator().manual_seed(4))
    assert got.shape == expected.shape == (3, 40, 263)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(latents[1], latents[0], atol=1e-5, rtol=1e-4)
    ours.generate(_rows(3), lengths, generator=torch.Generator().manual_seed(4), guidance_scale=1.0)
    assert (latents[2] - latents[0]).abs().max() > 1e-2  # the guidance matters, so the comparison above can fail
    shuffled = TextBatch(sentence=torch.zeros(3, 1), tokens=torch.zeros(3, 1, 1),
                         token_lengths=torch.ones(3, dtype=torch.int64), rows=torch.tensor([2, 1, 0]))
    ours.generate(shuffled, lengths, generator=torch.Generator().manual_seed(4))
    assert (latents[3] - latents[0]).abs().max() > 1e-2  # and so does the caption of each row


def test_the_spm_reward_is_the_released_score_per_sample():
    model = _spm()
    reward = SPMReward(model, CaptionFeatures(CAPTIONS, token_features, tokens=True))
    feats, lengths = torch.randn(3, 20, 263, generator=torch.Generator().manual_seed(0)), torch.tensor([20, 9, 14])
    text = TextBatch(sentence=torch.zeros(3, 1), tokens=torch.zeros(3, 1, 1), token_lengths=torch.ones(3, dtype=torch.int64),
                     rows=torch.tensor([5, 0, 2]))
    states, mask = token_features([CAPTIONS[5], CAPTIONS[0], CAPTIONS[2]])
    expected = model.reward(feats, lengths, states, mask)
    got = reward(feats, lengths, text, None)
    assert got.shape == (3,)
    torch.testing.assert_close(got, expected)
    assert got.std() > 0  # per sample, not one value for the batch
    assert reward.noise_aware is False and all(not p.requires_grad for p in model.parameters())


def test_the_tmr_reward_denormalises_with_the_generator_statistics(tmp_path):
    run = tmp_path / "tmr" / "last_weights"
    run.mkdir(parents=True)
    states = {name: random_state(shapes, i) for i, (name, shapes) in
              enumerate(tmr(nfeats=263, text=TOKENS, d=16, ff=32, layers=2).items())}
    for name, state in states.items():
        torch.save(state, run / f"{name}.pt")
    stats = tmp_path / "stats"
    stats.mkdir()
    torch.save(torch.randn(263), stats / "mean.pt")
    torch.save(torch.rand(263) + 0.5, stats / "std.pt")
    imported = import_tmr(tmp_path / "tmr", stats)
    rng = np.random.default_rng(0)
    mean, std = rng.normal(size=263).astype(np.float32), rng.uniform(0.5, 2, size=263).astype(np.float32)
    reward = TMRReward(imported, CaptionFeatures(CAPTIONS, token_features, tokens=True), mean, std)
    feats, lengths = torch.randn(2, 10, 263, generator=torch.Generator().manual_seed(1)), torch.tensor([10, 6])
    raw = feats * torch.from_numpy(std) + torch.from_numpy(mean)
    raw[1, 6:] = 0
    s, m = token_features(CAPTIONS[:2])
    torch.testing.assert_close(reward(feats, lengths, _rows(2), None), tmr_score(imported, raw, lengths, s, m))


def test_one_easytune_update_reaches_and_changes_the_released_denoiser(tmp_path):
    imported = _imported(tmp_path)
    generator = ReleasedMLDGenerator(imported, CaptionFeatures(CAPTIONS, sentence_features), num_steps=4)
    reward = SPMReward(_spm(), CaptionFeatures(CAPTIONS, token_features, tokens=True))
    plan = make_policy("easytune_step", {"steps": "last_k", "k": 2}).plan(4, np.random.default_rng(0))
    grads, rewards = [], []

    def on_update(loss, trace):
        loss.backward()
        grads.append(sum(float(p.grad.abs().sum()) for p in generator.denoiser.released.parameters()
                         if p.grad is not None))
        rewards.append(trace.reward)
        generator.denoiser.zero_grad(set_to_none=True)
        return False

    text = _rows(3)
    run_rollout(generator, reward, plan, text, torch.tensor([10, 16, 7]),
                noise_generator=torch.Generator().manual_seed(0), on_update=on_update)
    assert len(grads) == 2 and all(g > 0 for g in grads)
    assert all(not p.requires_grad for p in generator.vae.parameters())

    before = {k: v.clone() for k, v in generator.denoiser.released.state_dict().items()}
    train, val, text_emb = make_splits()
    text_emb = TextEmbeddings(np.array(CAPTIONS), text_emb.sentence, text_emb.tokens, text_emb.token_lengths)
    config = method_config({"method": "easytune_step", "policy": {"steps": "last_k", "k": 1}, "num_steps": 4,
                            "batch_size": 2, "max_updates": 1, "val_every": 0, "lr": 1e-3, "max_frames": 12},
                           where="test")
    result = finetune(generator, reward, train, val, text_emb, config, seed=0, device=torch.device("cpu"))
    after = result.denoiser.released.state_dict()
    assert result.summary["updates"] == 1
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert np.isfinite(result.history["train_reward"][0]["value"])


def _settings(folder, **over):
    paths = released_finetune_folder(folder)
    data = {"root": str(folder), "root_variable": "EASYTUNE_PUBLISHED_DIR", "checkpoint": paths["checkpoint"],
            "text_encoder": "t5", "text_encoder_path": paths["text_encoder_path"], "num_steps": 4,
            "reward": {"kind": "spm", "checkpoint": paths["spm"], "text_encoder_path": paths["text_encoder_path"]}}
    return from_dict(ReleasedFinetuneSettings, data | over, where="finetune.released")


def test_finetune_released_writes_a_released_denoiser_checkpoint(tmp_path):
    settings = _settings(tmp_path / "published")
    train, val, text = make_splits()
    text = TextEmbeddings(np.array(CAPTIONS), text.sentence, text.tokens, text.token_lengths)
    config = method_config({"method": "easytune_step", "policy": {"steps": "last_k", "k": 2}, "num_steps": 4,
                            "batch_size": 2, "max_updates": 2, "val_every": 1, "val_captions": 2, "lr": 1e-3},
                           where="test")
    ckpt, history, summary = finetune_released(settings, config, train, val, text, seed=0, device=torch.device("cpu"))
    assert ckpt["kind"] == RELEASED_DENOISER_KIND and RELEASED_DENOISER_KIND in ALLOWED_CHECKPOINT_KINDS
    meta = ckpt["metadata"]["generator"]
    assert meta["kind"] == "released_mld" and meta["text_encoder"] == "t5" and meta["num_steps"] == 4
    assert meta["checkpoint"].endswith("mld_humanml_v1.ckpt")
    assert summary["updates"] == 2 and summary["reward"] == "spm" and summary["final_reward"] is not None
    model = build_from_checkpoint(ckpt, allowed_kinds=ALLOWED_CHECKPOINT_KINDS)
    base = import_mld(meta["checkpoint"], "t5").denoiser.state_dict()
    assert set(model.state_dict()) == set(base)
    assert any(not torch.equal(model.state_dict()[k], base[k]) for k in base)


def test_missing_files_name_the_parameter_the_variable_and_what_to_put_there(tmp_path):
    settings = _settings(tmp_path / "published", root="", checkpoint="checkpoints/mld_humanml/mld_humanml_v1.ckpt")
    with pytest.raises(PublishedAssetError, match=r"finetune\.released\.checkpoint: .*environment variable "
                                                  r"EASYTUNE_PUBLISHED_DIR is not set.*mld_humanml_v1\.ckpt"):
        settings.resolved()
    settings = _settings(tmp_path / "other", reward={"kind": "spm", "checkpoint": "checkpoints/spm/missing.pth",
                                                     "text_encoder_path": "deps/sentence-t5-large"})
    with pytest.raises(PublishedAssetError, match=r"finetune\.released\.reward\.checkpoint = 'checkpoints/spm/"
                                                  r"missing\.pth': no file .*EASYTUNE_PUBLISHED_DIR=.*SPM reward"):
        settings.resolved()
    with pytest.raises(ValueError, match="unknown"):
        from_dict(ReleasedFinetuneSettings, {"checkpont": "x"}, where="finetune.released")
