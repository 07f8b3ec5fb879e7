"""finetune_study wiring: no choice can read the test split or the evaluator (the nodes' inputs say so); every
selection and every (variant, seed) run is a node, one namespace per enabled variant; the Airflow DAG that
kedro-airflow makes of it has one task per namespace."""

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from easytune.pipelines.finetune_study import create_pipeline

FORBIDDEN = {"test_motions", "evaluator", "content_classifier", "params:evaluation", "study_scores"}
ROOT = Path(__file__).resolve().parents[3]


def _params(env: str | None = None) -> dict:
    base = yaml.safe_load((ROOT / "conf" / "base" / "parameters_finetune_study.yml").read_text())["finetune_study"]
    return copy.deepcopy(base)


def test_nodes_that_choose_or_train_never_read_the_test_split_or_the_evaluator():
    pipe = create_pipeline(finetune_study=_params())
    inputs = {n.name: set(n.inputs) for n in pipe.nodes}
    runs = [n.name for n in pipe.nodes if n.namespace and ".score_seed" not in n.name]
    scorers = [n.name for n in pipe.nodes if ".score_seed" in n.name]
    choosing = ("study_base_signals", *runs, "collect_study_runs", "select_study_points")
    for name in choosing:
        assert not inputs[name] & FORBIDDEN, (name, inputs[name] & FORBIDDEN)
    assert "val_motions" in inputs["study_easytune_all.select_lr"]
    assert inputs["select_study_points"] == {"study_training", "params:finetune_study"}
    # a run's scoring comes after that run (so after its learning rate was chosen); its admissible point is checked
    # against the selection before any score reaches the report
    assert {"study_easytune_all.run_seed1", "test_motions", "evaluator"} <= inputs["study_easytune_all.score_seed1"]
    assert {"test_motions", "evaluator"} <= inputs["study_base.score_seed1"]
    assert "study_selection" in inputs["collect_study_scores"]
    assert "study_scores" in inputs["build_study_report"] and "study_selection" in inputs["build_study_report"]
    params = _params()
    assert set(scorers) == {f"study_{v}.score_seed{k}" for v in (*enabled_variants(params), "base")
                            for k in params["seeds"]}


def enabled_variants(params: dict) -> list[str]:
    return [v for v, spec in params["variants"].items() if spec.get("enabled", True)]


def test_one_namespace_per_enabled_variant_with_a_selection_and_one_node_per_seed():
    params = _params()
    params["seeds"] = [3, 7]
    params["variants"]["easytune_kl"]["enabled"] = True
    params["variants"]["refl_10"]["enabled"] = False
    pipe = create_pipeline(finetune_study=params)
    enabled = [v for v, spec in params["variants"].items() if spec.get("enabled", True)]
    namespaces: dict[str, set[str]] = {}
    for n in pipe.nodes:
        if n.namespace:
            namespaces.setdefault(n.namespace, set()).add(n.name.removeprefix(n.namespace + "."))
    assert namespaces == {f"study_{v}": {"select_lr", "seed3", "seed7", "score_seed3", "score_seed7"}
                          for v in enabled} | {"study_base": {"score_seed3", "score_seed7"}}
    inputs = {n.name: set(n.inputs) for n in pipe.nodes}
    outputs = {n.name: set(n.outputs) for n in pipe.nodes}
    assert outputs["study_draft_10.seed7"] == {"study_draft_10.run_seed7"}
    assert "study_draft_10.lr_selection" in inputs["study_draft_10.seed7"]
    # the before-SPL variant borrows its partner's learning rate and trains with its own reward
    assert inputs["study_easytune_last10_before_spl.select_lr"] == {"study_easytune_last10.lr_selection"}
    assert "retrieval_model" in inputs["study_easytune_last10_before_spl.seed3"]
    assert "retrieval_model" not in inputs["study_easytune_last10.seed3"]
    assert outputs["collect_study_runs"] == {"study_lr_selection", "study_training"}
    assert outputs["study_draft_10.score_seed3"] == {"study_draft_10.scores_seed3", "study_draft_10.generated"}
    assert outputs["study_draft_10.score_seed7"] == {"study_draft_10.scores_seed7"}  # only the first seed keeps
    assert {f"study_{v}.run_seed{k}" for v in enabled for k in (3, 7)} <= inputs["collect_study_runs"]


