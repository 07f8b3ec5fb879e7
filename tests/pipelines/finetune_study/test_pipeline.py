"""finetune_study wiring: no choice can read the test split or the evaluator (the nodes' inputs say so)."""

from easytune.pipelines.finetune_study import create_pipeline
from easytune.pipelines.finetune_study.pipeline import STUDY_VARIANTS

FORBIDDEN = {"test_motions", "evaluator", "content_classifier", "params:evaluation"}


def _inputs(pipe, suffix: str) -> dict[str, set[str]]:
    return {n.name: set(n.inputs) for n in pipe.nodes if n.name.endswith(suffix)}


def test_training_and_selection_never_read_the_test_split_or_the_evaluator():
    pipe = create_pipeline()
    chosen = {**_inputs(pipe, "train_study_variant"), **_inputs(pipe, "select_study_points"),
              **_inputs(pipe, "study_base_signals")}
    assert len(chosen) == len(STUDY_VARIANTS) + 2
    for name, inputs in chosen.items():
        assert not inputs & FORBIDDEN, (name, inputs & FORBIDDEN)
        assert not any(i.endswith(("study_scores", "study_base_scores")) for i in inputs), name
    assert "val_motions" in chosen["easytune_all.train_study_variant"]
    # the scores depend on the selection, never the other way round
    scoring = _inputs(pipe, "score_study_variant")
    assert all("study_selection" in inputs and "test_motions" in inputs for inputs in scoring.values())


def test_every_variant_is_a_namespace_with_shared_inputs():
    pipe = create_pipeline()
    for variant in STUDY_VARIANTS:
        assert f"{variant}.study_training" in pipe.all_outputs() and f"{variant}.study_scores" in pipe.all_outputs()
    assert "reward_model" in pipe.inputs() and not any(i.endswith(".reward_model") for i in pipe.all_inputs())
