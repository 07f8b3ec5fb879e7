"""``study_report``: variants -> runs -> snapshots -> metrics, the four views with CIs, rankings and conclusions.

The conclusions are generated from the numbers and claim only what the intervals support: a variant is "best" under
a view by its mean, and every variant whose paired 95% interval (the per-seed differences to the best, Student-t)
contains 0 is named as not separated from it. Beside the views: each variant against the base (paired by seed),
the main comparison (EasyTune's best variant against the best chain method, with the achieved paired half-width on
R@1), the fraction of the headroom (real val motions' held-out reward minus the base's) reached, learning rates
still at an edge of their extended grid, and gold (test metrics) against the proxy (headroom fraction).
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
    cell,
    headroom_fraction,
    mean_ci,
    paired,
    pareto_front,
    proxy_gold,
    rank_variants,
    snapshot_value,
)

#: metrics ranked in the conclusions, with their direction (True: higher is better)
RANKED = {"R@1": True, "FID": False}

#: gold metrics set against the proxy (headroom fraction), with their direction
GOLD = {"R@1": True, "content_accuracy": True, "FID": False}

CI_NOTE = ("95% Student-t intervals over training seeds; each seed's snapshots and the base are generated with that "
           "seed's own noise and test captions (and the protocol's mean over its generations when > 1), so "
           "generation noise is inside the interval and differences (variant - base, variant - variant) are paired "
           "by seed: 'separated' means the paired interval of the per-seed differences excludes 0. The intervals do "
           "not cover retraining the base generator, the reward model or the evaluator, nor other datasets.")


def pooled_metrics(base_runs: Sequence[Mapping]) -> dict[str, dict]:
    """The base's metrics over its per-seed scorings: ``{metric: {mean, ci, n}}`` (mean and Student-t interval of
    the per-seed protocol means)."""
    names = [n for n in base_runs[0]] if base_runs else []
    return {n: mean_ci([snapshot_value({"metrics": m}, n) for m in base_runs]) for n in names}


def is_easytune(method: str) -> bool:
    """EasyTune's family (step-aware methods) against the chain methods (DRaFT, ReFL, AlignProp, DRTune)."""
    return method.startswith("easytune")


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


def attach_scores(record: Mapping, scores: Sequence[Sequence[Mapping]], base_by_seed: Mapping[int, Mapping]
                  ) -> list[list[dict]]:
    """The runs of a variant record with test metrics attached to every snapshot (snapshot 0: the base scored with
    that run's seed's noise and captions)."""
    runs = []
    for run, run_scores in zip(record["runs"], scores, strict=True):
        snaps = [dict(run["snapshots"][0], metrics=dict(base_by_seed[run["seed"]]))]
        for snap, metrics in zip(run["snapshots"][1:], run_scores, strict=True):
            snaps.append(dict(snap, metrics=dict(metrics)))
        runs.append(snaps)
    return runs


