"""The study's views of its runs: pure functions of numbers (numpy + scipy), no models.

A *run* is one variant trained with one seed: a list of snapshots, snapshot 0 being the base model (cost 0). Each
snapshot carries its cost (``cost_gflops``), training seconds (``train_s``), validation signals (``val_reward``,
``val_reward_fid``) and, once scored, test metrics (``metrics``: name -> value, the mean over the protocol's
replications, which regenerate the test set ``generation_replications`` times).

Every aggregate is a mean over training seeds with a 95% Student-t confidence interval (:func:`mean_ci`; the cells
of the views also keep the per-seed values, in the runs' seed order: :func:`cell`): the interval covers
training-seed variation and, through each seed's value, generation noise; it does not cover other base models,
reward models or datasets. Differences are paired by seed (:func:`paired`): the base is scored with each seed's noise
and captions, so variant - base and variant - variant differences are taken per seed and their mean gets the
Student-t interval of the per-seed differences; every "separated" statement uses that paired interval.

- :func:`at_equal_cost`: metrics at each snapshot point of the shared GFLOPs budget (view a, machine-independent);
- :func:`at_equal_seconds`: metrics interpolated at common training seconds (view a, this machine);
- :func:`at_equal_reward_gain`: metrics where the held-out reward first rises by +g over the base (view b);
- :func:`pareto_front`: non-dominated (R@1 up, FID down) snapshot means over every variant (view c);
- :func:`admissible_index`: the snapshot a validation rule picks, never reading test metrics (view d);
- :func:`headroom_fraction`, :func:`proxy_gold`: the held-out reward gain as a fraction of the headroom (real val
  motions' reward minus the base's) and how the test metrics (gold) follow it (Spearman with a seed bootstrap).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

Run = Sequence[Mapping]  # snapshots of one (variant, seed), index 0 = base model


def mean_ci(values: Sequence[float | None], level: float = 0.95) -> dict[str, float | int | None]:
    """``{"mean", "ci", "n"}``: mean of the non-null values and the half-width of the Student-t interval (``ci``
    None with fewer than 2 values)."""
    v = np.asarray([x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))], float)
    if len(v) == 0:
        return {"mean": None, "ci": None, "n": 0}
    if len(v) == 1:
        return {"mean": float(v[0]), "ci": None, "n": 1}
    half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return {"mean": float(v.mean()), "ci": float(half), "n": int(len(v))}


def cell(values: Sequence[float | None], level: float = 0.95) -> dict:
    """:func:`mean_ci` plus ``values``: the per-run values (None where a run has none), in the runs' order, so that
    differences can be paired by seed."""
    return {**mean_ci(values, level), "values": [None if v is None else float(v) for v in values]}


def paired(a: Mapping[int, float | None], b: Mapping[int, float | None], level: float = 0.95) -> dict:
    """The paired difference a - b over the seeds both have a value for (``{seed: value}`` each): ``{"mean", "ci",
    "n", "seeds", "diffs", "separated"}``, ``ci`` the Student-t half-width of the per-seed differences (None below 2
    seeds) and ``separated`` True when the interval excludes 0."""
    seeds = [s for s in a if s in b and a[s] is not None and b[s] is not None]
    diffs = [float(a[s]) - float(b[s]) for s in seeds]
    out = mean_ci(diffs, level)
    out["seeds"], out["diffs"] = seeds, diffs
    out["separated"] = out["ci"] is not None and abs(out["mean"]) > out["ci"]
    return out


def snapshot_value(snapshot: Mapping, name: str) -> float | None:
    """A test metric (``metrics[name]``) or a recorded field (cost, seconds, signals) of a snapshot."""
    metrics = snapshot.get("metrics") or {}
    value = metrics.get(name, snapshot.get(name))
    if isinstance(value, Mapping):  # {"mean", "ci"} cells of the evaluation protocol
        value = value.get("mean")
    return None if value is None else float(value)


def at_equal_cost(runs: Sequence[Run], names: Sequence[str]) -> list[dict]:
    """Per snapshot point (same index = same fraction of the same GFLOPs budget in every run): ``at`` and, for
    ``cost_gflops``, ``train_s``, ``updates`` and each of ``names``, the mean and CI over runs."""
    points = min(len(r) for r in runs)
    out = []
    for j in range(points):
        row: dict = {"index": j, "at": runs[0][j].get("at", 0.0)}
        for name in ("cost_gflops", "train_s", "updates", *names):
            row[name] = cell([snapshot_value(r[j], name) for r in runs])
        out.append(row)
    return out


def interpolate(xs: Sequence[float], ys: Sequence[float | None], x: float) -> float | None:
    """Linear interpolation of y at ``x`` on increasing ``xs``; None outside [xs[0], xs[-1]] or next to a null y."""
    xs = [float(v) for v in xs]
    if not xs or x < xs[0] - 1e-12 or x > xs[-1] + 1e-12:
        return None
    for j in range(len(xs) - 1):
        if xs[j] - 1e-12 <= x <= xs[j + 1] + 1e-12:
            if ys[j] is None or ys[j + 1] is None:
                return None
            if xs[j + 1] == xs[j]:
                return float(ys[j + 1])
            w = (x - xs[j]) / (xs[j + 1] - xs[j])
            return float(ys[j] + w * (ys[j + 1] - ys[j]))
    return None if ys[-1] is None else float(ys[-1])


def at_equal_seconds(runs: Sequence[Run], names: Sequence[str], seconds: Sequence[float]) -> list[dict]:
    """Per training-seconds point: each run's metrics interpolated between its snapshots (x = ``train_s``), then
    mean and CI over runs; a run that did not train that long is left out (``n`` says how many remain)."""
    out = []
    for s in seconds:
        row: dict = {"train_s": float(s)}
        for name in names:
            row[name] = cell([interpolate([snapshot_value(p, "train_s") for p in r],
                                          [snapshot_value(p, name) for p in r], s) for r in runs])
        out.append(row)
    return out


def first_crossing(xs: Sequence[float], target: float) -> tuple[int, float] | None:
    """(j, w): the first segment [j, j+1] where ``xs`` reaches ``target`` from below, and the fraction w in [0, 1]
    along it; (0, 0.0) when xs[0] already reaches it; None when it never does."""
    if xs[0] >= target:
        return 0, 0.0
    for j in range(len(xs) - 1):
        if xs[j] < target <= xs[j + 1]:
            return j, (target - xs[j]) / (xs[j + 1] - xs[j])
    return None


def at_equal_reward_gain(runs: Sequence[Run], names: Sequence[str], gains: Sequence[float],
                         fractions: Sequence[float | None] | None = None) -> list[dict]:
    """Per gain g: in each run, the point where the held-out reward first reaches base + g (linear between the
    two snapshots around it) and every metric (and the cost) interpolated there; mean and CI over the runs that
    reach it (``reached`` of ``runs``; the others' values are None). ``fractions``: the headroom fraction each gain
    stands for (recorded as ``fraction``)."""
    out = []
    for gi, g in enumerate(gains):
        row: dict = {"gain": float(g), "runs": len(runs)}
        if fractions is not None:
            row["fraction"] = fractions[gi]
        values: dict[str, list] = {name: [] for name in ("cost_gflops", "train_s", *names)}
        reached = 0
        for r in runs:
            gain = [snapshot_value(p, "val_reward") - snapshot_value(r[0], "val_reward") for p in r]
            hit = first_crossing(gain, g)
            if hit is None:
                for name in values:
                    values[name].append(None)
                continue
            reached += 1
            j, w = hit
            for name in values:
                a, b = snapshot_value(r[j], name), snapshot_value(r[min(j + 1, len(r) - 1)], name)
                values[name].append(None if a is None or b is None else a + w * (b - a))
        row["reached"] = reached
        for name, v in values.items():
            row[name] = cell(v)
        out.append(row)
    return out


def admissible_index(run: Run, guard: float) -> int:
    """The snapshot a validation rule picks: the highest ``val_reward`` among snapshots whose ``val_reward_fid`` is
    at most ``guard`` x the base's (snapshot 0, the base, is always admissible). Reads only val signals."""
    base_fid = snapshot_value(run[0], "val_reward_fid")
    best, best_reward = 0, snapshot_value(run[0], "val_reward")
    for j, p in enumerate(run):
        ok = snapshot_value(p, "val_reward_fid") <= guard * base_fid
        if j and ok and snapshot_value(p, "val_reward") > best_reward:
            best, best_reward = j, snapshot_value(p, "val_reward")
    return best


def pareto_front(points: Sequence[Mapping], x: str = "FID", y: str = "R@1") -> list[Mapping]:
    """The points not dominated by another (lower or equal ``x`` and higher or equal ``y``, one strictly), sorted by
    ``x``. Each point is a mapping with at least ``x`` and ``y`` (means)."""
    valid = [p for p in points if p.get(x) is not None and p.get(y) is not None]
    front = []
    for p in valid:
        dominated = any(q[x] <= p[x] and q[y] >= p[y] and (q[x] < p[x] or q[y] > p[y]) for q in valid)
        if not dominated:
            front.append(p)
    return sorted(front, key=lambda p: p[x])


def rank_variants(per_seed: Mapping[str, Mapping[int, float | None]], higher_is_better: bool = True) -> dict:
    """The best variant by its mean over seeds (``{variant: {seed: value}}``) and the variants not separated from it
    by the paired interval of the per-seed differences (``tied_with``; ``paired``: best - other per variant): a
    ranking claims no more than the paired intervals support."""
    means = {v: mean_ci(list(vals.values())) for v, vals in per_seed.items()}
    present = {v: m for v, m in means.items() if m["mean"] is not None}
    if not present:
        return {"best": None, "tied_with": []}
    best = (max if higher_is_better else min)(present, key=lambda v: present[v]["mean"])
    diffs = {v: paired(per_seed[best], per_seed[v]) for v in present if v != best}
    tied = sorted(v for v, d in diffs.items() if not d["separated"])
    return {"best": best, "mean": present[best]["mean"], "ci": present[best]["ci"], "tied_with": tied,
            "candidates": len(present), "paired": diffs}


def headroom_fraction(run: Run, headroom: float, j: int = -1) -> float | None:
    """(val_reward at snapshot j - the base's) / headroom; None when the headroom is not positive."""
    if not headroom > 0:
        return None
    return (snapshot_value(run[j], "val_reward") - snapshot_value(run[0], "val_reward")) / headroom


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties); None with < 3 points or a constant side."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(stats.spearmanr(x, y)[0])


