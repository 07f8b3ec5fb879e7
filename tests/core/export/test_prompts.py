"""Generation from prompts: prompt lines and lengths, every bad input named, per-motion seeds, exported files."""

import csv
import io
import json

import numpy as np
import pytest
import torch

from easytune.core.data.dataset import FeatureStats
from easytune.core.export.prompts import (
    GenerateConfig,
    Prompt,
    PromptError,
    VideoConfig,
    export_motions,
    generate_and_export,
    generate_from_prompts,
    load_prompts,
    parse_length,
    parse_prompts,
    prompt_lines,
    read_prompts_file,
)
from easytune.core.infra.config import ConfigError, from_dict
from easytune.core.motion.skeleton import HUMANML3D

MAX = 24  # frames the tiny generator accepts


def tiny_generator(seed: int = 0):
    from easytune.core.models.frame_denoiser import FrameDenoiser, FrameDenoiserConfig
    from easytune.core.sampling.diffusion import MDM_DIFFUSION, Diffusion
    from easytune.core.sampling.generator import MotionGenerator

    torch.manual_seed(seed)
    den = FrameDenoiser(FrameDenoiserConfig(preset="tiny", feature_dim=263, text_dim=384))
    return MotionGenerator(den, Diffusion(MDM_DIFFUSION), "mdm", max_length=MAX, feature_dim=263).eval()


def dataset_stats() -> FeatureStats:
    """Mean/Std of real features (synthetic clips on the template skeleton), as data_processing computes them."""
    from easytune.core.motion.features import feature_group_std, joints_to_features
    from easytune.core.motion.synthetic import SyntheticConfig, generate_clip

    config = SyntheticConfig(min_frames=40, max_frames=60)
    clips = [joints_to_features(generate_clip(i, c, "normal", config).joints, HUMANML3D, retarget=False)
             for i, c in enumerate(["walk-forward", "jump", "wave-right-hand", "squat"])]
    return FeatureStats(*feature_group_std(clips, HUMANML3D))


@pytest.fixture(scope="module")
def encoder():
    from easytune.core.data.text_encoder import MiniLMEncoder

    return MiniLMEncoder(device="cpu", max_tokens=32)


@pytest.fixture(scope="module")
def stats():
    return dataset_stats()


# ------------------------------------------------------------------------------------------------ prompts
@pytest.mark.parametrize(("value", "frames"), [
    (120, 120), ("120", 120), ("120f", 120), (" 40 ", 40), (6.0, 120), ("6.0", 120), ("6s", 120), ("4.5s", 90),
    (".5s", 10), ("2.", 40), ("0.03s", 1),
])
def test_lengths_are_frames_or_seconds(value, frames):
    assert parse_length(value, 20.0, "x") == frames


@pytest.mark.parametrize(("value", "message"), [
    (0, "not positive"), ("0#", "not a length"), ("0", "not positive"), ("0.01s", r"not positive \(it gives 0"),
    ("-3", "not a length"), ("abc", "'abc' is not a length"), ("12.5f", "frames must be a whole number"),
    ("", "not a length"), (True, "not a number"), (float("nan"), "not finite"),
])
def test_bad_lengths_name_the_place(value, message):
    with pytest.raises(PromptError, match=f"where: .*{message}"):
        parse_length(value, 20.0, "where")


def test_prompt_lines_with_and_without_length():
    prompts = parse_prompts(["120#a person walks forward", "  a person jumps  ", "2.5s# waves # twice"],
                            fps=20.0, default_length=6.0, max_frames=196, source="p.txt")
    assert prompts == [Prompt("a person walks forward", 120, "p.txt line 1"), Prompt("a person jumps", 120,
                       "p.txt line 2"), Prompt("waves # twice", 50, "p.txt line 3")]


