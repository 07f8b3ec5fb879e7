"""MotionLCM against its MLD teacher (documented command, not a test).

1. Seconds per generated motion (batched generation, VAE decode included) and denoiser calls per motion: MLD with
   50 DDIM steps and classifier-free guidance (2 passes per step) against MotionLCM with 1 and 4 steps (guidance folded
   in: 1 pass per step).
2. Fine-tuning on the 4-step MotionLCM sampler: EasyTune (step) against DRaFT-4 (K = T = 4, the full chain): peak
   bytes saved for backward per update (exact, device independent), seconds per update and, on CUDA, peak memory.

Models: the pipeline checkpoints under ``--data`` (``06_models``: pretrained_latent_denoiser,
pretrained_consistency_model, motion_vae, reward_model), or with ``--preset`` randomly initialised ones (timings and
memory do not depend on the weights; the student is built from the random MLD as the distillation builds it).

    .venv/bin/python benchmarks/mlcm_speed.py --preset cpu                    # random cpu-preset models, CPU
    .venv/bin/python benchmarks/mlcm_speed.py --data data --threads 2         # the trained checkpoints
    .venv/bin/python benchmarks/mlcm_speed.py --preset paper --device cuda --frames 196 --batch-size 64
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import numpy as np
import torch
from common import catalog_models, mib, random_models, run_method, synthetic_captions

from easytune.core.data.text import TextBatch


def seconds_per_motion(gen, text, lengths: torch.Tensor, num_steps: int, repeats: int, device: torch.device) -> float:
    """Median over ``repeats`` of the wall time of one batched ``generate`` call, divided by the batch size."""
    times = []
    for r in range(repeats + 1):  # the first call warms up (lazy initialisation, allocator)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        gen.generate(text, lengths, generator=torch.Generator().manual_seed(r), num_steps=num_steps)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if r:
            times.append(time.perf_counter() - t0)
    return float(np.median(times)) / len(lengths)


def denoiser_calls_per_motion(gen, text, lengths: torch.Tensor, num_steps: int) -> float:
    """Sample-passes through the denoiser per generated motion, counted by a forward hook (a classifier-free-guided
    step feeds the batch twice)."""
    seen = []
    handle = gen.denoiser.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[0]))
    try:
        gen.generate(text, lengths, generator=torch.Generator().manual_seed(0), num_steps=num_steps)
    finally:
        handle.remove()
    return sum(seen) / len(lengths)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="a project's data/ folder (checkpoints in 06_models)")
    ap.add_argument("--preset", default=None, choices=["tiny", "cpu", "paper"], help="random models of a preset")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=32, help="motions per generate call")
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--teacher-steps", type=int, default=50)
    ap.add_argument("--finetune-batch-size", type=int, default=8)
    ap.add_argument("--updates", type=int, default=8, help="optimizer updates measured per fine-tuning method")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    if (args.data is None) == (args.preset is None):
        ap.error("give exactly one of --data (trained checkpoints) or --preset (random models)")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.data:
        factory = {k: functools.partial(catalog_models, Path(args.data) / "06_models", k, device)
                   for k in ("mld", "mlcm")}
    else:
        factory = {k: functools.partial(random_models, args.preset, k, device, 0, args.frames)
                   for k in ("mld", "mlcm")}
    mld, _ = factory["mld"]()
    mlcm, _ = factory["mlcm"]()
    frames = min(args.frames, mld.max_length)
    split, text = synthetic_captions(max(args.batch_size, 64), frames, mld.feature_dim, seed=0)
    batch = TextBatch.from_embeddings(text, np.arange(args.batch_size), device)
    lengths = torch.full((args.batch_size,), frames, dtype=torch.int64)
    print(f"{'models':>8}: {args.data or 'random ' + args.preset}  device={device} threads={args.threads} "
          f"batch={args.batch_size} frames={frames}")

    rows = []
    for name, gen, steps in (("mld", mld, args.teacher_steps), ("mlcm", mlcm, 1), ("mlcm", mlcm, 4)):
        s = seconds_per_motion(gen, batch, lengths, steps, args.repeats, device)
        rows.append({"model": name, "num_steps": steps,
                     "denoiser_calls_per_motion": denoiser_calls_per_motion(gen, batch, lengths, steps),
                     "s_per_motion": s})
    teacher = rows[0]
    print(f"\n{'model':>6} {'steps':>5} {'calls/motion':>12} {'ms/motion':>10} {'speed-up':>9}")
    for r in rows:
        r["speedup_vs_mld"] = teacher["s_per_motion"] / r["s_per_motion"]
        print(f"{r['model']:>6} {r['num_steps']:>5} {r['denoiser_calls_per_motion']:>12g} "
              f"{1000 * r['s_per_motion']:>10.2f} {r['speedup_vs_mld']:>8.1f}x")

    tuning = []
    print(f"\nfine-tuning the 4-step MotionLCM sampler: batch {args.finetune_batch_size}, {args.updates} updates each")
    print(f"{'method':>14} {'updates':>8} {'saved MiB':>10} {'s/update':>9} {'CUDA MiB':>10}")
    run_method("easytune_step", factory["mlcm"], split, None, text, device, num_steps=4, max_updates=1, val_every=0,
               batch_size=args.finetune_batch_size)  # warm-up
    for name in ("easytune_step", "draft_T"):
        s = run_method(name, factory["mlcm"], split, None, text, device, num_steps=4, lr=1e-5, val_every=0,
                       batch_size=args.finetune_batch_size, max_updates=args.updates)
        row = {"method": "draft_4" if name == "draft_T" else name, "updates": s["updates"],
               "peak_saved_bytes": s["peak_saved_bytes"], "s_per_update": s["s_per_update"],
               "peak_cuda_bytes": s["peak_cuda_bytes"]}
        tuning.append(row)
        print(f"{row['method']:>14} {row['updates']:>8} {mib(row['peak_saved_bytes']):>10} {row['s_per_update']:9.3f} "
              f"{mib(row['peak_cuda_bytes']):>10}", flush=True)
    easy, draft = tuning
    print(f"\nEasyTune / DRaFT-4: saved-tensor peak {easy['peak_saved_bytes'] / draft['peak_saved_bytes']:.3f}, "
          f"seconds per update {easy['s_per_update'] / draft['s_per_update']:.3f} (DRaFT-4 makes one update per "
          f"trajectory, EasyTune four)")
    if args.json:
        out = {"models": args.data or f"random {args.preset}", "device": str(device), "threads": args.threads,
               "batch_size": args.batch_size, "frames": frames, "generation": rows,
               "finetune_batch_size": args.finetune_batch_size, "finetune": tuning}
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
