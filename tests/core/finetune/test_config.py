"""The one fine-tuning configuration source: the merge, the generator registry, and code defaults against conf/base."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from easytune.core.finetune.config import (
    GENERATORS,
    FinetuneConfig,
    FinetuneSettings,
    method_config,
)
from easytune.core.infra.config import ConfigError, from_dict
from easytune.core.study.config import StudyConfig


def _base_params(project_root, name: str) -> dict:
    return yaml.safe_load((project_root / "conf" / "base" / f"parameters_{name}.yml").read_text())[name]


def test_method_config_merges_layers_in_order_and_validates_the_policy():
    cfg = method_config({"lr": 1e-5, "batch_size": 8}, {"method": "draft_k", "policy": {"k": 3}}, {"lr": 2e-5},
                        where="w")
    assert (cfg.method, cfg.policy, cfg.lr, cfg.batch_size) == ("draft_k", {"k": 3}, 2e-5, 8)
    with pytest.raises(ConfigError, match=r"w.method = 'nope'"):
        method_config({"method": "nope"}, where="w")
    with pytest.raises(ConfigError, match=r"w.policy"):
        method_config({"method": "draft_k", "policy": {"kk": 3}}, where="w")


def test_settings_give_each_method_its_resume_file_and_the_chosen_checkpoints():
    settings = from_dict(FinetuneSettings, {"generator": "mdm", "resume_dir": "r", "common": {"lr": 3e-5},
                                            "methods": {"m": {"method": "refl", "policy": {"m": 2}}}})
    cfg = settings.method("m")
    assert (cfg.method, cfg.lr, cfg.resume_path) == ("refl", 3e-5, "r/refl.pt")
    frame = {"kind": "frame_denoiser"}
    assert settings.pretrained({"pretrained_frame_denoiser": frame, "motion_vae": None}) == (
        "pretrained_frame_denoiser", frame, None)
    mld = from_dict(FinetuneSettings, {"generator": "mlcm"})
    with pytest.raises(ValueError, match=r"pretrain --tags mld` then `--tags mlcm"):
        mld.pretrained({"pretrained_consistency_model": {"kind": "x"}, "motion_vae": None})
    with pytest.raises(ConfigError, match="finetune.methods has no 'x'"):
        settings.method("x")


def test_the_registry_names_the_catalog_entries(project_root):
    catalog = yaml.safe_load((project_root / "conf" / "base" / "catalog_pretrain.yml").read_text())
    for spec in GENERATORS.values():
        assert spec.checkpoint in catalog, spec


def test_conf_base_sets_every_finetune_field_so_no_code_default_applies_to_a_project_run(project_root):
    common = _base_params(project_root, "finetune")["common"]
    fields = {f.name for f in dataclasses.fields(FinetuneConfig)}
    # method/policy come from each method; resume_path from finetune.resume_dir
    assert fields - set(common) == {"method", "policy", "resume_path"}


def test_study_code_defaults_equal_conf_base(project_root):
    yaml_study = _base_params(project_root, "finetune_study")
    code = StudyConfig()
    for name, value in yaml_study.items():
        if name in ("variants", "spl_ablation", "finetune"):
            continue  # per-project choices: no code default stands for them
        got = getattr(code, name)
        got = dataclasses.asdict(got) if dataclasses.is_dataclass(got) else got
        assert got == value, f"StudyConfig.{name}: code default {got!r}, conf/base {value!r}"
