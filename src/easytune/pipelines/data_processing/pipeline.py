"""Wiring of ``data_processing``: raw folder -> dataset build -> caption embeddings -> histogram -> report."""

from kedro.pipeline import Node, Pipeline

from easytune.pipelines.data_processing import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(nodes.prepare_raw_dataset, ["params:data_processing", "params:dataset"], "raw_dataset",
             name="prepare_raw_dataset"),
        Node(nodes.build_motion_dataset, ["raw_dataset", "params:data_processing", "params:dataset"],
             ["train_motions", "val_motions", "test_motions", "feature_stats", "dataset_captions",
              "dataset_report", "clip_lengths"], name="build_motion_dataset"),
        Node(nodes.encode_captions, ["dataset_captions", "params:data_processing", "params:runtime"],
             ["text_embeddings", "text_encoder_summary"], name="encode_captions"),
        Node(nodes.plot_length_histogram, ["clip_lengths", "params:data_processing"], "clip_length_histogram",
             name="plot_length_histogram"),
        Node(nodes.build_report, ["dataset_report", "text_encoder_summary"],
             ["data_processing_report", "data_processing_metrics"], name="build_data_processing_report"),
    ])
