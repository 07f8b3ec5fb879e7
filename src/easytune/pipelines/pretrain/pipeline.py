"""``pretrain`` pipeline: motion VAE -> MLD latent denoiser; MDM frame denoiser; VAE test MPJPE; samples; report.

Nodes are tagged ``mld`` / ``mdm``: ``kedro run --pipeline pretrain --tags mdm`` trains one generator only (the
samples and the report run with either tag and cover every generator that exists). The main job (``kedro run``)
trains the MLD path, the one it fine-tunes.
"""

from kedro.pipeline import Node, Pipeline

from easytune.pipelines.pretrain.nodes import (
    evaluate_motion_vae,
    generate_samples,
    pretrain_report,
    train_denoiser_node,
    train_motion_vae_node,
)

COMMON = ["train_motions", "val_motions", "text_embeddings", "params:pretrain", "params:runtime"]


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(train_motion_vae_node,
             inputs=["train_motions", "val_motions", "text_embeddings", "feature_stats", "params:pretrain",
                     "params:dataset", "params:runtime"],
             outputs=["motion_vae", "motion_vae_training", "motion_vae_training_history"],
             name="train_motion_vae", tags=["mld"]),
        Node(evaluate_motion_vae,
             inputs=["motion_vae", "test_motions", "text_embeddings", "feature_stats", "params:pretrain",
                     "params:dataset", "params:runtime"],
             outputs="motion_vae_evaluation", name="evaluate_motion_vae", tags=["mld"]),
        Node(train_denoiser_node("mld"), inputs=[*COMMON, "motion_vae"],
             outputs=["pretrained_latent_denoiser", "latent_denoiser_training", "latent_denoiser_training_history"],
             name="train_latent_denoiser", tags=["mld"]),
        Node(train_denoiser_node("mdm"), inputs=COMMON,
             outputs=["pretrained_frame_denoiser", "frame_denoiser_training", "frame_denoiser_training_history"],
             name="train_frame_denoiser", tags=["mdm"]),
        Node(generate_samples,
             inputs=["pretrained_latent_denoiser", "motion_vae", "pretrained_frame_denoiser", "test_motions",
                     "text_embeddings", "feature_stats", "params:pretrain", "params:dataset", "params:runtime"],
             outputs=["pretrain_samples", "pretrain_sample_gifs"], name="generate_samples", tags=["mld", "mdm"]),
        Node(pretrain_report,
             inputs=["motion_vae_training", "latent_denoiser_training", "frame_denoiser_training",
                     "motion_vae_evaluation", "params:runtime"],
             outputs=["pretrain_report", "pretrain_metrics"], name="pretrain_report", tags=["mld", "mdm"]),
    ])
