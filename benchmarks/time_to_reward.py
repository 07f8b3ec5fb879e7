"""Training time for each method to reach a fixed held-out reward from the same start (not a test).

Every method starts from the same pretrained generator and reward (the pipeline checkpoints in data/06_models, or
randomly initialised models of a preset with --preset) and samples the same captions. Each method trains for the
same ``--budget-seconds`` of update windows (validation excluded) and its held-out reward is checked at the SAME
points for every method: ``--checks`` equally spaced training times (a weights snapshot at the first update past
each point, scored outside the timed windows with the no-grad sampler on fixed val captions and noise). The time to
reach the target is interpolated linearly between the two checks around the first crossing, so the ratio is a
measurement at a resolution of budget / checks, not a bound. The target is ``--target`` or the start value plus
``--gain`` of the improvement the first method reaches within its budget.
Prints the ratio <method> / first method (paper, HumanML3D on an A6000: DRaFT / EasyTune = 2,617 s / 358 s = 7.3x).

    .venv/bin/python benchmarks/time_to_reward.py                       # pipeline checkpoints, MLD, CPU
    .venv/bin/python benchmarks/time_to_reward.py --preset cpu          # random init, synthetic captions
    .venv/bin/python benchmarks/time_to_reward.py --env bandai --data <copy>/data   # the env's finetune settings

With ``--env`` every method's settings (learning rate, batch size, reward weight, guards: ``kl_weight``,
``reward_ensemble``, ``realism_weight``...) are those ``kedro run --env <env> --pipeline finetune`` would use for it
(``finetune.common`` + ``finetune.methods.<method>``), with the policy of ``--methods`` (e.g. draft_T: all steps)
and this benchmark's budget and checks; ``--lr`` and ``--batch-size`` are then ignored.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import torch
from common import ROOT, catalog_captions, catalog_models, policy_of, random_models, synthetic_captions

from easytune.core.finetune.config import FinetuneConfig
from easytune.core.finetune.trainer import finetune, validation_batch, validation_reward


def env_config(env: str, method: str, options: dict, overrides: dict) -> FinetuneConfig:
    """``method``'s FinetuneConfig as ``kedro run --env env --pipeline finetune`` builds it (conf/base soft-merged
    with conf/<env>), its policy replaced by ``options`` and the benchmark's ``overrides`` applied."""
    from easytune import settings
    from easytune.core.finetune.config import FinetuneSettings, method_config
    from easytune.core.infra.config import from_dict

    loader = settings.CONFIG_LOADER_CLASS(conf_source=str(ROOT / "conf"), env=env, **settings.CONFIG_LOADER_ARGS)
    finetune = from_dict(FinetuneSettings, loader["parameters"]["finetune"], where="params:finetune")
    override = finetune.methods.get(method, {})
    return method_config(finetune.common, override, {"method": method, "policy": options, **overrides},
                         where=f"conf/{env} finetune.methods.{method}")


def run(name, factory, train, val, text, device, args) -> dict:
    """Train ``name`` for the seconds budget; held-out reward at every check point -> {"checks": [(s, r)], ...}."""
    method, options = policy_of(name, args.steps)
    fractions = [(k + 1) / args.checks for k in range(args.checks)]
    budget = {"num_steps": args.steps, "warmup_updates": 0, "max_frames": 96, "restore_best": False,
              "max_updates": 10**9, "max_train_s": args.budget_seconds, "max_cost_gflops": None,
              "snapshot_at": fractions, "val_every": 0, "patience": None, "resume_path": None,
              "save_every_updates": 0}
    if args.env:
        config = env_config(args.env, method, options, budget)
    else:
        config = FinetuneConfig(method=method, policy=options, batch_size=args.batch_size, lr=args.lr, **budget)
    gen, reward = factory(config)
    val_text, val_len = validation_batch(val, text, args.val_captions, 96, device)

    def score() -> float:
        return validation_reward(gen, reward, val_text, val_len, seed=1, num_steps=args.steps,
                                 guidance_scale=None)

    checks = [(0.0, score())]

    def on_snapshot(record: dict, state_dict: dict) -> None:  # outside the timed update windows
        checks.append((record["train_s"], score()))

    result = finetune(gen, reward, train, None, text, config, seed=0, device=device, progress=False,
                      on_snapshot=on_snapshot)
    return {"method": name, "lr": config.lr, "batch_size": config.batch_size,
            "guards": {"kl_weight": config.kl_weight, "reward_weight": config.reward_weight,
                       "realism_weight": config.realism_weight,
                       "reward_ensemble": None if config.reward_ensemble is None else vars(config.reward_ensemble)},
            "checks": checks, "updates": result.summary["updates"],
            "s_per_update": result.summary["s_per_update"], "train_s": result.summary["train_s"]}


def crossing(checks: list[tuple[float, float]], target: float) -> float | None:
    """Training seconds where the checked reward first reaches ``target`` (linear between two checks)."""
    for (s0, r0), (s1, r1) in zip(checks, checks[1:], strict=False):
        if r0 >= target:
            return s0
        if r1 >= target:
            return s0 + (target - r0) / (r1 - r0) * (s1 - s0)
    return None


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
    ap.add_argument("--budget-seconds", type=float, default=120.0, help="training seconds per method")
    ap.add_argument("--checks", type=int, default=40, help="reward checks per method, equally spaced in time")
    ap.add_argument("--gain", type=float, default=0.5)
    ap.add_argument("--target", type=float, default=None)
    ap.add_argument("--val-captions", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--env", default=None, help="take every method's settings from this Kedro env's finetune params")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.preset:
        train, text = synthetic_captions(64, 64, 263, seed=0)
        val = train
        def factory(config):
            return random_models(args.preset, args.generator, device, 0, 64)
    else:
        train, val, text = catalog_captions(Path(args.data))
        factory = functools.partial(catalog_models, Path(args.data) / "06_models", args.generator, device)
    results = [run(name, factory, train, val, text, device, args) for name in args.methods.split(",")]
    first = results[0]["checks"]
    target = args.target
    if target is None:
        target = first[0][1] + args.gain * (max(r for _, r in first) - first[0][1])
    for r in results:
        r["target"], r["time_to_target_s"] = target, crossing(r["checks"], target)
        reached = "NOT reached" if r["time_to_target_s"] is None else f"reached at {r['time_to_target_s']:.1f} s"
        print(f"{r['method']:>15}: start {r['checks'][0][1]:.4f} best {max(v for _, v in r['checks']):.4f} "
              f"updates {r['updates']} s/update {r['s_per_update']:.3f} -> target {target:.4f} {reached}", flush=True)
    base = results[0]["time_to_target_s"]
    for r in results[1:]:
        if base and r["time_to_target_s"] is not None:
            print(f"time to reward {target:.4f}: {r['method']} / {results[0]['method']} = "
                  f"{r['time_to_target_s'] / base:.2f}x (checks every {args.budget_seconds / args.checks:.1f} s of "
                  f"training for every method; paper DRaFT / EasyTune: 7.3x)")
        elif base:
            print(f"time to reward {target:.4f}: {r['method']} did not reach it within {args.budget_seconds:.0f} s "
                  f"of training: ratio > {args.budget_seconds / base:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
