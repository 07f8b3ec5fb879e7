"""Seconds per EasyTune update against the batch size (documented command, not a test; issue #23).

Runs ``easytune_step`` for a few updates at each batch size with the project's checkpoints (data/06_models:
pretrained generator + reward_model) or, when they are absent, randomly initialised models of ``--preset``, and
prints the median seconds per optimizer update and the largest batch under ``--target-s`` (about 1 s).

    .venv/bin/python benchmarks/easytune_update_batch.py                       # catalog models if present, CPU
    .venv/bin/python benchmarks/easytune_update_batch.py --device cuda --batch-sizes 8,16,32,64,128,256
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import torch
from common import catalog_models, random_models, run_method, synthetic_captions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", default="mld", choices=["mld", "mdm", "mlcm"])
    ap.add_argument("--models-dir", default="data/06_models")
    ap.add_argument("--preset", default="tiny", choices=["tiny", "cpu", "paper"], help="when no checkpoints exist")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-sizes", default="1,2,4,8,16,32")
    ap.add_argument("--num-steps", type=int, default=50)
    ap.add_argument("--updates", type=int, default=6, help="updates timed per batch size (the first is warm-up)")
    ap.add_argument("--max-frames", type=int, default=96)
    ap.add_argument("--target-s", type=float, default=1.0)
    args = ap.parse_args()
    device = torch.device(args.device)
    models_dir = Path(args.models_dir)
    names = {"mld": "pretrained_latent_denoiser", "mdm": "pretrained_frame_denoiser",
             "mlcm": "pretrained_consistency_model"}
    if (models_dir / f"{names[args.generator]}.pt").exists() and (models_dir / "reward_model.pt").exists():
        factory = functools.partial(catalog_models, models_dir, args.generator, device)
        source = f"checkpoints in {models_dir}"
    else:
        factory = functools.partial(random_models, args.preset, args.generator, device, 0, args.max_frames)
        source = f"random {args.preset} models (no checkpoints in {models_dir})"
    gen, _ = factory()
    num_steps = min(args.num_steps, gen.steps(None)) if args.generator == "mlcm" else args.num_steps
    print(f"EasyTune seconds per update, {args.generator}, T = {num_steps}, {source}, {device}")
    best = None
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        train, text = synthetic_captions(max(batch, 8), args.max_frames, gen.feature_dim, seed=0)
        summary = run_method("easytune_step", factory, train, None, text, device, num_steps=num_steps,
                             batch_size=batch, max_updates=args.updates, max_frames=args.max_frames)
        seconds = [r["value"] for r in summary["history"]["s_per_update"]][1:] or [float("nan")]
        median = float(torch.tensor(seconds).median())
        print(f"batch {batch:5d}: {median:.3f} s/update (median of {len(seconds)})")
        if median < args.target_s:
            best = batch
    print(f"largest batch under {args.target_s:g} s per update: {best if best is not None else 'none'}")


if __name__ == "__main__":
    main()
