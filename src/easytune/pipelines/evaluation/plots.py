"""Bar charts of the evaluation metrics with their confidence intervals (matplotlib, Agg backend)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from easytune.core.evaluation.protocol import METRIC_NAMES  # noqa: E402


def metric_bars(metrics: dict[str, dict[str, dict]], metric_names=METRIC_NAMES, columns: int = 4):
    """One panel per metric, one bar per model (mean) with a 95% CI error bar; undefined values are left out."""
    rows = -(-len(metric_names) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    models = list(metrics)
    for ax, name in zip(axes.flat, metric_names, strict=False):
        cells = [metrics[m].get(name) or {} for m in models]
        pos = [i for i, c in enumerate(cells) if c.get("mean") is not None]
        ax.bar(pos, [cells[i]["mean"] for i in pos], yerr=[cells[i]["ci"] for i in pos], capsize=3,
               color=[f"C{i % 10}" for i in pos])
        ax.set_xticks(range(len(models)), models, rotation=45, ha="right", fontsize=7)
        ax.set_title(name, fontsize=9)
    for ax in list(axes.flat)[len(metric_names):]:
        ax.axis("off")
    fig.tight_layout()
    return fig