def test_kedro_airflow_makes_one_task_per_study_namespace(tmp_path):
    """`kedro airflow create --pipelines finetune_study --group-by namespace --env tiny` on a copy of the project:
    one Airflow task per enabled variant (its namespace: the selection, every seed and their scorings) and one for
    the base's scorings, the other nodes one each."""
    for name in ("conf",):
        shutil.copytree(ROOT / name, tmp_path / name)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "src").mkdir()
    for child in (tmp_path / "conf" / "local").iterdir():
        if child.name != ".gitkeep":
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    env = {**os.environ, "EASYTUNE_PROJECT_ROOT": str(tmp_path), "KEDRO_DISABLE_TELEMETRY": "1",
           "DO_NOT_TRACK": "true", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    env.pop("KEDRO_ENV", None)
    kedro = str(Path(sys.executable).with_name("kedro"))
    result = subprocess.run([kedro, "airflow", "create", "--pipelines", "finetune_study", "--group-by", "namespace",
                             "--env", "tiny", "--target-dir", "dags"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    dag = (tmp_path / "dags" / "easytune_tiny_finetune_study_dag.py").read_text()
    tiny = yaml.safe_load((ROOT / "conf" / "tiny" / "parameters_finetune_study.yml").read_text())["finetune_study"]
    variants = [v for v, spec in _params()["variants"].items()
                if {**spec, **tiny.get("variants", {}).get(v, {})}.get("enabled", True)]
    namespaces = set(re.findall(r'_run_kedro_node\(namespaces=\["([^"]+)"\]\)', dag))
    assert namespaces == {f"study_{v}" for v in (*variants, "base")}
    tasks = set(re.findall(r'@task\(task_id="([^"]+)"\)', dag))
    assert tasks == {f"study-{v}".replace("_", "-") for v in (*variants, "base")} | {
        "study-base-signals", "collect-study-runs", "select-study-points", "collect-study-scores",
        "build-study-report"}
    assert 'tasks["study-easytune-last10"] >> tasks["study-easytune-last10-before-spl"]' in dag
    assert 'tasks["study-base-signals"] >> tasks["study-draft-10"]' in dag
    assert 'tasks["study-draft-10"] >> tasks["collect-study-runs"]' in dag
    assert 'tasks["study-draft-10"] >> tasks["collect-study-scores"]' in dag  # its scorings are in its task


def test_collect_assembles_the_runs_in_seed_order_and_refuses_another_layout():
    import json

    import pytest
    import torch

    from easytune.pipelines.finetune_study import nodes

    params = _params()
    params["seeds"] = [2, 1]
    params["variants"], params["spl_ablation"] = {"draft_10": params["variants"]["draft_10"]}, []
    finetune = yaml.safe_load((ROOT / "conf" / "base" / "parameters_finetune.yml").read_text())["finetune"]
    choice = {"lr": 1e-4, "grid": [1e-4], "candidates": [], "rule": "single learning rate", "at_edge": None}
    runs = [{"runs": [[{"w": torch.full((2,), float(seed))}]],
             "metadata": {"variant": "draft_10", "seed": seed, "record": json.dumps({"seed": seed, "lr": 1e-4})}}
            for seed in (2, 1)]
    layout = (("draft_10", (2, 1)),)
    lrs, training = nodes.collect_study_runs(params, finetune, choice, *runs, layout=layout)
    assert lrs == {"draft_10": choice}
    assert [r["seed"] for r in training["draft_10"]["runs"]] == [2, 1]
    assert training["draft_10"]["lr_selection"] == choice and training["draft_10"]["method"] == "draft_k"
    with pytest.raises(ValueError, match="the pipeline was built for"):
        nodes.collect_study_runs(params, finetune, choice, *runs[:1], layout=(("draft_10", (2,)),))


def test_collect_scores_pairs_each_run_with_its_seed_and_checks_the_admissible_point():
    import pytest

    from easytune.pipelines.finetune_study import nodes

    params = _params()
    params["seeds"] = [2, 1]
    params["variants"], params["spl_ablation"] = {"draft_10": params["variants"]["draft_10"]}, []
    cell = {"R@1": {"mean": 0.5, "ci": [0.4, 0.6]}}
    base = [{"seed": s, "metrics": {"R@1": {"mean": 0.1 * s, "ci": [0.0, 1.0]}}} for s in (2, 1)]
    runs = [{"variant": "draft_10", "seed": s, "admissible": a, "metrics": [cell, cell]} for s, a in ((2, 1), (1, 2))]
    selection = {"variants": {"draft_10": {"indices": [1, 2], "seeds": [2, 1]}}}
    layout = (("draft_10", (2, 1)),)
    scores = nodes.collect_study_scores(selection, params, *base, *runs, layout=layout)
    assert [b["R@1"]["mean"] for b in scores["base_runs"]] == [0.2, 0.1]
    assert scores["variants"]["draft_10"] == [[cell, cell], [cell, cell]]
    assert scores["base"]["R@1"]["mean"] == pytest.approx(0.15)
    selection["variants"]["draft_10"]["indices"] = [1, 0]  # a run scored at another admissible point
    with pytest.raises(ValueError, match="do not match the selection"):
        nodes.collect_study_scores(selection, params, *base, *runs, layout=layout)
    with pytest.raises(ValueError, match="base scores for seeds"):
        nodes.collect_study_scores(selection, params, *base[::-1], *runs, layout=layout)


def test_a_guard_variant_reads_the_checkpoints_its_settings_name():
    params = _params()
    params["variants"] = {
        "easytune_all": params["variants"]["easytune_all"],
        "easytune_ensemble": {"method": "easytune_step", "policy": {"steps": "all"},
                              "finetune": {"reward_ensemble": {
                                  "members": ["reward_model", "reward_model_seed1", "reward_model_seed2"],
                                  "mode": "conservative", "std_weight": 1.0}}},
        "easytune_realism": {"method": "easytune_step", "policy": {"steps": "all"},
                             "finetune": {"realism_weight": 0.5}},
    }
    params["spl_ablation"] = []
    pipe = create_pipeline(finetune_study=params)
    inputs = {n.name: set(n.inputs) for n in pipe.nodes}
    guards = {"reward_model_seed1", "reward_model_seed2", "realism_critic"}
    assert not inputs["study_easytune_all.seed1"] & guards
    assert inputs["study_easytune_ensemble.seed1"] & guards == {"reward_model_seed1", "reward_model_seed2"}
    assert inputs["study_easytune_ensemble.select_lr"] & guards == {"reward_model_seed1", "reward_model_seed2"}
    assert inputs["study_easytune_realism.seed2"] & guards == {"realism_critic"}