@pytest.mark.parametrize(("lines", "message"), [
    (["walk", "", "jump"], "p.txt line 2: empty prompt"),
    (["walk", "   "], None),  # trailing blank lines are ignored
    (["#a person walks"], r"p.txt line 1: the prefix before '#': length '' is not a length"),
    (["walk", "0#a person walks"], r"p.txt line 2: the prefix before '#': length '0' is not positive"),
    (["-5#a person walks"], r"p.txt line 1: .*'-5' is not a length"),
    (["walk", "jump", "300#a person walks"], r"p.txt line 3: length 300 frames \(15 s\) is longer than the "
                                             r"model's maximum of 196 frames \(9.8 s\)"),
    (["10.0s#a person walks"], r"line 1: length 200 frames \(10 s\) is longer"),
    (["fast#a person walks"], r"line 1: the prefix before '#': length 'fast' is not a length"),
    (["120#   "], r"p.txt line 1: empty prompt text after the length prefix '120'"),
    ([], "p.txt: no prompts"),
    (["", ""], "p.txt: no prompts"),
])
def test_bad_prompt_lines_name_the_line(lines, message):
    kwargs = dict(fps=20.0, default_length=6.0, max_frames=196, source="p.txt")
    if message is None:
        assert [p.text for p in parse_prompts(lines, **kwargs)] == ["walk"]
        return
    with pytest.raises(PromptError, match=message):
        parse_prompts(lines, **kwargs)


def test_default_length_is_checked():
    with pytest.raises(PromptError, match=r"prompts line 2: the default length \(generate.default_length\) 240 "
                                         r"frames \(12 s\) is longer than the model's maximum of 196 frames"):
        parse_prompts(["40#jump", "walk"], fps=20.0, default_length=12.0, max_frames=196)
    assert parse_prompts(["40#jump"], fps=20.0, default_length=12.0, max_frames=196)[0].frames == 40
    with pytest.raises(PromptError, match="generate.default_length: length -1 is not positive"):
        parse_prompts(["walk"], fps=20.0, default_length=-1, max_frames=196)
    assert parse_prompts(["walk"], fps=20.0, default_length=None, max_frames=96)[0].frames == 96  # the model's max


