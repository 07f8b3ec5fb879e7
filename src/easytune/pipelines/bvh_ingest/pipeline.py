from kedro.pipeline import Node, Pipeline

from easytune.pipelines.bvh_ingest.nodes import ingest_bvh_folder


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(ingest_bvh_folder, inputs="params:bvh_ingest", outputs=["bvh_joints_folder", "bvh_ingest_report"],
             name="ingest_bvh_folder"),
    ])
