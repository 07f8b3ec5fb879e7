"""finetune_study wiring: no choice can read the test split or the evaluator (the nodes' inputs say so)."""

from easytune.pipelines.finetune_study import create_pipeline

FORBIDDEN = {"test_motions", "evaluator", "content_classifier", "params:evaluation", "study_scores"}


def test_nodes_that_choose_or_train_never_read_the_test_split_or_the_evaluator():
    pipe = create_pipeline()
    inputs = {n.name: set(n.inputs) for n in pipe.nodes}
    choosing = ("study_base_signals", "select_study_learning_rates", "train_study_runs", "select_study_points")
    for name in choosing:
        assert not inputs[name] & FORBIDDEN, (name, inputs[name] & FORBIDDEN)
    assert "val_motions" in inputs["select_study_learning_rates"]
    assert inputs["select_study_points"] == {"study_training", "params:finetune_study"}
    # scoring depends on the selection, so every choice is fixed before a test metric exists
    assert {"study_selection", "test_motions", "evaluator"} <= inputs["score_study_snapshots"]
    order = [n.name for n in pipe.nodes]  # topological
    assert max(order.index(n) for n in choosing) < order.index("score_study_snapshots")
