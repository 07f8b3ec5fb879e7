"""The generate pipeline on a tiny fine-tuned checkpoint: every listed file on disk, a model chosen by name,
and every bad input stopped with one message before anything is written."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from easytune.core.infra.checkpoint import make_checkpoint
from easytune.datasets import FileBundleDataset
from tests.core.export.test_prompts import dataset_stats

ROOT = Path(__file__).resolve().parents[3]


def params(**overrides) -> dict:
    base = yaml.safe_load((ROOT / "conf/base/parameters_generate.yml").read_text())["generate"]
    tiny = yaml.safe_load((ROOT / "conf/tiny/parameters_generate.yml").read_text())["generate"]
    merged = {**base, **tiny, "video": {**base["video"], **tiny["video"]}}
    return {**merged, **overrides}


def finetuned_mdm() -> dict:
    from easytune.core.models.frame_denoiser import FrameDenoiser, FrameDenoiserConfig
    from easytune.core.sampling.diffusion import MDM_DIFFUSION, Diffusion
    from easytune.core.sampling.generator import MotionGenerator

    torch.manual_seed(0)
    den = FrameDenoiser(FrameDenoiserConfig(preset="tiny", feature_dim=263, text_dim=384))
    gen = MotionGenerator(den, Diffusion(MDM_DIFFUSION), "mdm", max_length=24, feature_dim=263)
    return make_checkpoint("frame_denoiser", gen.denoiser, gen.checkpoint_metadata() | {"method": "easytune_step"})


def run(tmp_path: Path, generate: dict) -> tuple[Path, dict]:
    from easytune.pipelines.generate import create_pipeline

    ckpt = finetuned_mdm()
    data = {
        "base_model_checkpoints": {},  # no base model trained: only the fine-tuned one exists
        "finetuned_denoisers": {"easytune_step": lambda: ckpt},
        "feature_stats": dataset_stats().to_arrays(),
        "params:generate": generate,
        "params:data_processing.text_encoder": {"model_path": None, "max_tokens": 32, "batch_size": 8},
        "params:dataset": {"skeleton": "humanml3d", "fps": 20.0},
        "params:runtime": {"device": "cpu", "seed": 0},
    }
    out = tmp_path / "prompt_motions"
    catalog = DataCatalog({name: MemoryDataset(value, copy_mode="assign") for name, value in data.items()})
    catalog["prompt_motions"] = FileBundleDataset(str(out), subfolders=True)
    report = MemoryDataset()
    catalog["generate_report"] = report
    catalog["generate_mlflow_metrics"] = MemoryDataset()
    SequentialRunner().run(create_pipeline(), catalog)
    return out, report.load()


def test_generate_pipeline_writes_every_file_for_every_prompt(tmp_path, one_torch_thread):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("12#a person walks forward\n0.5s#a person jumps\n")
    out, report = run(tmp_path, params(prompts_file=str(prompts), samples_per_prompt=2))
    folder = out / "easytune_step"
    index = (folder / "index.csv").read_text().splitlines()
    assert len(index) == 1 + 4 and report["motions"] == 4 and report["model"] == "easytune_step"
    import json

    rows = json.loads((folder / "index.json").read_text())
    for row in rows:
        for key in ("joints", "features", "bvh", "video", "strip"):
            assert (folder / row[key]).stat().st_size > 0, (row["file"], key)
        assert row["video"].endswith(".mp4")
    assert [r["frames"] for r in rows] == [12, 12, 10, 10] and [r["seed"] for r in rows] == [0, 1, 2, 3]
    with np.load(folder / rows[2]["joints"], allow_pickle=False) as npz:
        assert npz["joints"].shape == (10, 22, 3) and str(npz["prompt"]) == "a person jumps"
    assert np.load(folder / rows[2]["features"], allow_pickle=False).shape == (10, 263)


def _bad_file(tmp_path: Path, content: bytes) -> str:
    path = tmp_path / "bad_prompts.txt"
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize(("case", "message"), [
    ("empty_line", r"bad_prompts.txt line 2: empty prompt"),
    ("too_long", r"bad_prompts.txt line 1: length 30 frames \(1.5 s\) is longer than the model's maximum of 24"),
    ("non_positive", r"bad_prompts.txt line 2: the prefix before '#': length '0' is not positive"),
    ("not_utf8", r"bad_prompts.txt: not UTF-8 text \(byte 0xe9 on line 1\)"),
    ("unknown_model", r"generate.model: unknown model 'easytune'; available: easytune_step"),
])
def test_bad_input_one_message_nothing_written(tmp_path, case, message):
    files = {"empty_line": b"8#a person walks\n\n8#a person jumps\n", "too_long": b"30#a person walks\n",
             "non_positive": b"8#a person walks\n0#a person jumps\n", "not_utf8": "8#caf\xe9\n".encode("latin-1"),
             "unknown_model": b"8#a person walks\n"}
    generate = params(prompts_file=_bad_file(tmp_path, files[case]))
    if case == "unknown_model":
        generate["model"] = "easytune"
    out = tmp_path / "prompt_motions"
    (out / "easytune_step").mkdir(parents=True)
    (out / "easytune_step" / "index.csv").write_text("from an earlier run\n")
    with pytest.raises(Exception) as info:
        run(tmp_path, generate)
    assert __import__("re").search(message, str(info.value)), str(info.value)
    assert sorted(p.name for p in out.rglob("*")) == ["easytune_step", "index.csv"]  # nothing new, nothing lost
    assert (out / "easytune_step" / "index.csv").read_text() == "from an earlier run\n"


def test_bad_prompts_stop_the_node_before_any_model_loads(tmp_path, monkeypatch):
    """A NUL in a prompt used to fail (a bare KeyError) only after the model had loaded."""
    import easytune.pipelines.generate.nodes as nodes

    monkeypatch.setattr(nodes, "generator_checkpoints", lambda *a, **k: pytest.fail("a model was loaded"))
    for content, message in ((b"8#a person walks\n8#a person\x00 jumps\n", "bad_prompts.txt line 2: control character"),
                             (b"walk\n" * 10_001, "10001 prompts, more than generate.max_prompts (10000)")):
        with pytest.raises(Exception) as info:
            run(tmp_path, params(prompts_file=_bad_file(tmp_path, content)))
        assert message in str(info.value)
