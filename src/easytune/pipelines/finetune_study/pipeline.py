"""finetune_study: the method comparison as a study.

base signals -> learning-rate selection (selection seed, val signals) -> runs (variants x seeds, snapshots along one
GFLOPs budget) -> scoring of every run's snapshots on the test split by the independent evaluator (its admissible
point read from its val signals) and of the base per seed -> report (four views with CIs over seeds), figures, one
MLflow child run per variant x seed.

Each learning-rate selection and each (variant, seed) run is a node of its own, in one namespace per enabled variant:
``study_<variant>.select_lr`` (its grid on the selection seed; a variant with ``lr_from`` copies its source's choice)
and ``study_<variant>.seed<k>`` per study seed k, then ``study_<variant>.score_seed<k>`` (the run's snapshots on
the test split; the first seed's also writes ``study_<variant>.generated``); ``study_base.score_seed<k>`` scores
the base with seed k's noise. ``collect_study_runs`` assembles ``study_lr_selection`` and ``study_training`` from
the run files (``study_<variant>.lr_selection``, ``study_<variant>.run_seed<k>``: catalog factories under
data/07_model_output/study/lr_selection/ and data/06_models/study/run_outputs/), ``collect_study_scores``
``study_scores`` (checking each run's admissible point against ``select_study_points``). ``kedro run --pipeline
finetune_study --runner ParallelRunner`` runs them side by side (a scoring starts as soon as its run is done); ``kedro airflow create --pipelines finetune_study --group-by namespace`` makes one Airflow task per variant
(kedro-airflow groups by the *top-level* namespace, hence ``study_<variant>`` rather than ``study.<variant>``).

The layout (enabled variants, seeds, each variant's reward and ``lr_from``) is read from ``params:finetune_study``
when the pipeline is created (Kedro's "dynamic pipelines"): :func:`study_parameters` takes the parameters of the
session's context (``--env`` and ``--params`` included; :class:`easytune.hooks.StudyLayoutHook` records them when the
context is created, before Kedro reads the pipelines), else loads them with the project's config loader for
``KEDRO_ENV`` (``local`` when unset); ``create_pipeline(finetune_study=...)`` takes them directly (tests).
``collect_study_runs`` refuses to run when the parameters of the run differ from those the pipeline was built with.
The nodes that choose never take the test split or the evaluator (tested).
"""

import logging
import os
import warnings
from functools import partial
from pathlib import Path

from kedro.pipeline import Node, Pipeline

from easytune.pipelines.finetune_study import nodes

GENERATORS = ("pretrained_latent_denoiser", "pretrained_frame_denoiser", "pretrained_consistency_model", "motion_vae")
log = logging.getLogger(__name__)
RUN_DATA = ("train_motions", "val_motions", "text_embeddings", "study_base_signals")
PARAMS = ("params:finetune_study", "params:finetune", "params:runtime")
#: the inputs of every scoring node (nodes._scoring_inputs), after the run it scores
SCORING = (*GENERATORS, "evaluator", "content_classifier", "test_motions", "text_embeddings", "feature_stats",
           "params:finetune_study", "params:finetune", "params:evaluation", "params:dataset", "params:runtime")


def study_parameters() -> dict:
    """``params:finetune_study`` as the running session sees it (see the module's docstring)."""
    from easytune.hooks import session_parameters

    params = session_parameters()
    if params is None:
        from easytune import settings

        conf = Path(os.environ.get("EASYTUNE_PROJECT_ROOT") or Path.cwd()) / "conf"
        if not conf.is_dir():
            conf = Path(settings.PROJECT_ROOT) / "conf"
        loader = settings.CONFIG_LOADER_CLASS(conf_source=str(conf), env=os.environ.get("KEDRO_ENV") or None,
                                              **settings.CONFIG_LOADER_ARGS)
        params = loader["parameters"]
    return params.get("finetune_study") or {}


def namespace(variant: str) -> str:
    return f"study_{variant}"


