"""evaluation: evaluator + content classifier (train split, real motions) -> score real, base and fine-tuned
models on the test split -> metrics JSON, tables, charts, generated joints, side-by-side renders, sanity report."""

from kedro.pipeline import Node, Pipeline

from easytune.pipelines.evaluation import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(nodes.train_evaluator_node,
             ["train_motions", "val_motions", "text_embeddings", "feature_stats", "params:evaluation",
              "params:runtime"],
             ["evaluator", "evaluator_training_history"], name="train_evaluator"),
        Node(nodes.train_content_classifier_node,
             ["train_motions", "val_motions", "feature_stats", "params:evaluation", "params:runtime"],
             ["content_classifier", "content_classifier_training_history"], name="train_content_classifier"),
        Node(nodes.collect_models_node,
             ["finetune_report", "base_model_checkpoints", "finetuned_denoisers", "params:evaluation"],
             "evaluation_generators", name="collect_models"),
        Node(nodes.evaluate_models_node,
             ["evaluation_generators", "evaluator", "content_classifier", "test_motions", "text_embeddings",
              "feature_stats", "params:evaluation", "params:dataset", "params:runtime"],
             ["evaluation_metrics", "generated_motions", "evaluation_mlflow_metrics", "evaluation_timings"],
             name="evaluate_models"),
        Node(nodes.sanity_node,
             ["train_motions", "test_motions", "text_embeddings", "feature_stats", "evaluator",
              "params:evaluation", "params:dataset", "params:runtime"],
             "evaluation_sanity", name="evaluation_sanity_checks"),
        Node(nodes.report_node,
             ["evaluation_metrics", "evaluation_sanity", "evaluation_timings", "evaluator", "content_classifier",
              "params:evaluation"],
             ["evaluation_report", "evaluation_table_csv", "evaluation_table_md", "evaluation_metric_bars"],
             name="evaluation_report"),
        Node(nodes.render_node, ["generated_motions", "params:evaluation", "params:dataset"],
             "evaluation_renders", name="render_comparisons"),
    ])
