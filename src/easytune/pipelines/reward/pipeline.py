"""Wiring of the ``reward`` pipeline: train -> evaluate -> mine -> SPL fine-tune -> evaluate -> sanity -> report."""

from kedro.pipeline import Node, Pipeline

from easytune.pipelines.reward import nodes

_DATA = ["text_embeddings", "params:reward", "params:runtime"]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(nodes.train_retrieval, ["train_motions", "val_motions", *_DATA],
             ["retrieval_model", "retrieval_training_history"], name="train_retrieval_model"),
        Node(nodes.evaluate, ["retrieval_model", "test_motions", *_DATA], "retrieval_metrics_before",
             name="evaluate_retrieval_model"),
        Node(nodes.mine_preference_pairs, ["retrieval_model", "train_motions", *_DATA],
             ["preference_pairs", "preference_mining_summary"], name="mine_preference_pairs"),
        Node(nodes.spl_finetune_reward, ["retrieval_model", "preference_pairs", "train_motions", "val_motions",
                                         *_DATA], ["reward_model", "spl_training_history"], name="spl_finetune"),
        Node(nodes.evaluate, ["reward_model", "test_motions", *_DATA], "retrieval_metrics_after",
             name="evaluate_reward_model"),
        Node(nodes.sanity_check, ["reward_model", "test_motions", *_DATA], "reward_sanity",
             name="reward_sanity_check"),
        Node(nodes.k_sensitivity, ["retrieval_model", "train_motions", "val_motions", "test_motions", *_DATA],
             "spl_k_sensitivity", name="spl_k_sensitivity"),
        Node(nodes.build_report, ["retrieval_metrics_before", "retrieval_metrics_after", "preference_mining_summary",
                                  "reward_sanity", "spl_k_sensitivity", "params:reward"],
             ["reward_report", "reward_metrics"], name="build_reward_report"),
    ])
