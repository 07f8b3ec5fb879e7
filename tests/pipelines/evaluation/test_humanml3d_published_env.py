"""conf/humanml3d_published: the environment's parameters build, and a missing published path names the environment
variable and what to put there."""

from pathlib import Path

import pytest

from easytune.core.evaluation.protocol import EvaluationConfig
from easytune.core.evaluation.published_assets import PublishedPathError
from easytune.core.infra.config import from_dict

CONF = Path(__file__).resolve().parents[3] / "conf"


def _evaluation_params() -> EvaluationConfig:
    from kedro.config import OmegaConfigLoader

    from easytune.settings import CONFIG_LOADER_ARGS

    args = {k: v for k, v in CONFIG_LOADER_ARGS.items() if k != "default_run_env"}
    params = OmegaConfigLoader(str(CONF), env="humanml3d_published", **args)["parameters"]
    assert params["data_processing"]["source"]["root_variable"] == "EASYTUNE_DATA_DIR"
    return from_dict(EvaluationConfig, params["evaluation"], where="params:evaluation")


def test_the_environment_scores_the_published_mld_with_the_standard_evaluator(monkeypatch, tmp_path):
    monkeypatch.setenv("EASYTUNE_DATA_DIR", str(tmp_path / "HumanML3D"))
    monkeypatch.setenv("EASYTUNE_PUBLISHED_DIR", str(tmp_path / "published"))
    config = _evaluation_params()
    assert config.scored_by == "t2m" and config.protocol.replications == 20 and config.protocol.group_size == 32
    assert (config.protocol.diversity_pairs, config.protocol.mm_captions, config.protocol.mm_samples,
            config.protocol.mm_pairs) == (300, 100, 30, 10)
    spec = config.published.models["published_mld"]
    assert (spec.family, spec.text_encoder) == ("mld", "clip")
    assert config.published.root == str(tmp_path / "published")
    assert config.published.dataset_dir == str(tmp_path / "HumanML3D")


def test_missing_paths_name_the_variable_and_what_to_put_there(monkeypatch, tmp_path):
    monkeypatch.delenv("EASYTUNE_DATA_DIR", raising=False)
    monkeypatch.delenv("EASYTUNE_PUBLISHED_DIR", raising=False)
    config = _evaluation_params()
    with pytest.raises(PublishedPathError, match=r"environment variable EASYTUNE_DATA_DIR is not set.*"
                                                 r"set EASYTUNE_DATA_DIR to the HumanML3D folder"):
        config.published.evaluator_paths()
    (tmp_path / "HumanML3D" / "texts").mkdir(parents=True)
    monkeypatch.setenv("EASYTUNE_DATA_DIR", str(tmp_path / "HumanML3D"))
    config = _evaluation_params()
    with pytest.raises(PublishedPathError, match=r"environment variable EASYTUNE_PUBLISHED_DIR is not set.*"
                                                 r"text_mot_match/model/finest\.tar"):
        config.published.evaluator_paths()
    (tmp_path / "published").mkdir()
    monkeypatch.setenv("EASYTUNE_PUBLISHED_DIR", str(tmp_path / "published"))
    config = _evaluation_params()
    with pytest.raises(PublishedPathError, match=r"no file .*published/deps/t2m/t2m/text_mot_match/model/finest\.tar"
                                                 r" \(evaluation\.published\.root from EASYTUNE_PUBLISHED_DIR="):
        config.published.evaluator_paths()
    with pytest.raises(PublishedPathError, match=r"models\.published_mld\.checkpoint.*1222_mld_humanml3d_FID041"):
        config.published.model_paths("published_mld")