def study_nodes(finetune_study: dict) -> list[Pipeline]:
    """For every enabled variant, namespace ``study_<variant>``: ``select_lr`` and one node ``seed<k>`` per study
    seed; then the collect node."""
    try:
        study = nodes._study(finetune_study)
    except ValueError as exc:  # ConfigError: no run nodes; the parameter check names the problem before any node
        log.warning("finetune_study: no run nodes (params:finetune_study does not build: %s)", exc)
        study, layout = None, ()
    else:
        layout = tuple((v, tuple(study.seeds)) for v in study.enabled)
    shared = {*GENERATORS, "reward_model", *RUN_DATA}
    built = []
    for slot, (variant, seeds) in enumerate(layout):
        spec = study.variants[variant]
        reward = nodes.variant_reward_inputs(study, variant)
        if spec.lr_from is not None:
            select = Node(partial(nodes.borrow_variant_lr, variant=variant, source=spec.lr_from),
                          inputs="source_selection", outputs="lr_selection", name="select_lr")
            outside = {"source_selection": f"{namespace(spec.lr_from)}.lr_selection"}  # cross-namespace: allowed
        else:
            select = Node(partial(nodes.select_study_lr, variant=variant, slot=slot, reward_names=tuple(reward)),
                          inputs=[*GENERATORS, "reward_model", *RUN_DATA, *PARAMS, *reward], outputs="lr_selection",
                          name="select_lr")
            outside = {}
        runs = [Node(partial(nodes.train_variant_seed, variant=variant, seed=seed, slot=seed,
                             reward_names=tuple(reward)),
                     inputs=[*GENERATORS, "reward_model", *RUN_DATA, "lr_selection", *PARAMS, *reward],
                     outputs=f"run_seed{seed}", name=f"seed{seed}") for seed in seeds]
        built.append(Pipeline([select, *runs], namespace=namespace(variant),
                              inputs={name: name for name in (*shared, *reward)} | outside,
                              parameters={p.removeprefix("params:") for p in PARAMS}))
    parts = [f"{namespace(v)}.lr_selection" for v, _ in layout]
    parts += [f"{namespace(v)}.run_seed{seed}" for v, seeds in layout for seed in seeds]
    built.append(Pipeline([Node(partial(nodes.collect_study_runs, layout=layout),
                                inputs=["params:finetune_study", "params:finetune", *parts],
                                outputs=["study_lr_selection", "study_training"],
                                name="collect_study_runs")]))
    seeds = tuple(study.seeds) if study is not None else ()
    built.append(Pipeline([Node(partial(nodes.score_study_base, seed=seed), inputs=list(SCORING),
                                outputs=f"scores_seed{seed}", name=f"score_seed{seed}") for seed in seeds],
                          namespace=namespace("base"), inputs={name: name for name in SCORING if
                                                                 not name.startswith("params:")},
                          parameters={p.removeprefix("params:") for p in SCORING if p.startswith("params:")}))
    for variant, variant_seeds in layout:
        scorers = [Node(partial(nodes.score_study_run, variant=variant, seed=seed, keep=(r == 0)),
                        inputs=[f"run_seed{seed}", *SCORING],
                        outputs=[f"scores_seed{seed}", "generated"] if r == 0 else f"scores_seed{seed}",
                        name=f"score_seed{seed}") for r, seed in enumerate(variant_seeds)]
        built.append(Pipeline(scorers, namespace=namespace(variant),
                              inputs={name: name for name in SCORING if not name.startswith("params:")},
                              parameters={p.removeprefix("params:") for p in SCORING if p.startswith("params:")}))
    scores = [f"{namespace('base')}.scores_seed{seed}" for seed in seeds]
    scores += [f"{namespace(v)}.scores_seed{seed}" for v, variant_seeds in layout for seed in variant_seeds]
    built.append(Pipeline([Node(partial(nodes.collect_study_scores, layout=layout),
                                inputs=["study_selection", "params:finetune_study", *scores],
                                outputs="study_scores", name="collect_study_scores")]))
    return built


def create_pipeline(**kwargs) -> Pipeline:
    finetune_study = kwargs.get("finetune_study")
    with warnings.catch_warnings():  # Kedro warns of dotted dataset names read outside their namespace: here they are
        warnings.filterwarnings("ignore", "One or more dataset names contain", UserWarning)  # namespaced outputs
        runs = study_nodes(study_parameters() if finetune_study is None else finetune_study)
    return Pipeline([
        Node(nodes.study_base_signals,
             inputs=[*GENERATORS, "reward_model", "train_motions", "val_motions", "text_embeddings", *PARAMS],
             outputs="study_base_signals", name="study_base_signals"),
        *runs,
        Node(nodes.select_study_points, inputs=["study_training", "params:finetune_study"],
             outputs="study_selection", name="select_study_points"),
        Node(nodes.build_study_report,
             inputs=["study_scores", "study_base_signals", "study_selection", "study_training",
                     "params:finetune_study"],
             outputs=["study_report", "study_tables_md", "study_pareto_plot", "study_cost_plot", "study_gain_plot",
                      "study_proxy_plot", "study_mlflow_runs"],
             name="build_study_report"),
    ])
