"""Wiring of the ``reward`` pipeline.

train (primary seed) -> calibrate pool and k on train -> one-shot mining snapshot -> SPL (online mining) and the
no-SPL control -> evaluate the three models on test -> sanity -> the other training seeds -> report.
"""

from kedro.pipeline import Node, Pipeline

from easytune.pipelines.reward import nodes

_DATA = ["text_embeddings", "params:reward", "params:runtime"]
# optional pretrained checkpoints: read by generate_spl_negatives only when reward.generated_negatives is enabled
_GENERATORS = ["pretrained_latent_denoiser", "pretrained_frame_denoiser", "pretrained_consistency_model",
               "motion_vae"]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(nodes.train_retrieval, ["train_motions", "val_motions", *_DATA],
             ["retrieval_model", "retrieval_training_history"], name="train_retrieval_model"),
        Node(nodes.calibrate_spl, ["retrieval_model", "train_motions", *_DATA],
             ["spl_calibration", "spl_calibration_grid"], name="calibrate_spl_mining"),
        Node(nodes.mine_preference_pairs, ["retrieval_model", "spl_calibration", "train_motions", *_DATA],
             ["preference_pairs", "preference_mining_summary"], name="mine_preference_pairs"),
        Node(nodes.generate_spl_negatives, [*_GENERATORS, "train_motions", *_DATA], "spl_generated_negatives",
             name="generate_spl_negatives"),
        Node(nodes.spl_finetune_reward, ["retrieval_model", "spl_calibration", "preference_pairs",
                                         "spl_generated_negatives", "train_motions", "val_motions", *_DATA],
             ["reward_model", "spl_training_history", "spl_mined_pairs", "spl_run_summary"], name="spl_finetune"),
        Node(nodes.no_spl_control, ["retrieval_model", "train_motions", "val_motions", *_DATA],
             ["reward_model_no_spl", "no_spl_training_history", "no_spl_run_summary"], name="no_spl_control"),
        Node(nodes.evaluate, ["retrieval_model", "test_motions", *_DATA], "retrieval_metrics_before",
             name="evaluate_retrieval_model"),
        Node(nodes.evaluate, ["reward_model_no_spl", "test_motions", *_DATA], "retrieval_metrics_control",
             name="evaluate_no_spl_control"),
        Node(nodes.evaluate, ["reward_model", "test_motions", *_DATA], "retrieval_metrics_after",
             name="evaluate_reward_model"),
        Node(nodes.sanity_check, ["reward_model", "test_motions", *_DATA], "reward_sanity",
             name="reward_sanity_check"),
        Node(nodes.seed_replicates, ["spl_calibration", "spl_generated_negatives", "train_motions", "val_motions", "test_motions", *_DATA],
             ["reward_seed_replicates", "reward_model_seeds"], name="train_seed_replicates"),
        Node(nodes.build_report, ["retrieval_metrics_before", "retrieval_metrics_control", "retrieval_metrics_after",
                                  "spl_calibration", "preference_mining_summary", "spl_run_summary",
                                  "no_spl_run_summary", "reward_sanity", "reward_seed_replicates", "params:reward",
                                  "params:runtime"],
             ["reward_report", "reward_metrics"], name="build_reward_report"),
    ])
