"""``pretrain`` pipeline: motion VAE -> MLD latent denoiser -> MotionLCM (consistency distillation of the MLD);
MDM frame denoiser; VAE test MPJPE; samples; report.

Nodes are tagged ``mld`` / ``mdm`` / ``mlcm``: ``kedro run --pipeline pretrain --tags mdm`` trains one generator only
(the samples and the report run with any tag and cover every generator that exists); ``--tags mlcm`` distils the
MotionLCM from the MLD that ``--tags mld`` trained. The main job (``kedro run``) trains the MLD path, the one it
fine-tunes.
"""

from kedro.pipeline import Node, Pipeline

from easytune.pipelines.pretrain.nodes import (
    evaluate_motion_vae,
    generate_samples,
    pretrain_report,
    train_consistency_model_node,
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
        Node(train_consistency_model_node, inputs=[*COMMON, "pretrained_latent_denoiser", "motion_vae"],
             outputs=["pretrained_consistency_model", "consistency_model_training",
                      "consistency_model_training_history"],
             name="train_consistency_model", tags=["mlcm"]),
        Node(train_denoiser_node("mdm"), inputs=COMMON,
             outputs=["pretrained_frame_denoiser", "frame_denoiser_training", "frame_denoiser_training_history"],
             name="train_frame_denoiser", tags=["mdm"]),
        Node(generate_samples,
             inputs=["pretrained_latent_denoiser", "motion_vae", "pretrained_frame_denoiser", "test_motions",
                     "text_embeddings", "feature_stats", "params:pretrain", "params:dataset", "params:runtime",
                     "pretrained_consistency_model"],
             outputs=["pretrain_samples", "pretrain_sample_gifs"], name="generate_samples",
             tags=["mld", "mdm", "mlcm"]),
        Node(pretrain_report,
             inputs=["motion_vae_training", "latent_denoiser_training", "frame_denoiser_training",
                     "motion_vae_evaluation", "params:runtime", "consistency_model_training"],
             outputs=["pretrain_report", "pretrain_metrics"], name="pretrain_report", tags=["mld", "mdm", "mlcm"]),
    ])
