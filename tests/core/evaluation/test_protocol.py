"""The replicated protocol and the sanity checks on tiny synthetic data with a briefly trained evaluator."""

import re

import numpy as np
import pytest
import torch

from easytune.core.evaluation.evaluator import EvaluatorConfig, EvaluatorTrainConfig, train_evaluator
from easytune.core.evaluation.protocol import (
    METRIC_NAMES,
    ProtocolConfig,
    collect_generators,
    evaluate_source,
    flatten_metrics,
    generated_arrays,
    generator_source,
    metrics_json,
    real_source,
    results_table_markdown,
    results_table_rows,
    sanity_checks,
)
from tests.core.evaluation.synthetic import make_split, make_stats, make_text

pytest.importorskip("easytune.core.motion.features")

PROTOCOL = ProtocolConfig(replications=4, group_size=16, diversity_pairs=20, mm_captions=4, mm_samples=3,
                          mm_pairs=2, batch_size=16)


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    train, test, text, stats = make_split(64, seed=0), make_split(48, seed=1), make_text(), make_stats()
    cfg = EvaluatorTrainConfig(model=EvaluatorConfig(movement_dim=32, motion_hidden=32, text_hidden=32,
                                                     embed_dim=16, dropout=0.0),
                               steps=150, batch_size=32, lr=3e-3, margin=3.0)
    evaluator, _ = train_evaluator(train, text, stats, cfg)
    return train, test, text, stats, evaluator


class ShuffledGenerator:
    """Stand-in for MotionGenerator: returns real test motions of random other samples (ignores the caption)."""

    def __init__(self, split, max_length=16):
        self.split, self.max_length, self.feature_dim = split, max_length, split.feature_dim
        self.calls = []

    def generate(self, text, lengths, *, generator, num_steps=None, guidance_scale=None):
        self.calls.append(len(lengths))
        pick = torch.randint(len(self.split), (len(lengths),), generator=generator).numpy()
        feats = torch.as_tensor(self.split.features[pick, : int(lengths.max())])
        mask = torch.arange(feats.shape[1])[None, :, None] < lengths[:, None, None]
        return feats * mask


def test_sanity_checks_on_tiny_data(setup):
    train, test, text, stats, evaluator = setup
    out = sanity_checks(train, test, text, stats, evaluator, PROTOCOL, 22, noise_std=3.0)
    m = out["metrics"]
    assert out["chance_R@1"] == pytest.approx(1 / 16)
    assert m["real"]["R@1"] > 3 * out["chance_R@1"]
    assert m["shuffled"]["R@1"] < m["real"]["R@1"] / 2
    assert m["real"]["FID"] == pytest.approx(0.0, abs=1e-6)  # the reference against itself
    assert m["noisy"]["FID"] > m["real"]["FID"] + 0.02
    assert m["noisy"]["jitter"] > 2 * m["real"]["jitter"]
    assert m["noisy"]["foot_skating"] > m["real"]["foot_skating"]
    checks = out["checks"]
    assert checks["real_R@1_far_above_chance"] and checks["shuffled_R@1_near_chance"]
    assert checks["noise_worsens_plausibility"]
    # (noise_raises_fid compares with the train-vs-test FID, which 64 vs 48 tiny samples make large: real data only)


def test_generator_source_batches_and_metrics_shape(setup):
    _, test, text, stats, evaluator = setup
    fake = ShuffledGenerator(test, max_length=12)
    source = generator_source(fake, text, batch_size=16)
    res = evaluate_source(source, test, text, stats, evaluator, None, PROTOCOL, 22)
    assert set(res.metrics) == set(METRIC_NAMES)
    assert res.lengths.max() <= 12  # clamped to the generator's max length
    assert sum(fake.calls) == len(test) + 4 * 3  # test set once + multimodality 4 captions x 3 samples
    assert res.metrics["content_accuracy"] == {"mean": None, "ci": None}  # no classifier given
    assert res.metrics["MultiModality"]["mean"] > 0
    real = evaluate_source(real_source(test), test, text, stats, evaluator, None, PROTOCOL, 22,
                           with_multimodality=False)
    assert res.metrics["R@1"]["mean"] < real.metrics["R@1"]["mean"]
    assert res.metrics["FID"]["mean"] > real.metrics["FID"]["mean"]
    arrays = generated_arrays(res, test, text)
    assert arrays["joints"].shape == (len(test), 12, 22, 3) and arrays["captions"].dtype.kind == "U"
    # same seed, same numbers
    again = evaluate_source(generator_source(ShuffledGenerator(test, 12), text, batch_size=16), test, text, stats,
                            evaluator, None, PROTOCOL, 22)
    assert again.metrics == res.metrics


