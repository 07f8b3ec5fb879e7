"""Training throughput of the CPU loops, old settings against new, measured in one run (not a test).

Loops: the motion VAE, the MLD latent denoiser, the MDM frame denoiser (pretraining), the reward model (retrieval
objective) and the independent evaluator, each on the `cpu` preset with batch 32 x 96 frames of synthetic data
(compute does not depend on the values). Every (loop, setting) runs in its own process, because the OpenMP wait
policy is read when torch loads:

- ``old``: torch's default threads (one per core), libgomp's default wait (waiting threads spin for about 300,000
  iterations before they sleep), the MLD denoiser encoding every batch with the VAE;
- ``passive``: the project's previous defaults: ``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep at once),
  ``runtime.threads: auto`` and the MLD denoiser on cached VAE posteriors (``pretrain.latent_denoiser.cached_crops``);
- ``new``: the project's defaults: as ``passive`` but with OpenMP's spinning bounded instead of off
  (``GOMP_SPINCOUNT=1000``, set by the project's settings before torch loads; see ``easytune.core.infra.openmp``).

``--busy N`` starts N CPU-bound processes for the duration (a shared machine). Prints steps per second per loop and
the ratios new / old and new / passive. Public tools only (torch, numpy).

    .venv/bin/python benchmarks/training_throughput.py                  # idle machine
    .venv/bin/python benchmarks/training_throughput.py --busy 1         # one other job on the cores
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOOPS = ("vae", "mld", "mdm", "reward", "evaluator")
SETTINGS = ("old", "passive", "new")


def _burn(stop) -> None:  # a CPU-bound neighbour
    import numpy as np

    a = np.random.default_rng(0).standard_normal((300, 300))
    while not stop.is_set():
        a = np.tanh(a @ a.T / 300.0)


def _data(seed: int = 0):
    import numpy as np

    from easytune.core.data.dataset import FeatureStats, MotionSplit, TextEmbeddings

    rng = np.random.default_rng(seed)
    n, t, d, u, tokens = 256, 196, 263, 64, 16
    lengths = rng.integers(96, t + 1, n)
    feats = (rng.standard_normal((n, t, d)) * (np.arange(t)[None, :, None] < lengths[:, None, None])).astype(
        np.float32)
    split = MotionSplit(np.array([f"c{i}" for i in range(n)]), feats, lengths.astype(np.int64),
                        np.arange(n + 1, dtype=np.int64), rng.integers(0, u, n).astype(np.int64),
                        np.array([f"label{i % 8}" for i in range(n)]))
    text = TextEmbeddings(np.array([f"caption {i}" for i in range(u)]),
                          rng.standard_normal((u, 384)).astype(np.float32),
                          rng.standard_normal((u, tokens, 384)).astype(np.float16), np.full(u, tokens, np.int64))
    return split, text, FeatureStats(np.zeros(d, np.float32), np.ones(d, np.float32))


def measure(loop: str, setting: str, steps: int) -> float:
    """Steps per second of ``loop`` under ``setting`` (run in this process)."""
    import torch

    from easytune.core.infra.config import from_dict
    from easytune.core.motion.skeleton import get_skeleton
    from easytune.core.pretrain.base_generators import PretrainConfig, train_denoiser, train_motion_vae

    train, text, stats = _data()
    device = torch.device("cpu")
    train_cfg = {"max_steps": steps, "warmup_steps": 1, "val_every": 10**6, "resume_every": 0}
    pretrain = from_dict(PretrainConfig, {
        "data": {"batch_size": 32, "max_frames": 96, "val_batches": 1}, "resume_dir": None,
        "motion_vae": {"model": {"preset": "cpu", "position_weight": 0.1}, "train": train_cfg},
        "latent_denoiser": {"model": {"preset": "cpu"}, "train": train_cfg,
                            "cached_crops": 0 if setting == "old" else 4},
        "frame_denoiser": {"model": {"preset": "cpu"}, "train": train_cfg}})
    if loop in ("vae", "mld"):
        torch.manual_seed(0)
        start = time.perf_counter()
        vae, result = train_motion_vae(train, train, text, pretrain, device, 0, stats, get_skeleton("humanml3d"))
        if loop == "vae":
            return result.steps / result.wall_s
        start = time.perf_counter()  # the cache's encoding counts in the MLD figure
        _, result = train_denoiser("mld", train, train, text, pretrain, device, 0, vae)
        return result.steps / (time.perf_counter() - start)
    if loop == "mdm":
        _, result = train_denoiser("mdm", train, train, text, pretrain, device, 0)
        return result.steps / result.wall_s
    if loop == "reward":
        from easytune.core.reward.config import RewardConfig, build_model
        from easytune.core.reward.training import train_retrieval_model

        config = from_dict(RewardConfig, {"training": {"steps": steps, "eval_every": 10**6, "warmup_steps": 1}})
        model = build_model(config, train, text, 0)
        start = time.perf_counter()
        train_retrieval_model(model, train, text, config.training, device)
        return steps / (time.perf_counter() - start)
    from easytune.core.evaluation.evaluator import EvaluatorTrainConfig, train_evaluator

    config = from_dict(EvaluatorTrainConfig, {"steps": steps, "batch_size": 32, "max_frames": 64})
    _, history = train_evaluator(train, text, stats, config, device)
    return steps / history["wall_s"]


def run_child(loop: str, setting: str, steps: int) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), TQDM_DISABLE="1")
    for name in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT"):
        env.pop(name, None)
    if setting == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    elif setting == "new":
        from easytune.core.infra.openmp import default_openmp_wait

        default_openmp_wait(env)
    out = subprocess.run([sys.executable, __file__, "--child", loop, setting, str(steps)], env=env,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loops", default=",".join(LOOPS))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--busy", type=int, default=0, help="CPU-bound neighbour processes during the measurements")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        loop, setting, steps = args.child
        print(measure(loop, setting, int(steps)))
        return
    stop = mp.Event()
    neighbours = [mp.Process(target=_burn, args=(stop,), daemon=True) for _ in range(args.busy)]
    for p in neighbours:
        p.start()
    rows = []
    try:
        for loop in args.loops.split(","):
            old, passive, new = (run_child(loop, s, args.steps) for s in SETTINGS)
            rows.append({"loop": loop, "old_steps_per_s": old, "passive_steps_per_s": passive,
                         "new_steps_per_s": new, "ratio": new / old, "ratio_to_passive": new / passive})
            print(f"{loop:>10}: old {old:7.3f}  passive {passive:7.3f}  new {new:7.3f} steps/s   "
                  f"new/old {new / old:5.2f}x  new/passive {new / passive:5.2f}x"
                  f"   (cores {os.cpu_count()}, busy neighbours {args.busy})", flush=True)
    finally:
        stop.set()
        for p in neighbours:
            p.join(timeout=5)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
