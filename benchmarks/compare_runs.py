"""Compare two project folders' main-job outputs: reports (wall-clock fields removed) and checkpoints (tensor by
tensor, exactly). Used to show that a change which should not change numbers does not.

    python benchmarks/compare_runs.py /path/to/before /path/to/after
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

REPORTS = ("evaluation_metrics.json", "pretrain_report.json", "finetune_report.json", "reward_report.json")
CHECKPOINTS = ("motion_vae.pt", "pretrained_latent_denoiser.pt", "reward_model.pt", "finetuned/easytune_step.pt",
               "evaluator.pt", "content_classifier.pt")
WALL_CLOCK = ("wall_s", "train_s", "val_s", "s_per_update", "samples_per_s", "signals_s", "seconds", "time_s")


def without_clock(value):
    if isinstance(value, dict):
        return {k: without_clock(v) for k, v in value.items()
                if k != "curves" and not any(w in k for w in WALL_CLOCK)}
    if isinstance(value, list):
        return [without_clock(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    for name in REPORTS:
        a, b = (folder / "data/08_reporting" / name for folder in (args.before, args.after))
        if not (a.exists() and b.exists()):
            print(f"{name}: missing ({a.exists()}, {b.exists()})")
            continue
        da, db = without_clock(json.loads(a.read_text())), without_clock(json.loads(b.read_text()))
        differ = sorted(k for k in set(da) | set(db) if da.get(k) != db.get(k)) if isinstance(da, dict) else []
        print(f"{name}: " + ("identical (wall-clock fields aside)" if da == db else f"DIFFERENT in {differ}"))
    for name in CHECKPOINTS:
        a, b = (folder / "data/06_models" / name for folder in (args.before, args.after))
        if not (a.exists() and b.exists()):
            print(f"{name}: missing ({a.exists()}, {b.exists()})")
            continue
        sa = torch.load(a, map_location="cpu", weights_only=True)["state_dict"]
        sb = torch.load(b, map_location="cpu", weights_only=True)["state_dict"]
        same = sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
        print(f"{name}: " + ("weights identical" if same else "weights DIFFERENT"))


if __name__ == "__main__":
    main()
