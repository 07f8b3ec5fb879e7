"""finetune_study: every study variant trained with several seeds under one GFLOPs budget (snapshots along it),
admissible points chosen on validation signals, snapshots scored on the test split by the independent evaluator,
then the report (four views with CIs over seeds), figures and one MLflow child run per variant x seed.

Variants are namespaces (``kedro run --pipeline finetune_study --namespaces draft_10`` trains/scores one); their
settings are ``params:finetune_study.variants.<name>`` (``enabled: false`` skips one).
"""

from kedro.pipeline import Node, Pipeline

from easytune.pipelines.finetune_study import nodes

STUDY_VARIANTS = ("easytune_all", "easytune_last10", "easytune_linear_increasing", "easytune_kl",
                  "easytune_chain_all", "draft_10", "refl_10", "alignprop", "drtune_release", "drtune_paper")

GENERATORS = ("pretrained_latent_denoiser", "pretrained_frame_denoiser", "motion_vae")
EVALUATION = ("evaluator", "content_classifier", "test_motions", "text_embeddings", "feature_stats")


def _variant(variant: str) -> Pipeline:
    template = Pipeline([
        Node(nodes.train_variant_node(variant),
             inputs=[*GENERATORS, "reward_model", "train_motions", "val_motions", "text_embeddings",
                     "study_base_signals", "params:finetune_study", "params:finetune", "params:runtime"],
             outputs=["study_training", "study_snapshots"], name="train_study_variant"),
        Node(nodes.score_variant_node(variant),
             inputs=["study_snapshots", "study_training", "study_selection", *GENERATORS, *EVALUATION,
                     "params:finetune_study", "params:finetune", "params:evaluation", "params:dataset",
                     "params:runtime"],
             outputs=["study_scores", "study_generated"], name="score_study_variant"),
    ])
    shared = {*GENERATORS, *EVALUATION, "reward_model", "train_motions", "val_motions", "study_base_signals",
              "study_selection"}
    return Pipeline(template, namespace=variant, inputs=shared,
                    parameters={"params:finetune_study", "params:finetune", "params:evaluation", "params:dataset",
                                "params:runtime"})


def create_pipeline(variants: tuple[str, ...] = STUDY_VARIANTS, **kwargs) -> Pipeline:
    shared = Pipeline([
        Node(nodes.study_base_signals,
             inputs=[*GENERATORS, "reward_model", "val_motions", "text_embeddings", "params:finetune_study",
                     "params:finetune", "params:runtime"],
             outputs="study_base_signals", name="study_base_signals"),
        Node(nodes.select_study_points,
             inputs=["params:finetune_study", *[f"{v}.study_training" for v in variants]],
             outputs="study_selection", name="select_study_points"),
        Node(nodes.score_study_base,
             inputs=[*GENERATORS, *EVALUATION, "params:finetune_study", "params:finetune", "params:evaluation",
                     "params:dataset", "params:runtime"],
             outputs="study_base_scores", name="score_study_base"),
        Node(nodes.build_study_report,
             inputs=["study_base_scores", "study_base_signals", "study_selection", "params:finetune_study",
                     *[f"{v}.study_training" for v in variants], *[f"{v}.study_scores" for v in variants]],
             outputs=["study_report", "study_tables_md", "study_pareto_plot", "study_cost_plot", "study_gain_plot",
                      "study_mlflow_runs"],
             name="build_study_report"),
    ])
    return shared + sum((_variant(v) for v in variants), Pipeline([]))
