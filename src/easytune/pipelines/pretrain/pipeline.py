"""``pretrain`` pipeline: motion VAE -> MLD latent denoiser -> MotionLCM (consistency distillation of the MLD);
MDM frame denoiser; VAE test MPJPE; samples; report.

Nodes are tagged ``mld`` / ``mdm`` / ``mlcm``: ``kedro run --pipeline pretrain --tags mdm`` trains one generator only
(the samples and the report run with any tag and cover every generator that exists); ``--tags mlcm`` distils the
MotionLCM from the MLD that ``--tags mld`` trained. The main job (``kedro run``) trains the MLD path, the one it
fine-tunes. Each generator trained is then logged as an MLflow model and registered as
``easytune_generator@base_mld`` / ``@base_mdm`` / ``@base_mlcm`` (:mod:`easytune.serving`).
"""

from kedro.pipeline import Node, Pipeline

from easytune.pipelines.pretrain.nodes import (
    SERVED_BASE_MODELS,
    evaluate_motion_vae,
    generate_samples,
    log_base_model_node,
    pretrain_report,
    train_consistency_model_node,
    train_denoiser_node,
    train_motion_vae_node,
)

COMMON = ["train_motions", "val_motions", "text_embeddings", "params:pretrain", "params:runtime"]
SERVE_INPUTS = ["feature_stats", "params:generate", "params:serve", "params:data_processing.text_encoder",
                "params:dataset"]
#: base model -> its denoiser checkpoint
BASE_DENOISERS = {"base_mld": "pretrained_latent_denoiser", "base_mdm": "pretrained_frame_denoiser",
                  "base_mlcm": "pretrained_consistency_model"}


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
        *(Node(log_base_model_node(model), inputs=[BASE_DENOISERS[model], "motion_vae", *SERVE_INPUTS],
               outputs=f"{model}.served_model", name=f"log_served_model_{model}", tags=[tag])
          for model, tag in SERVED_BASE_MODELS.items()),
    ])
