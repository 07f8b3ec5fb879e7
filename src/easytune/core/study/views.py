"""The study's views of its runs: pure functions of numbers (numpy + scipy), no models.

A *run* is one variant trained with one seed: a list of snapshots, snapshot 0 being the base model (cost 0). Each
snapshot carries its cost (``cost_gflops``), training seconds (``train_s``), validation signals (``val_reward``,
``val_reward_fid``) and, once scored, test metrics (``metrics``: name -> value, the mean over the protocol's
replications, which regenerate the test set ``generation_replications`` times).

Every aggregate is a mean over training seeds with a 95% Student-t confidence interval (:func:`mean_ci`): the
interval covers training-seed variation and, through each seed's value, generation noise; it does not cover other
base models, reward models or datasets.

- :func:`at_equal_cost`: metrics at each snapshot point of the shared GFLOPs budget (view a, machine-independent);
- :func:`at_equal_seconds`: metrics interpolated at common training seconds (view a, this machine);
- :func:`at_equal_reward_gain`: metrics where the held-out reward first rises by +g over the base (view b);
- :func:`pareto_front`: non-dominated (R@1 up, FID down) snapshot means over every variant (view c);
- :func:`admissible_index`: the snapshot a validation rule picks, never reading test metrics (view d).
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
            row[name] = mean_ci([snapshot_value(r[j], name) for r in runs])
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
            row[name] = mean_ci([interpolate([snapshot_value(p, "train_s") for p in r],
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


def at_equal_reward_gain(runs: Sequence[Run], names: Sequence[str], gains: Sequence[float]) -> list[dict]:
    """Per gain g: in each run, the point where the held-out reward first reaches base + g (linear between the
    two snapshots around it) and every metric (and the cost) interpolated there; mean and CI over the runs that
    reach it (``reached`` of ``runs``)."""
    out = []
    for g in gains:
        row: dict = {"gain": float(g), "runs": len(runs)}
        values: dict[str, list] = {name: [] for name in ("cost_gflops", "train_s", *names)}
        reached = 0
        for r in runs:
            gain = [snapshot_value(p, "val_reward") - snapshot_value(r[0], "val_reward") for p in r]
            hit = first_crossing(gain, g)
            if hit is None:
                continue
            reached += 1
            j, w = hit
            for name in values:
                a, b = snapshot_value(r[j], name), snapshot_value(r[min(j + 1, len(r) - 1)], name)
                values[name].append(None if a is None or b is None else a + w * (b - a))
        row["reached"] = reached
        for name, v in values.items():
            row[name] = mean_ci(v)
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


def separated(a: Mapping, b: Mapping) -> bool:
    """True when the two {mean, ci} intervals do not overlap (a conservative check of a difference)."""
    if a.get("mean") is None or b.get("mean") is None or a.get("ci") is None or b.get("ci") is None:
        return False
    return abs(a["mean"] - b["mean"]) > a["ci"] + b["ci"]


def rank_variants(cells: Mapping[str, Mapping], higher_is_better: bool = True) -> dict:
    """The best variant by mean and the variants whose interval overlaps the best's (``tied_with``): a ranking
    claims no more than the intervals support."""
    present = {v: c for v, c in cells.items() if c.get("mean") is not None}
    if not present:
        return {"best": None, "tied_with": []}
    best = (max if higher_is_better else min)(present, key=lambda v: present[v]["mean"])
    tied = sorted(v for v, c in present.items() if v != best and not separated(present[best], c))
    return {"best": best, "mean": present[best]["mean"], "ci": present[best]["ci"], "tied_with": tied,
            "candidates": len(present)}
