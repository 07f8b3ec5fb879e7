"""Wall-clock time for each method to reach a fixed validation-reward level from the same start (not a test).

All methods start from the same pretrained generator and reward (the pipeline checkpoints in data/06_models, or
randomly initialised models of a preset with --preset) and the same captions. The reward level is measured on
fixed held-out captions with the no-grad sampler (same noise every time), so every method is judged alike; the
time counts optimizer-update windows only (validation excluded). The target is ``--target`` or, by default,
the start value plus ``--gain`` of the improvement EasyTune reaches within ``--budget-updates`` (EasyTune runs
first). Prints the ratio DRaFT-T / EasyTune (paper, HumanML3D on an A6000: 2,617 s / 358 s = 7.3x).

    .venv/bin/python benchmarks/time_to_reward.py                       # pipeline checkpoints, MLD, CPU
    .venv/bin/python benchmarks/time_to_reward.py --preset cpu          # random init, synthetic captions
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import torch
from common import ROOT, catalog_captions, catalog_models, random_models, run_method, synthetic_captions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default=None, choices=[None, "tiny", "cpu", "paper"],
                    help="random init of this preset instead of the pipeline checkpoints")
    ap.add_argument("--generator", default="mld", choices=["mld", "mdm"])
    ap.add_argument("--data", default=str(ROOT / "data"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-5, help="the pipeline default (finetune.common.lr)")
    ap.add_argument("--methods", default="easytune_step,draft_T", help="the first one defines the target")
    ap.add_argument("--budget-updates", type=int, default=200, help="EasyTune's updates to define the target")
    ap.add_argument("--gain", type=float, default=0.5)
    ap.add_argument("--target", type=float, default=None)
    ap.add_argument("--max-seconds", type=float, default=600.0, help="train-time budget per method")
    ap.add_argument("--val-captions", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.preset:
        train, text = synthetic_captions(64, 64, 263, seed=0)
        val = train
        factory = functools.partial(random_models, args.preset, args.generator, device, 0, 64)
    else:
        train, val, text = catalog_captions(Path(args.data))
        factory = functools.partial(catalog_models, Path(args.data) / "06_models", args.generator, device)
    every = {"easytune_step": 10, "easytune_chain": 10}  # others: validate after every update
    common = dict(batch_size=args.batch_size, lr=args.lr, warmup_updates=0, val_captions=args.val_captions,
                  max_frames=96, restore_best=False)
    target = args.target
    results = []
    for i, name in enumerate(args.methods.split(",")):
        crossed: dict = {}

        def stop(updates: int, value: float, seconds: float) -> bool:
            if target is not None and value >= target and "seconds" not in crossed:
                crossed.update(updates=updates, seconds=seconds, value=value)
            return ("seconds" in crossed) or seconds > args.max_seconds

        define_target = target is None and i == 0
        max_updates = args.budget_updates if define_target else 100000
        s = run_method(name, factory, train, val, text, device, num_steps=args.steps, max_updates=max_updates,
                       val_every=every.get(name, 1), on_validation=None if define_target else stop, **common)
        curve = s["history"]["val_reward"]
        if define_target:
            start, best = curve[0]["value"], max(r["value"] for r in curve)
            target = start + args.gain * (best - start)
            seconds = _seconds_at(s["history"], target)
            crossed = seconds
        print(f"{name:>15}: start {curve[0]['value']:.4f} best {max(r['value'] for r in curve):.4f} "
              f"updates {s['updates']} s/update {s['s_per_update']:.3f} -> target {target:.4f} "
              f"{'reached at %.1f s (update %d)' % (crossed['seconds'], crossed['updates']) if crossed else 'NOT reached'}",
              flush=True)
        results.append({"method": name, "target": target, "time_to_target_s": crossed.get("seconds") if crossed else None,
                        "updates_to_target": crossed.get("updates") if crossed else None,
                        "s_per_update": s["s_per_update"], "updates": s["updates"],
                        "val_curve": [(r["step"], r["value"]) for r in curve]})
    if len(results) >= 2 and results[0]["time_to_target_s"]:
        base = results[0]["time_to_target_s"]
        for r in results[1:]:
            if r["time_to_target_s"] is not None:
                print(f"time to reward {target:.4f}: {r['method']} / {results[0]['method']} = "
                      f"{r['time_to_target_s'] / base:.2f}x (paper DRaFT / EasyTune: 7.3x)")
            else:
                print(f"time to reward {target:.4f}: {r['method']} did not reach it within {args.max_seconds:.0f} s "
                      f"of updates: ratio > {args.max_seconds / base:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def _seconds_at(history: dict, target: float) -> dict:
    """First validation at or above ``target`` and the summed update seconds up to it."""
    seconds = {r["step"]: r["value"] for r in history["s_per_update"]}
    for r in history["val_reward"]:
        if r["value"] >= target:
            return {"updates": r["step"], "value": r["value"],
                    "seconds": sum(v for step, v in seconds.items() if step <= r["step"])}
    return {}


if __name__ == "__main__":
    main()
