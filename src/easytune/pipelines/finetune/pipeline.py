"""Wiring: one fine-tuning template, namespaced per method; a report over the methods; the chain analyses.

Inside namespace ``<method>`` the template reads the shared inputs (checkpoints, splits, embeddings, global
parameters) un-namespaced and ``params:finetune.methods.<method>`` as its method options; it writes
``<method>.finetuned_denoiser`` (data/06_models/finetuned/<method>.pt), ``<method>.finetune_history`` (MLflow
metric histories) and ``<method>.finetune_summary``; then logs the fine-tuned generator as an MLflow model
registered as ``easytune_generator@<method>`` (``@champion`` for ``serve.champion``; :mod:`easytune.serving`) and
writes ``<method>.served_model`` (its model URI and version).
"""

from kedro.pipeline import Node, Pipeline

from easytune.pipelines.finetune import nodes

ALL_METHODS = ("easytune_step", "easytune_chain", "draft_k", "refl", "alignprop", "drtune")
DEFAULT_METHODS = ("easytune_step",)

SHARED_INPUTS = ("pretrained_latent_denoiser", "pretrained_frame_denoiser", "pretrained_consistency_model",
                 "motion_vae", "reward_model", "train_motions", "val_motions", "text_embeddings",
                 # optional (None when never trained): reward_ensemble members and the realism critic
                 "reward_model_seed1", "reward_model_seed2", "reward_model_no_spl", "realism_critic")


SERVE_INPUTS = ("feature_stats", "params:generate", "params:serve", "params:data_processing.text_encoder",
                "params:dataset")


def _template(method: str) -> Pipeline:
    return Pipeline([
        Node(nodes.finetune_method,
             inputs=[*SHARED_INPUTS, "params:finetune", "params:method_options", "params:runtime"],
             outputs=["finetuned_denoiser", "finetune_history", "finetune_summary"],
             name="finetune_denoiser"),
        Node(nodes.log_model_node(method), inputs=["finetuned_denoiser", "motion_vae", *SERVE_INPUTS],
             outputs="served_model", name="log_served_model"),
    ])


def _method_pipeline(method: str) -> Pipeline:
    return Pipeline(
        _template(method),
        namespace=method,
        inputs=set(SHARED_INPUTS) | {"feature_stats"},
        parameters={"params:finetune": "params:finetune", "params:runtime": "params:runtime",
                    "params:method_options": f"params:finetune.methods.{method}",
                    **{name: name for name in SERVE_INPUTS if name.startswith("params:")}},
    )


def create_pipeline(methods: tuple[str, ...] = DEFAULT_METHODS, **kwargs) -> Pipeline:
    """Fine-tune with each of ``methods`` (namespaces), then the report and the chain analyses."""
    unknown = sorted(set(methods) - set(ALL_METHODS))
    if unknown:
        raise ValueError(f"unknown fine-tuning method(s) {unknown}; known: {list(ALL_METHODS)}")
    per_method = sum((_method_pipeline(m) for m in methods), Pipeline([]))
    report = Pipeline([
        Node(nodes.build_finetune_report, inputs=[f"{m}.finetune_summary" for m in methods],
             outputs="finetune_report", name="build_finetune_report"),
        Node(nodes.analyse_sampling_chain,
             inputs=["pretrained_latent_denoiser", "pretrained_frame_denoiser", "pretrained_consistency_model",
                     "motion_vae", "reward_model", "val_motions", "text_embeddings", "params:finetune",
                     "params:runtime"],
             outputs=["sampling_chain_analysis", "sampling_chain_plot"], name="analyse_sampling_chain"),
    ])
    return per_method + report


def create_compare_pipeline(**kwargs) -> Pipeline:
    """Every method of :data:`ALL_METHODS` (``kedro run --pipeline finetune_compare --namespaces draft_k,...``)."""
    return create_pipeline(ALL_METHODS)
