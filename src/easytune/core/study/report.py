"""``study_report``: variants -> runs -> snapshots -> metrics, the four views with CIs, rankings and conclusions.

The conclusions are generated from the numbers and claim only what the intervals support: a variant is "best" under
a view by its mean, and every variant whose 95% interval overlaps the best's is named as not separated from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from easytune.core.study.config import StudyConfig
from easytune.core.study.views import (
    admissible_index,
    at_equal_cost,
    at_equal_reward_gain,
    at_equal_seconds,
    mean_ci,
    pareto_front,
    rank_variants,
    snapshot_value,
)

#: metrics ranked in the conclusions, with their direction (True: higher is better)
RANKED = {"R@1": True, "FID": False}

CI_NOTE = ("95% Student-t intervals over training seeds; each seed's snapshots are generated with that seed's own "
           "noise (and the protocol's mean over generation_replications generations when > 1), so generation noise "
           "is inside the interval. The intervals do not cover retraining the base generator, the reward model or the "
           "evaluator, nor other datasets.")


def select_points(config: StudyConfig, records: Mapping[str, Mapping]) -> dict[str, Any]:
    """The admissible snapshot of every run (view d), from validation signals only (no test metric is an input):
    ``{variant: {"indices": [j per seed], "rule": ...}}``."""
    out = {}
    for variant, record in records.items():
        if not record:
            continue
        out[variant] = {"indices": [admissible_index(run["snapshots"], config.signals.guard)
                                    for run in record["runs"]],
                        "seeds": [run["seed"] for run in record["runs"]]}
    return {"rule": f"highest val_reward among snapshots with val_reward_fid <= {config.signals.guard} x the base's "
                    f"(val split, reward-model embeddings); the base itself is always admissible",
            "variants": out}


def attach_scores(record: Mapping, scores: Sequence[Sequence[Mapping]], base_metrics: Mapping) -> list[list[dict]]:
    """The runs of a variant record with test metrics attached to every snapshot (snapshot 0: the base's)."""
    runs = []
    for run, run_scores in zip(record["runs"], scores, strict=True):
        snaps = [dict(run["snapshots"][0], metrics=dict(base_metrics))]
        for snap, metrics in zip(run["snapshots"][1:], run_scores, strict=True):
            snaps.append(dict(snap, metrics=dict(metrics)))
        runs.append(snaps)
    return runs


def build_report(config: StudyConfig, base_metrics: Mapping, base_signals: Mapping, selection: Mapping,
                 records: Mapping[str, Mapping], scores: Mapping[str, Sequence]) -> dict[str, Any]:
    """The study report (see the module docstring); variants without a record or scores are left out."""
    names = list(config.metrics)
    variants = {v: attach_scores(records[v], scores[v], base_metrics)
                for v in records if records.get(v) and scores.get(v)}
    final_seconds = [snapshot_value(r[-1], "train_s") for runs in variants.values() for r in runs]
    horizon = min(final_seconds) if final_seconds else 0.0  # every run of every variant trained at least this long
    seconds = [f * horizon for f in config.seconds_points]
    views: dict[str, Any] = {
        "equal_cost": {v: at_equal_cost(runs, [*names, "val_reward", "val_reward_fid"])
                       for v, runs in variants.items()},
        "equal_seconds": {"seconds": seconds,
                          "variants": {v: at_equal_seconds(runs, names, seconds) for v, runs in variants.items()}},
        "equal_reward_gain": {v: at_equal_reward_gain(runs, names, config.reward_gains)
                              for v, runs in variants.items()},
    }
    points = [{"variant": "base", "index": 0, "at": 0.0, "FID": base_metrics["FID"]["mean"],
               "R@1": base_metrics["R@1"]["mean"]}]
    for v, rows in views["equal_cost"].items():
        for row in rows[1:]:
            points.append({"variant": v, "index": row["index"], "at": row["at"], "FID": row["FID"]["mean"],
                           "FID_ci": row["FID"]["ci"], "R@1": row["R@1"]["mean"], "R@1_ci": row["R@1"]["ci"]})
    views["pareto"] = {"points": points, "front": pareto_front(points)}
    admissible = {}
    for v, runs in variants.items():
        idx = selection["variants"][v]["indices"]
        chosen = [run[j] for run, j in zip(runs, idx, strict=True)]
        admissible[v] = {"indices": idx, **{n: mean_ci([snapshot_value(p, n) for p in chosen])
                                            for n in ("cost_gflops", "train_s", "val_reward", "val_reward_fid",
                                                      *names)}}
    views["admissible"] = {"rule": selection["rule"], "variants": admissible}
    report = {
        "config": {"metrics": list(config.metrics), "seeds": config.seeds, "selection_seed": config.selection_seed,
                   "budget_gflops":
                   config.budget_gflops, "snapshot_at": config.snapshot_at, "lr_grid": config.lr_grid,
                   "signals": vars(config.signals), "reward_gains": config.reward_gains, "protocol": config.protocol},
        "ci": CI_NOTE,
        "base": {"metrics": dict(base_metrics), "signals": dict(base_signals)},
        "variants": {v: {"method": records[v]["method"], "policy": records[v]["policy"],
                         "finetune": records[v]["finetune"], "lr": records[v]["lr_selection"]["lr"],
                         "lr_selection": records[v]["lr_selection"],
                         "runs": [{"seed": run["seed"], "lr": run["lr"], "summary": run["summary"], "snapshots": snaps}
                                  for run, snaps in zip(records[v]["runs"], runs, strict=True)]}
                     for v, runs in variants.items()},
        "views": views,
    }
    if config.spl_ablation and all(v in variants for v in config.spl_ablation):
        report["spl_ablation"] = spl_ablation(variants[config.spl_ablation[0]], variants[config.spl_ablation[1]],
                                              config.spl_ablation, views)
    report["rankings"] = rankings(report)
    report["conclusions"] = conclusions(report)
    return report


#: metrics of the Fig. 8 win rates (True: higher is better)
SPL_ABLATION_METRICS = {"R@1": True, "R@2": True, "R@3": True, "FID": False}


def spl_ablation(after: Sequence[Sequence[Mapping]], before: Sequence[Sequence[Mapping]], names: Sequence[str],
                 views: Mapping) -> dict[str, Any]:
    """Paper Fig. 8: the variant fine-tuned with the SPL reward against the same variant with the reward before SPL
    (same method, budget, seeds and learning rate). Win rate per metric = fraction of matched (seed, snapshot)
    pairs, snapshots after the base, where the SPL variant is better (ties count half); the metrics themselves at
    the whole budget with their CIs come from the equal-cost view."""
    out: dict[str, Any] = {"variants": {"after_spl": names[0], "before_spl": names[1]}, "win_rate": {}, "pairs": 0}
    for metric, higher in SPL_ABLATION_METRICS.items():
        wins = []
        for run_a, run_b in zip(after, before, strict=True):
            for p, q in zip(run_a[1:], run_b[1:], strict=True):
                a, b = snapshot_value(p, metric), snapshot_value(q, metric)
                if a is None or b is None:
                    continue
                wins.append(0.5 if a == b else float((a > b) == higher))
        out["win_rate"][metric] = sum(wins) / len(wins) if wins else None
        out["pairs"] = max(out["pairs"], len(wins))
        out[metric] = {"after_spl": views["equal_cost"][names[0]][-1].get(metric),
                       "before_spl": views["equal_cost"][names[1]][-1].get(metric)}
    return out


def rankings(report: Mapping) -> dict[str, dict[str, Any]]:
    """``{view: {metric: ranking}}``: best variant and the variants not separated from it, per view and ranked
    metric (equal reward gains: among variants with >= 2 seeds reaching the gain)."""
    views = report["views"]
    out: dict[str, dict[str, Any]] = {}
    for metric, higher in RANKED.items():
        out.setdefault("equal_cost_final", {})[metric] = rank_variants(
            {v: rows[-1][metric] for v, rows in views["equal_cost"].items()}, higher)
        last = len(views["equal_seconds"]["seconds"]) - 1
        if last >= 0:
            out.setdefault("equal_seconds_final", {})[metric] = rank_variants(
                {v: rows[last][metric] for v, rows in views["equal_seconds"]["variants"].items()}, higher)
        for gi, gain in enumerate(report["config"]["reward_gains"]):
            out.setdefault(f"equal_reward_gain_{gain:g}", {})[metric] = rank_variants(
                {v: rows[gi][metric] for v, rows in views["equal_reward_gain"].items() if rows[gi]["reached"] >= 2},
                higher)
        out.setdefault("admissible", {})[metric] = rank_variants(
            {v: row[metric] for v, row in views["admissible"]["variants"].items()}, higher)
    return out


def _cell(c: Mapping | None, digits: int = 3) -> str:
    if not c or c.get("mean") is None:
        return "-"
    return f"{c['mean']:.{digits}f}" + ("" if c.get("ci") is None else f" ± {c['ci']:.{digits}f}")


def conclusions(report: Mapping) -> list[str]:
    """One sentence per view and ranked metric, stating the best mean and the variants not separated from it."""
    base = report["base"]["metrics"]
    budget = report["config"]["budget_gflops"]
    labels = {"equal_cost_final": f"at equal cost (the whole budget, {budget:g} GFLOPs)",
              "equal_seconds_final": "at equal training seconds (the shortest run's, this machine)",
              "admissible": "at each variant's best admissible point (chosen on val signals)"}
    for gain in report["config"]["reward_gains"]:
        labels[f"equal_reward_gain_{gain:g}"] = f"at equal held-out reward gain (+{gain:g} over the base; seeds that " \
                                                f"reached it)"
    lines = []
    for view, by_metric in report["rankings"].items():
        for metric, rank in by_metric.items():
            lines.append(_conclusion(labels[view], metric, rank, base))
    return lines


def _conclusion(label: str, metric: str, rank: Mapping, base: Mapping) -> str:
    label = label[0].upper() + label[1:]
    if rank.get("best") is None:
        return f"{label}: no variant has {metric} here (none reached it with 2 seeds)."
    tied = rank["tied_with"]
    if rank.get("candidates", 2) == 1:
        verdict = "the only variant with a value here"
    elif rank.get("ci") is None:
        verdict = "no interval (fewer than 2 seeds), so no separation is claimed"
    elif not tied:
        verdict = "its interval is separated from every other variant's"
    else:
        verdict = f"not separated at 95% from {', '.join(tied)}"
    return (f"{label}, {'highest' if RANKED[metric] else 'lowest'} {metric}: {rank['best']} "
            f"({_cell({'mean': rank['mean'], 'ci': rank['ci']})}; base {base[metric]['mean']:.3f}); {verdict}.")


def _gflops(c: Mapping | None) -> str:
    if not c or c.get("mean") is None:
        return "-"
    return f"{c['mean']:.4g}" + ("" if c.get("ci") is None else f" ± {c['ci']:.2g}")


def markdown_tables(report: Mapping) -> str:
    """README/MLflow tables of the study: learning rates, equal cost (final), equal reward gain, admissible points,
    and the conclusions."""
    views = report["views"]
    names = [n for n in ("R@1", "FID", "content_accuracy", "MultiModality", "jitter")
             if n in report["config"]["metrics"]]
    out = ["**Learning rate per variant** (chosen on the selection seed, val signals only)", "",
           "| variant | method | lr | grid | val reward at admissible point per lr |", "|---|---|---|---|---|"]
    for v, rec in report["variants"].items():
        cands = ", ".join(f"{c['lr']:g}: {c['val_reward']:.2f}" for c in rec["lr_selection"]["candidates"]) or "-"
        grid = ", ".join(f"{x:g}" for x in rec["lr_selection"]["grid"])
        out.append(f"| {v} | {rec['method']} | {rec['lr']:g} | {grid} | {cands} |")
    out += ["", f"**At equal cost** (the whole budget, {report['config']['budget_gflops']:g} GFLOPs; mean ± 95% CI "
            f"over {len(report['config']['seeds'])} seeds)", "",
            "| variant | updates | train s | val reward | val reward FID | " + " | ".join(names) + " |",
            "|---" * (5 + len(names)) + "|"]
    base = report["base"]
    out.append(f"| base | 0 | 0 | {base['signals']['val_reward']:.3f} | {base['signals']['val_reward_fid']:.3f} | "
               + " | ".join(_cell(base["metrics"].get(n)) for n in names) + " |")
    for v, rows in views["equal_cost"].items():
        r = rows[-1]
        out.append(f"| {v} | {_cell(r['updates'], 0)} | {_cell(r['train_s'], 1)} | {_cell(r['val_reward'])} | "
                   f"{_cell(r['val_reward_fid'])} | " + " | ".join(_cell(r[n]) for n in names) + " |")
    for gi, gain in enumerate(report["config"]["reward_gains"]):
        out += ["", f"**At equal held-out reward gain +{gain:g}** (interpolated between snapshots; seeds that reached "
                f"it)", "", "| variant | reached | GFLOPs | " + " | ".join(names) + " |",
                "|---" * (3 + len(names)) + "|"]
        for v, rows in views["equal_reward_gain"].items():
            r = rows[gi]
            out.append(f"| {v} | {r['reached']}/{r['runs']} | {_gflops(r['cost_gflops'])} | "
                       + " | ".join(_cell(r[n]) for n in names) + " |")
    out += ["", "**Best admissible point** (" + views["admissible"]["rule"] + ")", "",
            "| variant | snapshot per seed | GFLOPs | val reward | " + " | ".join(names) + " |",
            "|---" * (4 + len(names)) + "|"]
    for v, r in views["admissible"]["variants"].items():
        out.append(f"| {v} | {r['indices']} | {_gflops(r['cost_gflops'])} | {_cell(r['val_reward'])} | "
                   + " | ".join(_cell(r[n]) for n in names) + " |")
    front = ", ".join(f"{p['variant']}@{p['at']:g}" for p in views["pareto"]["front"])
    out += ["", f"**Pareto front** (R@1 up, FID down, snapshot means): {front}", "",
            "**What the data supports**", ""] + [f"- {line}" for line in report["conclusions"]]
    if "spl_ablation" in report:
        abl = report["spl_ablation"]
        a, b = abl["variants"]["after_spl"], abl["variants"]["before_spl"]
        out += ["", f"**SPL ablation (paper Fig. 8)**: {a} (reward after SPL) against {b} (reward before SPL); win "
                f"rate = share of {abl['pairs']} matched (seed, snapshot) pairs where the SPL reward's model is better",
                "", "| metric | win rate of SPL | after SPL (whole budget) | before SPL (whole budget) |",
                "|---|---|---|---|"]
        for metric in SPL_ABLATION_METRICS:
            rate = abl["win_rate"][metric]
            out.append(f"| {metric} | {'-' if rate is None else f'{rate:.2f}'} | {_cell(abl[metric]['after_spl'])} | "
                       f"{_cell(abl[metric]['before_spl'])} |")
    out += ["", f"_{report['ci']}_"]
    return "\n".join(out) + "\n"