def proxy_gold(runs: Sequence[Run], seeds: Sequence[int], headroom: float, metric: str, higher: bool = True,
               boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Gold (test ``metric``) against proxy (held-out val reward gain as a fraction of ``headroom``) over every
    snapshot (base included) of every run: Spearman rho over the pooled points with a bootstrap interval that
    resamples seeds (whole runs, ``boot`` times, fixed ``seed``); the mean curve over runs per snapshot index
    (``curve``: proxy mean, gold mean); ``rises``: gold improves with the proxy (rho's interval above 0 for a
    higher-is-better metric, below 0 otherwise), ``falls`` the opposite, else neither; ``best``: the snapshot index
    with the best mean gold and its proxy fraction (where the curve turns when it is not the last)."""
    points = [[(headroom_fraction(r, headroom, j), snapshot_value(p, metric)) for j, p in enumerate(r)]
              for r in runs]
    points = [[(x, y) for x, y in pts if x is not None and y is not None] for pts in points]
    pooled = [pt for pts in points for pt in pts]
    rho = spearman([x for x, _ in pooled], [y for _, y in pooled]) if pooled else None
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(boot if rho is not None and len(runs) >= 2 else 0):
        pick = [pt for k in rng.integers(0, len(runs), len(runs)) for pt in points[k]]
        value = spearman([x for x, _ in pick], [y for _, y in pick])
        if value is not None:
            samples.append(value)
    ci = [float(np.quantile(samples, (1 - level) / 2)), float(np.quantile(samples, (1 + level) / 2))] \
        if samples else None
    sign = 1 if higher else -1
    verdict = None if ci is None else "rises" if sign * ci[0] > 0 and sign * ci[1] > 0 else \
        "falls" if sign * ci[0] < 0 and sign * ci[1] < 0 else "neither"
    length = min(len(r) for r in runs)
    curve = []
    for j in range(length):
        xs = [headroom_fraction(r, headroom, j) for r in runs]
        ys = [snapshot_value(r[j], metric) for r in runs]
        curve.append({"index": j, "proxy": mean_ci(xs)["mean"], "gold": mean_ci(ys)["mean"]})
    valid = [c for c in curve if c["gold"] is not None]
    best = (max if higher else min)(valid, key=lambda c: c["gold"]) if valid else None
    return {"metric": metric, "higher_is_better": higher, "rho": rho, "rho_ci": ci, "boot": len(samples),
            "seeds": list(seeds), "points": len(pooled), "verdict": verdict, "curve": curve,
            "best_index": None if best is None else best["index"],
            "best_proxy": None if best is None else best["proxy"],
            "turns": best is not None and best["index"] != curve[-1]["index"]}
