"""Wiring: the pretrained generator chosen by ``finetune.generator`` + the train motions -> ``realism_critic``."""

from kedro.pipeline import Node, Pipeline

from easytune.pipelines.realism_critic import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(nodes.train_realism_critic,
             ["pretrained_latent_denoiser", "pretrained_frame_denoiser", "pretrained_consistency_model", "motion_vae",
              "train_motions", "text_embeddings", "params:finetune", "params:runtime"],
             ["realism_critic", "realism_critic_history"], name="train_realism_critic"),
    ])
