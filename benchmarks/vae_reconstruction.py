"""Motion VAE reconstruction versus training steps for one configuration (documented command, not a test).

Reads the processed splits a ``data_processing`` run wrote (``<data>/05_model_input/{train,val,test}_motions.npz``,
``<data>/04_feature/feature_stats.npz``; never unpickled), trains a motion VAE with the given overrides on top of
``conf/base/parameters_pretrain.yml``'s VAE settings and prints, every ``--eval-every`` steps, the test-split
reconstruction errors the ``pretrain`` pipeline reports: root-aligned MPJPE (``vae_mpjpe_m``, MLD's convention),
global MPJPE and root drift, in metres. Used to choose the ``cpu`` preset's latent layout (README, "Base generators").

    python benchmarks/vae_reconstruction.py --data data --steps 2000                     # the cpu preset as configured
    python benchmarks/vae_reconstruction.py --model '{"latent_tokens": 1, "latent_dim": 128, "position_weight": 0}'
    python benchmarks/vae_reconstruction.py --device cuda --steps 2500 --out vae_runs.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from easytune.core.data.dataset import FeatureStats, MotionSplit, TextEmbeddings  # noqa: E402
from easytune.core.infra.config import from_dict  # noqa: E402
from easytune.core.models.vae import MotionVAE, MotionVAEConfig  # noqa: E402
from easytune.core.motion.skeleton import get_skeleton  # noqa: E402
from easytune.core.pretrain.base_generators import PretrainConfig, joints_from_normalised, vae_reconstruction_errors  # noqa: E402
from easytune.core.pretrain.loop import MotionBatches, TrainConfig, train  # noqa: E402


def _load(path: Path, cls):
    if not path.exists():
        raise SystemExit(f"{path} not found: run `kedro run --pipeline data_processing` (with its --env) first")
    with np.load(path, allow_pickle=False) as arrays:
        return cls.from_arrays({k: arrays[k] for k in arrays.files}, source=str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data", help="the project's data folder")
    parser.add_argument("--model", default="{}", help="JSON overrides of pretrain.motion_vae.model")
    parser.add_argument("--train", default="{}", help="JSON overrides of pretrain.motion_vae.train")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--skeleton", default="humanml3d")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--out", default=None, help="append one JSON line per evaluation to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import yaml  # the project's VAE settings are the starting point

    params = yaml.safe_load((ROOT / "conf/base/parameters_pretrain.yml").read_text())["pretrain"]
    data = Path(args.data)
    train_split = _load(data / "05_model_input/train_motions.npz", MotionSplit)
    test_split = _load(data / "05_model_input/test_motions.npz", MotionSplit)
    text = _load(data / "04_feature/text_embeddings.npz", TextEmbeddings)
    stats = _load(data / "04_feature/feature_stats.npz", FeatureStats)
    skeleton = get_skeleton(args.skeleton)

    model = {**params["motion_vae"]["model"], "feature_dim": train_split.feature_dim, **json.loads(args.model)}
    train_cfg = {**params["motion_vae"]["train"], "max_steps": args.steps, "val_every": args.eval_every,
                 "patience": 0, "resume_every": 0, "restore_best": False, **json.loads(args.train)}
    config = from_dict(PretrainConfig, {"data": params["data"], "resume_dir": None}, where="pretrain")
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    vae = MotionVAE(from_dict(MotionVAEConfig, model, where="--model")).to(device)
    joints_fn = joints_from_normalised(stats, skeleton)
    batches = MotionBatches(train_split, text, config.data.batch_size, config.data.max_frames, args.seed, device,
                            config.data.unit)
    start, step = time.perf_counter(), [0]
    print(f"model {json.dumps(model)}\ntrain {json.dumps(train_cfg)}\n"
          f"{'step':>6} {'s':>7} {'mpjpe_root_aligned':>19} {'mpjpe_global':>13} {'root_error':>11}")

    def evaluate() -> float:
        step[0] += args.eval_every
        errors = vae_reconstruction_errors(vae, test_split, text, stats, skeleton, config, device)
        seconds = time.perf_counter() - start
        print(f"{min(step[0], args.steps):>6} {seconds:>7.1f} {errors['vae_mpjpe_m']:>19.4f} "
              f"{errors['vae_global_mpjpe_m']:>13.4f} {errors['vae_root_error_m']:>11.4f}", flush=True)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(json.dumps({"step": min(step[0], args.steps), "s": round(seconds, 1), **errors,
                                     "model": model, "train": train_cfg}) + "\n")
        return errors["vae_mpjpe_m"]

    train(vae, lambda b: vae.loss(b.features, b.mask, joints_fn=joints_fn).total, batches,
          from_dict(TrainConfig, train_cfg, where="--train"), evaluate, desc="motion_vae")


if __name__ == "__main__":
    main()