def test_prompt_file_utf8_bom_and_trailing_newlines(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes("\ufeff40#une personne saute\r\na person walks\n\n".encode("utf-8"))
    prompts = read_prompts_file(path, fps=20.0, default_length=50, max_frames=196)
    assert [(p.text, p.frames, p.where) for p in prompts] == [
        ("une personne saute", 40, f"{path} line 1"), ("a person walks", 50, f"{path} line 2")]


def test_prompt_file_not_utf8_names_the_file_and_line(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("a person walks\nun homme fait un pas de côté\n".encode("latin-1"))
    with pytest.raises(PromptError, match=rf"generate.prompts_file={path}: not UTF-8 text \(byte 0xf4 on line 2\)"):
        read_prompts_file(path, fps=20.0, default_length=6.0, max_frames=196)
    with pytest.raises(PromptError, match="file not found"):
        read_prompts_file(tmp_path / "missing.txt", fps=20.0, default_length=6.0, max_frames=196)


def test_exactly_one_prompt_source(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("walk\n")
    with pytest.raises(PromptError, match="exactly one of prompts_file .* and prompts"):
        load_prompts(GenerateConfig(), fps=20.0, max_frames=196)
    with pytest.raises(PromptError, match="exactly one of prompts_file"):
        load_prompts(GenerateConfig(prompts_file=str(path), prompts=["jump"]), fps=20.0, max_frames=196)
    one = load_prompts(from_dict(GenerateConfig, {"prompts": "40#a person jumps"}), fps=20.0, max_frames=196)
    assert one == [Prompt("a person jumps", 40, "generate.prompts line 1")]
    assert load_prompts(GenerateConfig(prompts_file=str(path)), fps=20.0, max_frames=196)[0].text == "walk"


@pytest.mark.parametrize(("params", "error", "message"), [
    ({"bvh": {"unit": "mm"}}, ValueError, r"generate.bvh.unit: 'mm' is not one of \['m', 'cm'\]"),
    ({"bvh": {"euler_order": "XYX"}}, ValueError, "generate.bvh.euler_order"),
    ({"video": {"format": "avi"}}, ValueError, "generate.video.format: 'avi'"),
    ({"video": {"width": 400}}, ValueError, "width and height must be in 16..320"),
    ({"samples_per_prompt": 0}, ValueError, r"samples_per_prompt = 0: must be in \[1, 10000\]"),
    ({"num_steps": 0}, ValueError, r"num_steps = 0: must be in \[1, 1000\]"),
    ({"model": ""}, ValueError, "generate.model: empty"),
    ({"sample_count": 2}, ConfigError, r"unknown key\(s\) \['sample_count'\]"),
])
def test_bad_parameters_name_the_parameter(params, error, message):
    with pytest.raises(error, match=message):
        from_dict(GenerateConfig, params, where="params:generate")


# ------------------------------------------------------------------------------------------------ limits (#27)
def _file(tmp_path, content: bytes) -> str:
    path = tmp_path / "p.txt"
    path.write_bytes(content)
    return str(path)


def test_prompt_file_over_the_byte_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = _file(tmp_path, b"a person walks\n" * 100)  # 1,500 bytes
    assert GenerateConfig().max_prompt_file_bytes == 2**20
    monkeypatch.setattr("pathlib.Path.read_bytes", lambda self: pytest.fail("the file was read"))
    with pytest.raises(PromptError, match=rf"prompts_file={path}: 1500 bytes, more than "
                                          r"generate.max_prompt_file_bytes \(1000\)"):
        prompt_lines(GenerateConfig(prompts_file=path, max_prompt_file_bytes=1000))


def test_prompt_count_characters_and_motions_are_bounded(tmp_path):
    path = _file(tmp_path, b"walk\n" * 11)
    with pytest.raises(PromptError, match=r"p.txt: 11 prompts, more than generate.max_prompts \(10\)"):
        prompt_lines(GenerateConfig(prompts_file=path, max_prompts=10))
    assert len(prompt_lines(GenerateConfig(prompts_file=path, max_prompts=11))[0]) == 11
    path = _file(tmp_path, b"walk\n" + b"x" * 1001 + b"\n")
    with pytest.raises(PromptError, match=r"p.txt line 2: 1001 characters, more than generate.max_prompt_chars "
                                          r"\(1000\)"):
        prompt_lines(GenerateConfig(prompts_file=path))
    path = _file(tmp_path, b"walk\n" * 3)
    with pytest.raises(PromptError, match=r"3 prompts x generate.samples_per_prompt \(4\) = 12 motions, more than "
                                          r"generate.max_motions \(10\)"):
        prompt_lines(GenerateConfig(prompts_file=path, samples_per_prompt=4, max_motions=10))
    with pytest.raises(ConfigError, match=r"generate.samples_per_prompt = 1000000000: must be in \[1, 10000\]"):
        from_dict(GenerateConfig, {"samples_per_prompt": 1_000_000_000})
    with pytest.raises(ValueError, match="generate.prompts: 3 prompts, more than generate.max_prompts"):
        from_dict(GenerateConfig, {"prompts": ["walk"] * 3, "max_prompts": 2})  # inline prompts: at validation


@pytest.mark.parametrize(("content", "message"), [
    (b"a person walks\na person \x00jumps\n", r"p.txt line 2: control character U\+0000 .* at column 10"),
    (b"a person walks\x0ca person jumps\n\x00\n", r"p.txt line 1: control character U\+000C"),  # not split
    (b"walk\r\nrun\rjump\n", r"p.txt line 2: control character U\+000D"),
    ("walk\nrun\u2028jump\n".encode(), r"p.txt line 2: control character U\+2028"),
])
def test_control_characters_are_refused_naming_the_line(tmp_path, content, message):
    with pytest.raises(PromptError, match=message):
        prompt_lines(GenerateConfig(prompts_file=_file(tmp_path, content)))


def test_tabs_and_crlf_are_fine_and_line_numbers_count_newlines_only(tmp_path):
    path = _file(tmp_path, b"a person\twalks\r\n40#a person jumps\r\n\r\n")
    prompts = load_prompts(GenerateConfig(prompts_file=path), fps=20.0, max_frames=196)
    assert [(p.text, p.where) for p in prompts] == [("a person\twalks", f"{path} line 1"),
                                                    ("a person jumps", f"{path} line 2")]
    with pytest.raises(PromptError, match=r"generate.prompts line 2: control character U\+000A"):
        prompt_lines(GenerateConfig(prompts=["walk", "run\njump"]))


# ------------------------------------------------------------------------------------------------ generation
def test_each_motion_comes_from_its_own_seed(encoder, stats, one_torch_thread):
    from easytune.core.motion.features import recover_from_ric

    gen = tiny_generator()
    prompts = ["12#a person walks forward", "0.4s#a person jumps"]
    motions = generate_from_prompts(gen, prompts, stats, encoder, seed=10, samples_per_prompt=2, num_steps=3)
    assert [(m.prompt_index, m.sample, m.seed, len(m.joints)) for m in motions] == [
        (0, 0, 10, 12), (0, 1, 11, 12), (1, 0, 12, 8), (1, 1, 13, 8)]
    for m in motions:
        assert m.features.shape == (len(m.joints), 263) and m.joints.shape[1:] == (22, 3)
        np.testing.assert_allclose(m.joints, recover_from_ric(m.features, 22), atol=1e-6)
    assert not np.allclose(motions[2].features, motions[3].features)  # samples differ
    alone = generate_from_prompts(gen, [prompts[1]], stats, encoder, seed=13, num_steps=3)[0]
    np.testing.assert_array_equal(alone.features, motions[3].features)  # motion k = its seed alone
    # de-normalised with the dataset statistics: the generator's normalised output times std plus mean
    batch_text = encoder.encode(["a person jumps"])
    from easytune.core.data.text import TextBatch

    raw = gen.generate(TextBatch.from_embeddings(batch_text, [0]), torch.tensor([8]),
                       generator=torch.Generator().manual_seed(13), num_steps=3)[0]
    np.testing.assert_allclose(alone.features, raw.numpy() * stats.std + stats.mean, rtol=1e-5, atol=1e-5)


def test_generation_checks_lengths_against_the_model(encoder, stats):
    with pytest.raises(PromptError, match="prompts line 1: length 40 frames .* maximum of 24 frames"):
        generate_from_prompts(tiny_generator(), ["40#a person walks"], stats, encoder)
    with pytest.raises(PromptError, match="length 30 frames is outside 1..24"):
        generate_from_prompts(tiny_generator(), [Prompt("walk", 30, "here")], stats, encoder)


def test_export_writes_every_listed_file(encoder, stats, one_torch_thread):
    bvh = pytest.importorskip("bvh")
    from easytune.core.motion.bvh import parse_bvh

    motions = generate_from_prompts(tiny_generator(), ["10#a person waves", "a person kicks"], stats, encoder,
                                    num_steps=2, default_length=6)
    files, rows = export_motions(motions, "base_mdm", video=VideoConfig(width=64, height=48, strip_frames=3))
    assert len(rows) == 2 and {"index.csv", "index.json"} <= set(files)
    listed = {r[k] for r in rows for k in ("joints", "features", "bvh", "video", "strip")}
    assert listed | {"index.csv", "index.json"} == set(files)
    index = list(csv.DictReader(io.StringIO(files["index.csv"].decode())))
    assert [r["file"] for r in index] == ["000_a_person_waves_s0", "001_a_person_kicks_s0"]
    assert json.loads(files["index.json"]) == rows
    for row, m in zip(rows, motions, strict=True):
        assert (row["prompt"], row["model"], row["seed"], row["frames"]) == (m.prompt.text, "base_mdm", m.seed,
                                                                            len(m.joints))
        with np.load(io.BytesIO(files[row["joints"]]), allow_pickle=False) as npz:
            np.testing.assert_array_equal(npz["joints"], m.joints)
            assert (float(npz["fps"]), str(npz["prompt"]), str(npz["model"]), int(npz["seed"])) == (
                20.0, m.prompt.text, "base_mdm", m.seed)
        np.testing.assert_array_equal(np.load(io.BytesIO(files[row["features"]]), allow_pickle=False), m.features)
        text = files[row["bvh"]].decode()
        theirs = bvh.Bvh(text)
        assert len(theirs.get_joints_names()) == 22 and theirs.nframes == len(m.joints)
        ours = parse_bvh(text)
        fk = ours.global_positions()[:, [ours.joint_names.index(n) for n in HUMANML3D.joint_names]] / 100.0
        error = np.linalg.norm(fk - m.joints, axis=-1)
        assert row["bvh_mean_error_cm"] == pytest.approx(error.mean() * 100, abs=1e-3)
        assert row["bvh_max_error_cm"] == pytest.approx(error.max() * 100, abs=1e-3)
        assert row["video"].endswith(".mp4") and files[row["video"]][4:8] == b"ftyp"
        assert files[row["strip"]][:8] == b"\x89PNG\r\n\x1a\n"


def test_export_gif_or_no_video():
    from easytune.core.export.prompts import GeneratedMotion
    from tests.core.motion.test_bvh import _generated_like

    joints = _generated_like()[:6].astype(np.float32)
    motion = GeneratedMotion(Prompt("walk", 6, "x"), 0, 0, 5, np.zeros((6, 263), np.float32), joints)
    files, rows = export_motions([motion], "m", video=VideoConfig(format="gif", width=32, height=32,
                                                                   strip_frames=0))
    assert rows[0]["video"] == "000_walk_s0.gif" and files["000_walk_s0.gif"][:3] == b"GIF"
    assert "strip" not in rows[0] and not any(name.endswith(".png") for name in files)
    assert rows[0]["bvh_mean_error_cm"] < 0.01  # a motion on the template skeleton round-trips exactly
    files, rows = export_motions([motion], "m", video=VideoConfig(format="none", strip_frames=0))
    assert sorted(files) == ["000_walk_s0.bvh", "000_walk_s0.npy", "000_walk_s0.npz", "index.csv", "index.json"]


def test_export_falls_back_to_gif_when_mp4_cannot_be_encoded(monkeypatch):
    from easytune.core.export import render
    from easytune.core.export.prompts import GeneratedMotion
    from tests.core.motion.test_bvh import _generated_like

    def no_ffmpeg():
        raise RuntimeError("no ffmpeg binary for this platform")

    monkeypatch.setattr(render, "ffmpeg_executable", no_ffmpeg)
    joints = _generated_like()[:4].astype(np.float32)
    motion = GeneratedMotion(Prompt("walk", 4, "x"), 0, 0, 0, np.zeros((4, 263), np.float32), joints)
    files, rows = export_motions([motion], "m", video=VideoConfig(format="mp4", width=32, height=32,
                                                                   strip_frames=0))
    assert rows[0]["video"] == "000_walk_s0.gif" and files["000_walk_s0.gif"][:3] == b"GIF"


def test_bad_prompt_stops_before_anything_is_generated(encoder, stats, tmp_path):
    gen = tiny_generator()
    calls = []
    original = gen.generate
    gen.generate = lambda *a, **k: calls.append(1) or original(*a, **k)
    path = tmp_path / "p.txt"
    path.write_text("8#a person walks\n8#a person jumps\n0#a person sits\n")
    with pytest.raises(PromptError, match="line 3"):
        generate_and_export(GenerateConfig(model="base_mdm", prompts_file=str(path)), gen, stats, encoder)
    assert calls == []
    path.write_text("8#a person walks\n")
    result = generate_and_export(GenerateConfig(model="base_mdm", prompts_file=str(path), num_steps=2,
                                                video=VideoConfig(format="none", strip_frames=0)),
                                 gen, stats, encoder)
    assert calls == [1] and result.report["motions"] == 1 and result.report["num_steps"] == 2
    assert result.report["bvh"]["mean_error_cm"] == result.index[0]["bvh_mean_error_cm"]
