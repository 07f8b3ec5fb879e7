"""Memory per optimizer update of every fine-tuning method for T in {10, 20, 50} (documented command, not a test).

Peak bytes of tensors saved for backward (exact, device independent; see easytune.core.finetune.accounting) per
update, the seconds per update, and on CUDA the peak allocated memory. Prints EasyTune's extra memory over no-grad
sampling as a fraction of DRaFT-50's (paper: 0.31). Randomly initialised models of a preset (memory does not
depend on the weights).

    .venv/bin/python benchmarks/memory.py                         # cpu preset, MLD, batch 8, CPU
    .venv/bin/python benchmarks/memory.py --preset paper --device cuda --batch-size 64
    .venv/bin/python benchmarks/memory.py --steps 50 --methods easytune_step,draft_T --reward-checkpointing both

``--reward-checkpointing both`` measures every method with and without gradient checkpointing of the reward path
(VAE decode + reward model), in one run, and prints EasyTune / DRaFT-50 for each and the change of EasyTune's
seconds per update.
"""

from __future__ import annotations

import argparse
import functools
import json

import torch
from common import METHODS, mib, nograd_sampling_cuda_peak, random_models, run_method, synthetic_captions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu", choices=["tiny", "cpu", "paper"])
    ap.add_argument("--generator", default="mld", choices=["mld", "mdm"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--steps", default="10,20,50")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--updates", type=int, default=2, help="optimizer updates measured per method and T")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reward-checkpointing", default="off", choices=["off", "on", "both"])
    ap.add_argument("--json", default=None, help="also write the table to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    train, text = synthetic_captions(64, args.frames, 263, seed=0)
    factory = functools.partial(random_models, args.preset, args.generator, device, 0, args.frames)
    rows = []
    run_method("easytune_step", factory, train, None, text, device, num_steps=2, batch_size=args.batch_size,
               max_updates=1, val_every=0)  # warm-up (lazy initialisation is not an update's cost)
    print(f"preset={args.preset} generator={args.generator} device={device} batch={args.batch_size} "
          f"frames={args.frames} updates/run={args.updates}")
    print(f"{'method':>15} {'T':>3} {'ckpt':>5} {'saved MiB':>10} {'s/update':>9} {'CUDA MiB':>10}")
    settings = {"off": [False], "on": [True], "both": [False, True]}[args.reward_checkpointing]
    for steps in [int(s) for s in args.steps.split(",")]:
        base_cuda = nograd_sampling_cuda_peak(factory, train, text, device, args.batch_size, steps)
        for ckpt in settings:
            for name in args.methods.split(","):
                s = run_method(name, factory, train, None, text, device, num_steps=steps,
                               batch_size=args.batch_size, max_updates=args.updates, lr=1e-5, val_every=0,
                               reward_checkpointing=ckpt)
                row = {"method": name, "T": steps, "reward_checkpointing": ckpt,
                       "peak_saved_bytes": s["peak_saved_bytes"], "s_per_update": s["s_per_update"],
                       "peak_cuda_bytes": s["peak_cuda_bytes"], "nograd_cuda_bytes": base_cuda}
                rows.append(row)
                print(f"{name:>15} {steps:>3} {'on' if ckpt else 'off':>5} {mib(row['peak_saved_bytes']):>10} "
                      f"{row['s_per_update']:9.3f} {mib(row['peak_cuda_bytes']):>10}", flush=True)
    for ckpt in settings:
        if len(settings) > 1:
            print(f"\nreward-path checkpointing {'on' if ckpt else 'off'}:")
        _summary({(r["method"], r["T"]): r for r in rows if r["reward_checkpointing"] == ckpt})
    if len(settings) == 2:
        off, on = ({r["T"]: r for r in rows if r["method"] == "easytune_step" and r["reward_checkpointing"] == c}
                   for c in settings)
        for t in sorted(set(off) & set(on)):
            print(f"T={t}: EasyTune s/update with reward-path checkpointing / without = "
                  f"{on[t]['s_per_update'] / off[t]['s_per_update']:.2f} (saved bytes "
                  f"{on[t]['peak_saved_bytes'] / off[t]['peak_saved_bytes']:.2f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


def _summary(by: dict) -> None:
    if ("easytune_step", 50) in by and ("draft_T", 50) in by:
        easy, draft = by[("easytune_step", 50)], by[("draft_T", 50)]
        ratio = easy["peak_saved_bytes"] / draft["peak_saved_bytes"]
        print(f"\nT=50 saved-tensor peak: EasyTune / DRaFT-50 = {ratio:.3f} "
              f"(no-grad sampling saves nothing, so this is the extra-memory ratio; paper: 0.31)")
        if easy["peak_cuda_bytes"] is not None and easy["nograd_cuda_bytes"] is not None:
            base = easy["nograd_cuda_bytes"]
            cuda_ratio = (easy["peak_cuda_bytes"] - base) / (draft["peak_cuda_bytes"] - base)
            print(f"T=50 CUDA extra over no-grad sampling: EasyTune / DRaFT-50 = {cuda_ratio:.3f} (paper: 0.31)")
    easy = [by[("easytune_step", t)]["peak_saved_bytes"] for t in (10, 20, 50) if ("easytune_step", t) in by]
    if len(easy) > 1:
        print(f"EasyTune saved peak spread over T: {max(easy) / min(easy) - 1:.2%}")


if __name__ == "__main__":
    main()
