"""Figures of the study report (matplotlib, Agg backend): Pareto front, metrics against cost, metrics at equal
held-out reward gain. Error bars are the report's 95% CIs over training seeds."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _color(i: int) -> str:
    return f"C{i % 10}"


def pareto_figure(report: dict):
    """Evaluator R@1 against FID: one curve per variant through its snapshots (base first), the front marked."""
    fig, ax = plt.subplots(figsize=(7.5, 5))
    base = report["base"]["metrics"]
    for i, (variant, rows) in enumerate(report["views"]["equal_cost"].items()):
        xs = [r["FID"]["mean"] for r in rows]
        ys = [r["R@1"]["mean"] for r in rows]
        ax.errorbar(xs[1:], ys[1:], xerr=[r["FID"]["ci"] or 0 for r in rows[1:]],
                    yerr=[r["R@1"]["ci"] or 0 for r in rows[1:]], fmt="o-", color=_color(i), ms=4, lw=1,
                    capsize=2, label=variant, alpha=0.85)
        ax.plot(xs[:2], ys[:2], ":", color=_color(i), lw=1)
    ax.plot([base["FID"]["mean"]], [base["R@1"]["mean"]], "k*", ms=12, label="base")
    front = report["views"]["pareto"]["front"]
    ax.plot([p["FID"] for p in front], [p["R@1"] for p in front], "k--", lw=1, label="Pareto front")
    ax.set(xlabel="FID (test, evaluator) ↓", ylabel="R@1 (test, evaluator) ↑",
           title="Alignment against quality along training (mean ± 95% CI over seeds)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def cost_figure(report: dict):
    """Held-out reward, R@1 and FID against cost (GFLOPs), one line per variant with a CI band."""
    names = [("val_reward", "held-out reward (val) ↑"), ("R@1", "R@1 (test) ↑"), ("FID", "FID (test) ↓")]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.8))
    for ax, (name, label) in zip(axes, names, strict=True):
        for i, (variant, rows) in enumerate(report["views"]["equal_cost"].items()):
            x = [r["cost_gflops"]["mean"] for r in rows]
            y = [r[name]["mean"] for r in rows]
            ci = [r[name]["ci"] or 0.0 for r in rows]
            ax.plot(x, y, "o-", color=_color(i), ms=3, lw=1, label=variant)
            ax.fill_between(x, [a - c for a, c in zip(y, ci, strict=True)], [a + c for a, c in zip(y, ci, strict=True)],
                            color=_color(i), alpha=0.12)
        ax.set(xlabel="cost (forward + backward GFLOPs)", title=label)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def gain_figure(report: dict):
    """R@1 and FID at equal held-out reward (fractions of the headroom): one marker per variant and target (seeds
    that reached it)."""
    names = [("R@1", "R@1 (test) ↑"), ("FID", "FID (test) ↓")]
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 3.8))
    variants = list(report["views"]["equal_reward_gain"])
    fractions = report["headroom"]["fractions"]
    width = 0.8 / max(len(variants), 1)
    for ax, (name, label) in zip(axes, names, strict=True):
        for i, variant in enumerate(variants):
            rows = report["views"]["equal_reward_gain"][variant]
            xs = [f + (i - len(variants) / 2) * width * 0.05 for f in fractions]
            ys = [r[name]["mean"] for r in rows]
            keep = [k for k, v in enumerate(ys) if v is not None]
            ax.errorbar([xs[k] for k in keep], [ys[k] for k in keep], yerr=[rows[k][name]["ci"] or 0 for k in keep],
                        fmt="o", color=_color(i), capsize=2, label=variant)
        ax.axhline(report["base"]["metrics"][name]["mean"], color="k", ls=":", lw=1, label="base")
        ax.set(xlabel="held-out reward gain over the base, fraction of the headroom (val)", title=label,
               xticks=fractions)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def proxy_figure(report: dict):
    """Gold (test metrics) against the proxy (held-out reward gain as a fraction of the headroom): one curve per
    variant through its snapshot means (base first), Spearman rho and its seed-bootstrap interval in the legend."""
    metrics = [m for m in ("R@1", "content_accuracy", "FID")
               if any(m in by_metric for by_metric in report["proxy_gold"].values())]
    fig, axes = plt.subplots(1, max(len(metrics), 1), figsize=(5 * max(len(metrics), 1), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=False):
        for i, (variant, by_metric) in enumerate(report["proxy_gold"].items()):
            pg = by_metric[metric]
            pts = [(c["proxy"], c["gold"]) for c in pg["curve"] if c["proxy"] is not None and c["gold"] is not None]
            rho = "" if pg["rho"] is None else f" ρ {pg['rho']:.2f}"
            if pg["rho_ci"] is not None:
                rho += f" [{pg['rho_ci'][0]:.2f}, {pg['rho_ci'][1]:.2f}]"
            ax.plot([x for x, _ in pts], [y for _, y in pts], "o-", color=_color(i), ms=3, lw=1,
                    label=variant + rho)
            if pg["best_proxy"] is not None:
                best = pg["curve"][pg["best_index"]]
                ax.plot([best["proxy"]], [best["gold"]], "s", color=_color(i), ms=7, mfc="none")
        arrow = "↑" if metric != "FID" else "↓"
        ax.set(xlabel="proxy: held-out reward gain / headroom (val)", title=f"{metric} (test) {arrow}")
        ax.legend(fontsize=6)
    if not metrics:
        axes[0][0].text(0.5, 0.5, "no positive headroom: no proxy", ha="center")
    fig.suptitle("Gold against proxy (snapshot means over seeds; square: best mean gold)", fontsize=9)
    fig.tight_layout()
    return fig