def build_report(config: StudyConfig, base_runs: Sequence[Mapping], base_signals: Mapping, selection: Mapping,
                 records: Mapping[str, Mapping], scores: Mapping[str, Sequence]) -> dict[str, Any]:
    """The study report (see the module docstring); ``base_runs``: the base's metrics per study seed (in
    ``config.seeds`` order); variants without a record or scores are left out."""
    names = list(config.metrics)
    base_metrics = pooled_metrics(base_runs)
    base_by_seed = dict(zip(config.seeds, base_runs, strict=True))
    variants = {v: attach_scores(records[v], scores[v], base_by_seed)
                for v in records if records.get(v) and scores.get(v)}
    seeds = {v: [run["seed"] for run in records[v]["runs"]] for v in variants}
    final_seconds = [snapshot_value(r[-1], "train_s") for runs in variants.values() for r in runs]
    horizon = min(final_seconds) if final_seconds else 0.0  # every run of every variant trained at least this long
    seconds = [f * horizon for f in config.seconds_points]
    real = base_signals.get("real_val_reward")
    headroom = None if real is None else float(real) - float(base_signals["val_reward"])
    fractions = list(config.headroom_fractions) if headroom is not None and headroom > 0 else []
    gains = [f * headroom for f in fractions]
    views: dict[str, Any] = {
        "equal_cost": {v: at_equal_cost(runs, [*names, "val_reward", "val_reward_fid"])
                       for v, runs in variants.items()},
        "equal_seconds": {"seconds": seconds,
                          "variants": {v: at_equal_seconds(runs, names, seconds) for v, runs in variants.items()}},
        "equal_reward_gain": {v: at_equal_reward_gain(runs, names, gains, fractions) for v, runs in variants.items()},
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
        admissible[v] = {"indices": idx, **{n: cell([snapshot_value(p, n) for p in chosen])
                                            for n in ("cost_gflops", "train_s", "val_reward", "val_reward_fid",
                                                      *names)}}
    views["admissible"] = {"rule": selection["rule"], "variants": admissible}
    report = {
        "config": {"metrics": list(config.metrics), "seeds": config.seeds, "selection_seed": config.selection_seed,
                   "budget_gflops":
                   config.budget_gflops, "snapshot_at": config.snapshot_at, "lr_grid": config.lr_grid,
                   "grid_extensions": config.grid_extensions, "signals": vars(config.signals),
                   "headroom_fractions": config.headroom_fractions, "protocol": config.protocol,
                   "key_generations": config.key_generations},
        "ci": CI_NOTE,
        "base": {"metrics": dict(base_metrics), "per_seed": dict(zip(config.seeds, base_runs, strict=True)),
                 "signals": dict(base_signals)},
        "signal_subset": base_signals.get("signal_subset"),
        "variants": {v: {"method": records[v]["method"], "policy": records[v]["policy"],
                         "finetune": records[v]["finetune"], "lr": records[v]["lr_selection"]["lr"],
                         "lr_selection": records[v]["lr_selection"],
                         "runs": [{"seed": run["seed"], "lr": run["lr"], "summary": run["summary"], "snapshots": snaps}
                                  for run, snaps in zip(records[v]["runs"], runs, strict=True)]}
                     for v, runs in variants.items()},
        "views": views,
    }
    report["headroom"] = headroom_report(real, base_signals["val_reward"], headroom, fractions, variants,
                                         selection)
    report["vs_base"] = {v: vs_base(views, v, seeds[v], [*RANKED, *(n for n in GOLD if n in names and
                                                                     n not in RANKED)])
                         for v in variants}
    report["lr_edges"] = {v: rec["lr_selection"]["at_edge"] for v, rec in report["variants"].items()
                          if rec["lr_selection"].get("at_edge")}
    report["proxy_gold"] = {v: {m: proxy_gold(runs, seeds[v], headroom or 0.0, m, higher)
                                for m, higher in GOLD.items() if m in names}
                            for v, runs in variants.items()} if headroom is not None and headroom > 0 else {}
    if config.spl_ablation and all(v in variants for v in config.spl_ablation):
        report["spl_ablation"] = spl_ablation(variants[config.spl_ablation[0]], variants[config.spl_ablation[1]],
                                              config.spl_ablation, views)
    report["rankings"] = rankings(report)
    report["main_comparison"] = main_comparison(report)
    report["conclusions"] = conclusions(report)
    return report


def by_seed(report: Mapping, variant: str, c: Mapping) -> dict[int, float | None]:
    """A view cell's per-run values keyed by the runs' seeds."""
    seeds = [run["seed"] for run in report["variants"][variant]["runs"]]
    return dict(zip(seeds, c.get("values") or [], strict=False))


def vs_base(views: Mapping, variant: str, seeds: Sequence[int], metrics: Sequence[str]) -> dict[str, dict]:
    """The variant minus the base, paired by seed (each seed's base was generated with that seed's noise), at the
    whole budget (``final``) and at the admissible point (``admissible``), per metric."""
    rows = views["equal_cost"][variant]
    out: dict[str, dict] = {"final": {}, "admissible": {}}
    for m in metrics:
        base = dict(zip(seeds, rows[0][m]["values"], strict=True))
        out["final"][m] = paired(dict(zip(seeds, rows[-1][m]["values"], strict=True)), base)
        out["admissible"][m] = paired(dict(zip(seeds, views["admissible"]["variants"][variant][m]["values"],
                                               strict=True)), base)
    return out


def headroom_report(real: float | None, base_reward: float, headroom: float | None, fractions: Sequence[float],
                    variants: Mapping[str, Sequence], selection: Mapping) -> dict[str, Any]:
    """The headroom (held-out reward of the real val motions of the signal subset minus the base's), the targets
    of the equal-reward view, and per variant the fraction of the headroom reached at the end of the budget and at
    the admissible point (mean and CI over seeds)."""
    out: dict[str, Any] = {"real_val_reward": real, "base_val_reward": base_reward, "headroom": headroom,
                           "fractions": list(fractions), "gains": [f * headroom for f in fractions],
                           "variants": {}}
    if headroom is None or not headroom > 0:
        out["note"] = "no positive headroom (the base's held-out reward is not below the real motions'): no targets"
        return out
    for v, runs in variants.items():
        idx = selection["variants"][v]["indices"]
        out["variants"][v] = {"final": cell([headroom_fraction(r, headroom) for r in runs]),
                              "admissible": cell([headroom_fraction(r, headroom, j)
                                                  for r, j in zip(runs, idx, strict=True)])}
    return out


#: how the main comparison picks each family's best variant (a validation signal, never a test metric)
MAIN_COMPARISON_RULE = "highest mean held-out val reward (val split) in the view; never a test metric"


def main_comparison(report: Mapping) -> dict[str, Any]:
    """EasyTune's best variant against the best chain method on R@1, at each variant's admissible point and at the
    whole budget: the paired difference over seeds and its achieved 95% half-width. Each family's best variant is
    the one with the highest mean held-out *val* reward in that view (:data:`MAIN_COMPARISON_RULE`): choosing it by
    the test R@1 it is then compared on would favour whichever variant's test noise was luckiest."""
    out: dict[str, Any] = {}
    views = report["views"]
    methods = {v: rec["method"] for v, rec in report["variants"].items()}
    cells = {"admissible": {v: row["R@1"] for v, row in views["admissible"]["variants"].items()},
             "equal_cost_final": {v: rows[-1]["R@1"] for v, rows in views["equal_cost"].items()}}
    chosen_by = {"admissible": {v: row["val_reward"] for v, row in views["admissible"]["variants"].items()},
                 "equal_cost_final": {v: rows[-1]["val_reward"] for v, rows in views["equal_cost"].items()}}
    for view, by_variant in cells.items():
        families = {}
        for name, member in (("easytune", True), ("chain", False)):
            present = {v: chosen_by[view][v]["mean"] for v, c in by_variant.items()
                       if is_easytune(methods[v]) == member and c.get("mean") is not None
                       and chosen_by[view][v].get("mean") is not None}
            families[name] = max(present, key=lambda v: present[v]) if present else None
        if families["easytune"] is None or families["chain"] is None:
            out[view] = {"easytune": families["easytune"], "chain": families["chain"], "R@1": None}
            continue
        e, c = families["easytune"], families["chain"]
        diff = paired(by_seed(report, e, by_variant[e]), by_seed(report, c, by_variant[c]))
        out[view] = {"easytune": e, "chain": c, "chosen_by": MAIN_COMPARISON_RULE, "R@1": diff,
                     "half_width": diff["ci"]}
    return out


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
    """``{view: {metric: ranking}}``: best variant and the variants not separated from it by the paired interval,
    per view and ranked metric (equal reward targets: among variants with >= 2 seeds reaching the target)."""
    views = report["views"]
    out: dict[str, dict[str, Any]] = {}

    def rank(cells: Mapping[str, Mapping], higher: bool) -> dict:
        return rank_variants({v: by_seed(report, v, c) for v, c in cells.items()}, higher)

    for metric, higher in RANKED.items():
        out.setdefault("equal_cost_final", {})[metric] = rank(
            {v: rows[-1][metric] for v, rows in views["equal_cost"].items()}, higher)
        last = len(views["equal_seconds"]["seconds"]) - 1
        if last >= 0:
            out.setdefault("equal_seconds_final", {})[metric] = rank(
                {v: rows[last][metric] for v, rows in views["equal_seconds"]["variants"].items()}, higher)
        for gi, fraction in enumerate(report["headroom"]["fractions"]):
            out.setdefault(f"equal_reward_headroom_{fraction:g}", {})[metric] = rank(
                {v: rows[gi][metric] for v, rows in views["equal_reward_gain"].items() if rows[gi]["reached"] >= 2},
                higher)
        out.setdefault("admissible", {})[metric] = rank(
            {v: row[metric] for v, row in views["admissible"]["variants"].items()}, higher)
    return out


def _cell(c: Mapping | None, digits: int = 3) -> str:
    if not c or c.get("mean") is None:
        return "-"
    return f"{c['mean']:.{digits}f}" + ("" if c.get("ci") is None else f" ± {c['ci']:.{digits}f}")


def conclusions(report: Mapping) -> list[str]:
    """One sentence per view and ranked metric (the best mean and the variants not separated from it by the paired
    interval), then the main comparison, the headroom reached, learning rates at a grid edge and gold against the
    proxy."""
    base = report["base"]["metrics"]
    budget = report["config"]["budget_gflops"]
    labels = {"equal_cost_final": f"at equal cost (the whole budget, {budget:g} GFLOPs)",
              "equal_seconds_final": "at equal training seconds (the shortest run's, this machine)",
              "admissible": "at each variant's best admissible point (chosen on val signals)"}
    head = report["headroom"]
    for fraction, gain in zip(head["fractions"], head["gains"], strict=True):
        labels[f"equal_reward_headroom_{fraction:g}"] = (f"at equal held-out reward, {fraction:g} of the headroom "
                                                         f"(+{gain:.3g} over the base; seeds that reached it)")
    lines = []
    for view, by_metric in report["rankings"].items():
        for metric, rank in by_metric.items():
            lines.append(_conclusion(labels[view], metric, rank, base))
    for view, comp in report["main_comparison"].items():
        where = labels[view]
        if comp.get("R@1") is None:
            lines.append(f"Main comparison {where}: needs an EasyTune variant and a chain method.")
            continue
        d = comp["R@1"]
        if d["ci"] is None:
            lines.append(f"Main comparison {where}: {comp['easytune']} - {comp['chain']} R@1 {d['mean']:+.4f} "
                         f"(fewer than 2 paired seeds: no interval).")
        else:
            lines.append(f"Main comparison {where}: {comp['easytune']} - {comp['chain']} R@1 {d['mean']:+.4f} ± "
                         f"{d['ci']:.4f} (paired over {d['n']} seeds; achieved half-width {d['ci']:.4f}); "
                         f"{'separated' if d['separated'] else 'not separated'} at 95%.")
    if head.get("headroom") is not None:
        lines.append(f"Headroom: real val motions' held-out reward {head['real_val_reward']:.3f}, base "
                     f"{head['base_val_reward']:.3f}, headroom {head['headroom']:.3f}.")
    for v, h in head["variants"].items():
        lines.append(f"{v} reaches {_cell(h['final'], 2)} of the headroom at the end of the budget "
                     f"({_cell(h['admissible'], 2)} at its admissible point).")
    for v, edge in report["lr_edges"].items():
        lines.append(f"{v}: the chosen learning rate ({report['variants'][v]['lr']:g}) is still at the {edge} edge of "
                     f"its extended grid ({', '.join(f'{x:g}' for x in report['variants'][v]['lr_selection']['grid'])}).")
    for v, by_metric in report["proxy_gold"].items():
        lines += [_proxy_line(v, pg) for pg in by_metric.values()]
    return lines


def _proxy_line(variant: str, pg: Mapping) -> str:
    m = pg["metric"]
    if pg["rho"] is None:
        return f"{variant}: {m} against the proxy has no rank correlation (constant or too few points)."
    ci = "" if pg["rho_ci"] is None else f" [{pg['rho_ci'][0]:.2f}, {pg['rho_ci'][1]:.2f}]"
    verdict = {"rises": f"{m} improves with the proxy", "falls": f"{m} worsens as the proxy rises",
               "neither": f"{m} does not follow the proxy (interval contains 0)",
               None: f"{m} against the proxy has no interval (fewer than 2 seeds)"}[pg["verdict"]]
    turn = (f"; best mean {m} at proxy fraction {pg['best_proxy']:.2f} (snapshot {pg['best_index']}), where it "
            f"turns" if pg["turns"] and pg["best_proxy"] is not None else
            f"; best mean {m} at the last snapshot" if pg["best_index"] is not None else "")
    return f"{variant}: {verdict} (Spearman {pg['rho']:.2f}{ci}, {pg['points']} points){turn}."


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
        verdict = "separated from every other variant (paired 95% intervals)"
    else:
        verdict = f"not separated at 95% (paired over seeds) from {', '.join(tied)}"
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
           "| variant | method | lr | grid (extensions) | val reward at admissible point per lr |",
           "|---|---|---|---|---|"]
    for v, rec in report["variants"].items():
        sel = rec["lr_selection"]
        cands = ", ".join(f"{c['lr']:g}: {c['val_reward']:.2f}" for c in sel["candidates"]) or "-"
        grid = ", ".join(f"{x:g}" for x in sel["grid"])
        if sel.get("extended"):
            grid += " (added " + ", ".join(f"{x:g}" for x in sel["extended"]) + ")"
        edge = f" **at {sel['at_edge']} edge**" if sel.get("at_edge") else ""
        out.append(f"| {v} | {rec['method']} | {rec['lr']:g}{edge} | {grid} | {cands} |")
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
    gain_rows = next(iter(views["equal_reward_gain"].values()), [])
    for gi, first in enumerate(gain_rows):
        what = (f"{first['fraction']:g} of the headroom (+{first['gain']:.3g})" if first.get("fraction") is not None
                else f"gain +{first['gain']:g}")
        out += ["", f"**At equal held-out reward, {what}** (interpolated between snapshots; seeds that reached "
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
    head = report.get("headroom") or {}
    if head.get("variants"):
        out += ["", f"**Headroom reached** (held-out reward gain / headroom; headroom = real val motions "
                f"{head['real_val_reward']:.3f} - base {head['base_val_reward']:.3f} = {head['headroom']:.3f})", "",
                "| variant | end of budget | admissible point |", "|---|---|---|"]
        for v, h in head["variants"].items():
            out.append(f"| {v} | {_cell(h['final'], 2)} | {_cell(h['admissible'], 2)} |")
    if report.get("proxy_gold"):
        metrics = list(next(iter(report["proxy_gold"].values())))
        out += ["", "**Gold against proxy** (Spearman rho of each test metric with the headroom fraction over every "
                "snapshot and seed, 95% seed-bootstrap interval; proxy fraction at the best mean gold)", "",
                "| variant | " + " | ".join(metrics) + " |", "|---" * (1 + len(metrics)) + "|"]
        for v, by_metric in report["proxy_gold"].items():
            cells = []
            for m in metrics:
                pg = by_metric[m]
                rho = "-" if pg["rho"] is None else f"{pg['rho']:.2f}"
                if pg["rho_ci"] is not None:
                    rho += f" [{pg['rho_ci'][0]:.2f}, {pg['rho_ci'][1]:.2f}]"
                best = "" if pg["best_proxy"] is None else f", best at {pg['best_proxy']:.2f}"
                cells.append(rho + best)
            out.append(f"| {v} | " + " | ".join(cells) + " |")
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
