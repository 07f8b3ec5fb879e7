"""Data-parallel overhead on one GPU and the bf16 change in fine-tuning and reward training (documented command,
not a test; issue #14).

1. **1-GPU DDP overhead**: the same fine-tuning run (EasyTune: one all-reduce per denoising step; DRaFT-10: one per
   trajectory) without a process group (the plain loop) and inside a one-process group (``nccl`` on CUDA, ``gloo``
   on CPU), where every optimizer update all-reduces the gradients (:func:`easytune.core.infra.distributed
   .average_gradients`): seconds per update, samples per second, and the weight difference (0 expected).
2. **bf16 in fine-tuning**: fp32 against ``bf16: true`` (autocast of the rollout's forward passes): peak CUDA bytes,
   saved-tensor bytes, seconds per update, samples per second, and the validation-reward curve of both runs
   (max |difference| and the final values).
3. **bf16 in reward training**: the retrieval-model loop fp32 against ``bf16: true``: loss curves and seconds.

Randomly initialised models of a preset (``paper`` by default) on synthetic captions, or the pipeline's checkpoints
and splits with ``--models data/06_models --data data`` (then the reward curves are the real reward's). Runs with
torch, numpy and ``easytune.core`` (+ diffusers: see benchmarks/common.py); unchanged on CPU, where bf16 is a no-op
(the script says so).

    python benchmarks/distributed_gpu.py --out docs/results/gpu/distributed_bf16_h200.json
    python benchmarks/distributed_gpu.py --preset tiny --device cpu --trajectories 2     # a quick dry run on CPU
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from pathlib import Path

import common  # noqa: F401  (checks diffusers first, puts src/ on the path)
import numpy as np
import torch
from common import catalog_captions, catalog_models, random_models, run_method, synthetic_captions

from easytune.core.infra import distributed
from easytune.core.infra.runtime import resolve_device


def _finetune(name: str, factory, train, val, text, device, args, **overrides) -> dict:
    updates = args.trajectories * (args.steps if name.startswith("easytune") else 1)
    s = run_method(name, factory, train, val, text, device, num_steps=args.steps, batch_size=args.batch_size,
                   max_updates=updates, lr=args.lr, val_every=max(1, updates // 4), val_captions=args.val_captions,
                   **overrides)
    seconds = [r["value"] for r in s["history"]["s_per_update"]]
    return {"method": name, "updates": s["updates"], "s_per_update_median": float(np.median(seconds[1:] or seconds)),
            "samples_per_s": s["samples_per_s"], "peak_saved_bytes": s["peak_saved_bytes"],
            "peak_cuda_bytes": s["peak_cuda_bytes"], "val_reward": [r["value"] for r in s["history"]["val_reward"]],
            "train_s": s["train_s"], "world_size": s["world_size"]}


def ddp_overhead(factory, train, val, text, device, args) -> list[dict]:
    """Each method plain, then inside a one-process group (every update all-reduces its gradients)."""
    rows = []
    for name in ("easytune_step", "draft_10"):
        plain = _finetune(name, factory, train, val, text, device, args)
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(distributed.free_port()))
        ctx, dev = distributed.init_from_env(device.type)
        try:
            grouped = _finetune(name, factory, train, val, text, dev, args)
        finally:
            distributed.shutdown()
        overhead = grouped["s_per_update_median"] / plain["s_per_update_median"] - 1
        rows.append({"method": name, "plain": plain, "one_process_group": grouped, "overhead": overhead,
                     "backend": "nccl" if device.type == "cuda" else "gloo"})
        print(f"{name:>14}: s/update plain {plain['s_per_update_median']:.4f}, in a 1-process group "
              f"{grouped['s_per_update_median']:.4f} ({overhead:+.1%}); samples/s {plain['samples_per_s']:.1f} vs "
              f"{grouped['samples_per_s']:.1f}; val reward {plain['val_reward'][-1]:.4f} vs "
              f"{grouped['val_reward'][-1]:.4f}", flush=True)
    return rows


def bf16_finetune(factory, train, val, text, device, args) -> list[dict]:
    rows = []
    for name in ("easytune_step", "draft_10"):
        fp32 = _finetune(name, factory, train, val, text, device, args)
        bf16 = _finetune(name, factory, train, val, text, device, args, bf16=True)
        curve = np.abs(np.array(bf16["val_reward"]) - np.array(fp32["val_reward"]))
        row = {"method": name, "fp32": fp32, "bf16": bf16, "val_reward_max_abs_diff": float(curve.max()),
               "val_reward_gain_fp32": fp32["val_reward"][-1] - fp32["val_reward"][0],
               "val_reward_gain_bf16": bf16["val_reward"][-1] - bf16["val_reward"][0]}
        if fp32["peak_cuda_bytes"]:
            row["cuda_bytes_ratio"] = bf16["peak_cuda_bytes"] / fp32["peak_cuda_bytes"]
        row["speed_ratio"] = fp32["s_per_update_median"] / bf16["s_per_update_median"]
        rows.append(row)
        mem = (f"CUDA peak {fp32['peak_cuda_bytes'] / 2**20:.0f} -> {bf16['peak_cuda_bytes'] / 2**20:.0f} MiB"
               if fp32["peak_cuda_bytes"] else "no CUDA peak (CPU)")
        print(f"{name:>14}: {mem}; saved {fp32['peak_saved_bytes'] / 2**20:.0f} -> "
              f"{bf16['peak_saved_bytes'] / 2**20:.0f} MiB; s/update {fp32['s_per_update_median']:.4f} -> "
              f"{bf16['s_per_update_median']:.4f}; val reward fp32 {fp32['val_reward']} bf16 {bf16['val_reward']} "
              f"(max |diff| {row['val_reward_max_abs_diff']:.4f})", flush=True)
    return rows


def bf16_reward_training(train, text, device, args) -> dict:
    from easytune.core.reward.retrieval_model import RetrievalModel, RetrievalModelConfig
    from easytune.core.reward.training import RetrievalTrainingConfig, train_retrieval_model

    out = {}
    for label, bf16 in (("fp32", False), ("bf16", True)):
        torch.manual_seed(0)
        model = RetrievalModel(RetrievalModelConfig(feature_dim=train.feature_dim, text_dim=text.dim))
        config = RetrievalTrainingConfig(steps=args.reward_steps, batch_size=args.batch_size, max_frames=args.frames,
                                         eval_every=10**9, log_every=max(1, args.reward_steps // 10), bf16=bf16)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        _, history = train_retrieval_model(model, train, text, config, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        out[label] = {"seconds": time.perf_counter() - t0, "loss_total": [r["value"] for r in history["loss_total"]],
                      "peak_cuda_bytes": int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda"
                      else None}
    diff = np.abs(np.array(out["bf16"]["loss_total"]) - np.array(out["fp32"]["loss_total"]))
    out["loss_max_abs_diff"] = float(diff.max())
    print(f"reward training: loss fp32 {np.round(out['fp32']['loss_total'], 4).tolist()} bf16 "
          f"{np.round(out['bf16']['loss_total'], 4).tolist()} (max |diff| {out['loss_max_abs_diff']:.4f}); seconds "
          f"{out['fp32']['seconds']:.1f} -> {out['bf16']['seconds']:.1f}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="paper", choices=["tiny", "cpu", "paper"])
    ap.add_argument("--generator", default="mld", choices=["mld", "mdm"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--models", default=None, help="data/06_models of a pipeline run (default: random init)")
    ap.add_argument("--data", default=None, help="the project's data/ (splits and text embeddings; with --models)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--frames", type=int, default=196)
    ap.add_argument("--steps", type=int, default=50, help="sampling steps T")
    ap.add_argument("--trajectories", type=int, default=4, help="trajectories per run")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--val-captions", type=int, default=64)
    ap.add_argument("--reward-steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--out", default=None, help="write every figure to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.models:
        if not args.data:
            raise SystemExit("--models needs --data (the splits and text embeddings of the same project)")
        train, val, text = catalog_captions(Path(args.data))
        factory = functools.partial(catalog_models, Path(args.models), args.generator, device)
    else:
        train, text = synthetic_captions(256, args.frames, 263, seed=0)
        val = train
        factory = functools.partial(random_models, args.preset, args.generator, device, 0, args.frames)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (bf16 autocast is a no-op here)"
    print(f"device: {name}, torch {torch.__version__}; preset={args.preset if not args.models else args.models} "
          f"generator={args.generator} batch={args.batch_size} frames={args.frames} T={args.steps} "
          f"trajectories/run={args.trajectories}", flush=True)
    run_method("easytune_step", factory, train, None, text, device, num_steps=2, batch_size=args.batch_size,
               max_updates=1, val_every=0)  # warm-up (lazy initialisation, cuDNN/cuBLAS heuristics)
    result = {"device": name, "torch": torch.__version__, "args": vars(args),
              "ddp_overhead": ddp_overhead(factory, train, val, text, device, args),
              "bf16_finetune": bf16_finetune(factory, train, val, text, device, args),
              "bf16_reward_training": bf16_reward_training(train, text, device, args)}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
