"""finetune_study: the method comparison as a study.

base signals -> learning-rate selection (selection seed, val signals) -> runs (variants x seeds, snapshots along one
GFLOPs budget) -> admissible points (val signals) -> scoring of every snapshot on the test split by the independent
evaluator -> report (four views with CIs over seeds), figures, one MLflow child run per variant x seed.

Variants are ``params:finetune_study.variants.<name>`` (``enabled: false`` skips one). The nodes that choose never
take the test split or the evaluator (tested).
"""

from kedro.pipeline import Node, Pipeline

from easytune.pipelines.finetune_study import nodes

GENERATORS = ("pretrained_latent_denoiser", "pretrained_frame_denoiser", "pretrained_consistency_model", "motion_vae")
TRAINING = (*GENERATORS, "reward_model", "train_motions", "val_motions", "text_embeddings")
REWARDS = ("reward_model", "retrieval_model", "reward_model_no_spl")  # after SPL, before SPL, the no-SPL control
TRAINING_ALL_REWARDS = (*GENERATORS, *REWARDS, "train_motions", "val_motions", "text_embeddings")


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(nodes.study_base_signals,
             inputs=[*TRAINING, "params:finetune_study", "params:finetune", "params:runtime"],
             outputs="study_base_signals", name="study_base_signals"),
        Node(nodes.select_study_learning_rates,
             inputs=[*TRAINING_ALL_REWARDS, "study_base_signals", "params:finetune_study", "params:finetune",
                     "params:runtime"],
             outputs="study_lr_selection", name="select_study_learning_rates"),
        Node(nodes.train_study_runs,
             inputs=[*TRAINING_ALL_REWARDS, "study_base_signals", "study_lr_selection", "params:finetune_study",
                     "params:finetune", "params:runtime"],
             outputs=["study_training", "study_snapshots"], name="train_study_runs"),
        Node(nodes.select_study_points, inputs=["study_training", "params:finetune_study"],
             outputs="study_selection", name="select_study_points"),
        Node(nodes.score_study_snapshots,
             inputs=["study_snapshots", "study_selection", *GENERATORS, "evaluator", "content_classifier",
                     "test_motions", "text_embeddings", "feature_stats", "params:finetune_study", "params:finetune",
                     "params:evaluation", "params:dataset", "params:runtime"],
             outputs=["study_scores", "study_generated"], name="score_study_snapshots"),
        Node(nodes.build_study_report,
             inputs=["study_scores", "study_base_signals", "study_selection", "study_training",
                     "params:finetune_study"],
             outputs=["study_report", "study_tables_md", "study_pareto_plot", "study_cost_plot", "study_gain_plot",
                      "study_proxy_plot", "study_mlflow_runs"],
             name="build_study_report"),
    ])