def test_generation_replications_vary_generation_metrics(setup):
    _, test, text, stats, evaluator = setup
    cfg = ProtocolConfig(**{**PROTOCOL.__dict__, "generation_replications": 2, "mm_captions": 0})
    res = evaluate_source(generator_source(ShuffledGenerator(test), text), test, text, stats, evaluator, None, cfg, 22)
    assert res.metrics["FID"]["ci"] > 0 and res.metrics["MultiModality"]["mean"] is None


def test_tables_and_mlflow_names():
    metrics = {"real": {"R@1": {"mean": 0.5, "ci": 0.01}, "MultiModality": {"mean": None, "ci": None}},
               "base_mld": {"R@1": {"mean": 0.25, "ci": 0.02}, "MultiModality": {"mean": 2.0, "ci": 0.1}}}
    md = results_table_markdown(metrics, ("R@1", "MultiModality"))
    assert md.splitlines()[0] == "| model | R@1 ↑ | MultiModality → |"
    assert "| real | 0.500 ± 0.010 | - |" in md and "| base_mld | 0.250 ± 0.020 | 2.000 ± 0.100 |" in md
    header, rows = results_table_rows(metrics, ("R@1", "MultiModality"))
    assert header == ["model", "R@1", "R@1_ci", "MultiModality", "MultiModality_ci"]
    assert rows[0] == ["real", 0.5, 0.01, None, None]
    flat = flatten_metrics(metrics)
    assert flat == {"real.R_at_1": 0.5, "real.R_at_1.ci": 0.01, "base_mld.R_at_1": 0.25,
                    "base_mld.R_at_1.ci": 0.02, "base_mld.MultiModality": 2.0, "base_mld.MultiModality.ci": 0.1}
    assert all(re.fullmatch(r"[/\w.\- :]*", k) for k in flatten_metrics(
        {"easytune_step": {m: {"mean": 1.0, "ci": 0.0} for m in METRIC_NAMES}}))


def test_collect_generators_skips_missing_and_pairs_the_vae():
    loads = []

    def loader(name, kind=None):
        def load():
            loads.append(name)
            return {"kind": name, "metadata": {"generator": {"kind": kind}} if kind else {}}
        return load

    base = {"motion_vae": loader("motion_vae"), "pretrained_latent_denoiser": loader("den", "mld")}
    finetuned = {"easytune_step": loader("ft_mld", "mld"), "draft_10": loader("ft_mdm", "mdm")}
    spec = {"base_mld": {"denoiser": "pretrained_latent_denoiser", "vae": "motion_vae"},
            "base_mdm": {"denoiser": "pretrained_frame_denoiser", "vae": None}}
    found = collect_generators(spec, base, finetuned)
    assert list(found) == ["base_mld", "draft_10", "easytune_step"]
    assert found["base_mld"][1]["kind"] == "motion_vae" and found["draft_10"][1] is None
    assert found["easytune_step"][1]["kind"] == "motion_vae"
    assert collect_generators(spec, {}, {}) == {}


def test_metrics_json_is_plain(setup):
    _, test, text, stats, evaluator = setup
    res = evaluate_source(real_source(test), test, text, stats, evaluator, None, PROTOCOL, 22,
                          with_multimodality=False)
    out = metrics_json({"real": res})
    assert all(isinstance(v["mean"], (float, type(None))) for v in out["real"].values())
    assert np.isfinite(out["real"]["jitter"]["mean"])


