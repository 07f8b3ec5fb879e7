"""generate: prompts (a text file or a list) + a model chosen by name -> per prompt and sample: joints .npz,
263-d features .npy, BVH, MP4 (GIF fallback), PNG frame strip, plus index.csv/json, a report and MLflow metrics."""

from kedro.pipeline import Node, Pipeline

from easytune.pipelines.generate import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(nodes.generate_node,
             ["base_model_checkpoints", "finetuned_denoisers", "feature_stats", "params:generate",
              "params:data_processing.text_encoder", "params:dataset", "params:runtime"],
             ["prompt_motions", "generate_report", "generate_mlflow_metrics"], name="generate_from_prompts"),
    ])
