"""``finetune_compare``: every fine-tuning method (one namespace each) + the report and chain analyses.

A pipeline folder of its own so that ``find_pipelines`` discovers it: Kedro 1.7 imports only the folders named by
``kedro run --pipeline X``, so a pipeline added in ``register_pipelines`` alone cannot be requested by name.
Pick methods with ``--namespaces easytune_step,draft_k``; the report node is not namespaced, so it then does not
run: rebuild the report with ``--nodes build_finetune_report`` (it lists every method that has a summary).
"""

from kedro.pipeline import Pipeline

from easytune.pipelines.finetune import create_compare_pipeline


def create_pipeline(**kwargs) -> Pipeline:
    return create_compare_pipeline()
