"""MotionLCM distillation settings -> the independent evaluator's R@1 with 1, 2 and 4 steps (documented command).

Distils a MotionLCM from a project's trained MLD (``06_models/pretrained_latent_denoiser.pt`` + ``motion_vae.pt``)
with ``pretrain.consistency_model`` of ``conf/base`` (+ ``--env``) overridden by ``--override`` (JSON), then scores it
with the project's evaluator and content classifier (``06_models/evaluator.pt``, ``content_classifier.pt``: run
``kedro run --pipeline evaluation`` once first) on the test split: the evaluation protocol of
``conf/base/parameters_evaluation.yml`` without MultiModality. Appends one JSON line per run to ``--out``;
``--teacher-steps 50,4`` also scores the MLD teacher with those DDIM step counts.

    .venv/bin/python benchmarks/mlcm_distillation.py --data data --env bandai \\
        --override '{"train": {"max_steps": 400, "lr": 5.0e-4}}' --out distillation_sweep.jsonl
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from common import ROOT

from easytune.core.data.dataset import FeatureStats, MotionSplit, TextEmbeddings
from easytune.core.evaluation.evaluator import denormalise_padded
from easytune.core.evaluation.protocol import EvaluationConfig, embed_motions, evaluate_source, generator_source
from easytune.core.infra.checkpoint import build_from_checkpoint
from easytune.core.infra.config import from_dict
from easytune.core.motion.skeleton import get_skeleton
from easytune.core.pretrain.base_generators import PretrainConfig, train_consistency_model
from easytune.core.sampling.generator import MotionGenerator


def merge(a: dict, b: dict) -> dict:
    """``b`` soft-merged over ``a`` (nested mappings merged key by key), as Kedro merges the environments."""
    out = copy.deepcopy(a)
    for key, value in b.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def parameters(conf: Path, env: str | None, name: str) -> dict:
    params = yaml.safe_load((conf / "base" / f"parameters_{name}.yml").read_text())[name]
    env_file = conf / env / f"parameters_{name}.yml" if env else None
    if env_file is not None and env_file.exists():
        params = merge(params, (yaml.safe_load(env_file.read_text()) or {}).get(name, {}))
    return params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a project's data/ folder")
    ap.add_argument("--conf", default=str(ROOT / "conf"))
    ap.add_argument("--env", default=None, help="a conf environment merged over base (e.g. bandai)")
    ap.add_argument("--override", default="{}", help="JSON merged over pretrain.consistency_model")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--steps", default="1,2,4", help="MotionLCM sampling steps to score")
    ap.add_argument("--teacher-steps", default="", help="also score the MLD with these DDIM steps (e.g. 50,4)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="append the result as a JSON line to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data, conf = Path(args.data), Path(args.conf)

    def arrays(path: Path) -> dict:
        if not path.exists():
            raise SystemExit(f"{path} not found: run the data_processing, pretrain (--tags mld) and evaluation "
                             f"pipelines first")
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}

    def checkpoint(name: str) -> dict:
        path = data / "06_models" / f"{name}.pt"
        if not path.exists():
            raise SystemExit(f"{path} not found: run `kedro run --pipeline pretrain --tags mld` and "
                             f"`kedro run --pipeline evaluation` first")
        return torch.load(path, map_location="cpu", weights_only=True)

    text = TextEmbeddings.from_arrays(arrays(data / "04_feature" / "text_embeddings.npz"))
    stats = FeatureStats.from_arrays(arrays(data / "04_feature" / "feature_stats.npz"))
    train, val, test = (MotionSplit.from_arrays(arrays(data / "05_model_input" / f"{s}_motions.npz"), source=s)
                        for s in ("train", "val", "test"))
    teacher = MotionGenerator.from_checkpoints(checkpoint("pretrained_latent_denoiser"), checkpoint("motion_vae"))
    evaluator = build_from_checkpoint(checkpoint("evaluator"), allowed_kinds=["evaluator"])
    classifier = build_from_checkpoint(checkpoint("content_classifier"), allowed_kinds=["content_classifier"])
    evaluation = parameters(conf, args.env, "evaluation")
    evaluation["protocol"]["mm_captions"] = 0
    dataset = yaml.safe_load((conf / "base" / "parameters.yml").read_text())["dataset"]
    if args.env and (conf / args.env / "parameters.yml").exists():
        dataset = merge(dataset, (yaml.safe_load((conf / args.env / "parameters.yml").read_text()) or {})
                        .get("dataset", {}))
    skeleton = get_skeleton(dataset["skeleton"])
    protocol = from_dict(EvaluationConfig, evaluation).protocol_for(skeleton, float(dataset["fps"]))
    real = embed_motions(evaluator, denormalise_padded(test.features, test.lengths, stats), test.lengths)

    def score(gen: MotionGenerator, steps: int) -> dict:
        source = generator_source(gen, text, batch_size=protocol.batch_size, num_steps=steps)
        result = evaluate_source(source, test, text, stats, evaluator, classifier, protocol, skeleton.num_joints,
                                 real_emb=real, with_multimodality=False)
        return {name: result.metrics[name] for name in ("R@1", "FID", "MM-Dist", "content_accuracy")}

    override = json.loads(args.override)
    pretrain = merge(parameters(conf, args.env, "pretrain"), {"consistency_model": override, "resume_dir": None})
    config = from_dict(PretrainConfig, pretrain, where="pretrain")
    start = time.perf_counter()
    gen, result = train_consistency_model(train, val, text, config, torch.device("cpu"), args.seed,
                                          copy.deepcopy(teacher))
    out = {"override": override, "env": args.env, "seed": args.seed, "distill_s": round(time.perf_counter() - start, 1),
           "train_loss": result.train_loss, "val_loss": result.val_loss,
           "mlcm": {n: score(gen, int(n)) for n in args.steps.split(",")}}
    if args.teacher_steps:
        out["mld"] = {n: score(teacher, int(n)) for n in args.teacher_steps.split(",")}
    line = json.dumps(out)
    print(line)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