def test_comparison_renders_put_models_side_by_side(monkeypatch):
    pytest.importorskip("easytune.core.export.render")
    from easytune.core.evaluation.protocol import comparison_renders, order_models

    rng = np.random.default_rng(0)
    arrays = {name: {"ids": np.array(["a", "b"]), "captions": np.array(["walk", "run"]), "lengths": np.array([6, 4]),
                     "joints": rng.normal(size=(2, 6, 22, 3)).astype(np.float32)}
              for name in ("easytune_step", "base_mdm", "real")}
    order = order_models(arrays, ["base_mld", "base_mdm"])
    assert order == ["real", "base_mdm", "easytune_step"]
    out = comparison_renders({n: arrays[n] for n in order}, num_captions=1, fps=20.0, mp4=False)
    assert sorted(out) == ["caption_0.gif", "captions.txt"]
    assert out["caption_0.gif"][:3] == b"GIF"
    assert b"panels: real, base_mdm, easytune_step" in out["captions.txt"]


def test_comparison_renders_write_mp4_without_a_system_ffmpeg(monkeypatch, tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    import shutil

    from easytune.core.evaluation.protocol import comparison_renders

    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg on PATH: imageio-ffmpeg's own binary encodes
    monkeypatch.delenv("IMAGEIO_FFMPEG_EXE", raising=False)
    assert shutil.which("ffmpeg") is None
    rng = np.random.default_rng(1)
    arrays = {name: {"ids": np.array(["a"]), "captions": np.array(["walk"]), "lengths": np.array([5]),
                     "joints": rng.normal(size=(1, 5, 22, 3)).astype(np.float32)} for name in ("real", "base_mld")}
    out = comparison_renders(arrays, num_captions=1, fps=20.0, mp4=True)
    assert sorted(out) == ["caption_0.gif", "caption_0.mp4", "captions.txt"]
    assert out["caption_0.mp4"][4:8] == b"ftyp"


def test_generator_checkpoints_resolves_one_model_by_name():
    from easytune.core.evaluation.protocol import generator_checkpoints

    base_models = {"base_mld": {"denoiser": "pretrained_latent_denoiser", "vae": "motion_vae"},
                   "base_mdm": {"denoiser": "pretrained_frame_denoiser", "vae": None}}
    loaded = []

    def loader(name, kind=None):
        def load():
            loaded.append(name)
            return {"name": name, "metadata": {"generator": {"kind": kind}} if kind else {}}
        return load

    base = {"pretrained_latent_denoiser": loader("pld"), "motion_vae": loader("vae")}
    finetuned = {"easytune_step": loader("et", "mld"), "draft_k": loader("dk", "mdm")}
    den, vae = generator_checkpoints("base_mld", base_models, base, finetuned)
    assert (den["name"], vae["name"]) == ("pld", "vae")
    den, vae = generator_checkpoints("easytune_step", base_models, base, finetuned)
    assert (den["name"], vae["name"]) == ("et", "vae")
    den, vae = generator_checkpoints("draft_k", base_models, base, finetuned)
    assert den["name"] == "dk" and vae is None
    assert loaded == ["pld", "vae", "et", "vae", "dk"]  # only the chosen model's files are read
    with pytest.raises(ValueError, match=r"generate.model: unknown model 'easytune'; available: base_mld, "
                                         r"draft_k, easytune_step"):
        generator_checkpoints("easytune", base_models, base, finetuned, where="generate.model")
    with pytest.raises(ValueError, match=r"base_mdm: checkpoint\(s\) \['pretrained_frame_denoiser'\] not found"):
        generator_checkpoints("base_mdm", base_models, base, finetuned)
    with pytest.raises(ValueError, match=r"available: none yet \(run `kedro run` first\)"):
        generator_checkpoints("easytune_step", base_models, {}, {})
    with pytest.raises(ValueError, match="needs the motion_vae checkpoint"):
        generator_checkpoints("easytune_step", base_models, {"pretrained_latent_denoiser": loader("p")}, finetuned)
