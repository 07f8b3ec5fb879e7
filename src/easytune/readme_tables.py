"""Render the README's results tables from the pipelines' JSON reports (never typed by hand).

    python -m easytune.readme_tables --reports docs/results/bandai --name bandai [--readme README.md]
    python -m easytune.readme_tables --reports docs/results/bandai --name bandai_study --part study

reads ``{pretrain,reward,finetune}_report.json`` (or, without a pretrain report, ``consistency_model_training.json``),
``evaluation_metrics.json`` and ``mlcm_speed.json`` (the output of ``benchmarks/mlcm_speed.py --json``) from
``--reports`` (each optional) and replaces the README block between
``<!-- results:<name>:begin -->`` and ``<!-- results:<name>:end -->``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from easytune.core.evaluation.protocol import results_table_markdown


def _load(folder: Path, name: str) -> dict | None:
    path = folder / name
    return json.loads(path.read_text()) if path.exists() else None


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def pretrain_table(report: dict) -> str:
    lines = ["| model | params | steps | train loss | val loss | wall (s) | VAE test MPJPE, root-aligned (m) | "
             "VAE test MPJPE, global (m) |", "|---" * 8 + "|"]
    for model in ("motion_vae", "latent_denoiser", "frame_denoiser", "consistency_model"):
        row = report.get(model)
        if row:
            lines.append(f"| {model} | {row['params']:,} | {row['steps']} | {_fmt(row['train_loss'])} | "
                         f"{_fmt(row['val_loss'])} | {_fmt(row['wall_s'], 1)} | {_fmt(row.get('vae_mpjpe_m'), 4)} | "
                         f"{_fmt(row.get('vae_global_mpjpe_m'), 4)} |")
    return "\n".join(lines) + "\n"


def _ratio(value) -> str:
    """failures / successes as '0.047 (1:21)'."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if value == float("inf"):
        return "inf"
    return f"{value:.3f} (1:{1 / value:.0f})"


def calibration_table(calibration: dict) -> str:
    """The calibration grid: failure ratio on train per pool size (rows) and k (columns); the choice in bold."""
    grid = calibration.get("grid") or []
    ks = sorted({row["k"] for row in grid})
    pools = sorted({(row["pool_size"], row["whole_split"]) for row in grid})
    cells = {(row["pool_size"], row["k"]): row for row in grid}
    lines = ["| pool size | " + " | ".join(f"k = {k}" for k in ks) + " |", "|---" * (len(ks) + 1) + "|"]
    for size, whole in pools:
        row = []
        for k in ks:
            cell = cells.get((size, k))
            text = "-" if cell is None else (f"{cell['failure_ratio']:.4f}" if cell["failure_ratio"] != float("inf")
                                             else "inf")
            row.append(f"**{text}**" if cell and cell.get("chosen") else text)
        label = f"{size:,} (whole split)" if whole else f"{size:,}"
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def reward_table(report: dict) -> str:
    """Reward part of a results block: calibration, mined pairs, the three-way comparison and what it supports."""
    if "comparison" not in report:  # reports written before the three-way comparison
        return _reward_table_before_after(report)
    parts = []
    cal = report["calibration"]
    choice = cal["choice"]
    pool = "the whole split" if choice["whole_split"] else f"pools of {choice['pool_size']:,}"
    parts.append(f"SPL calibration on the train split ({cal['train_samples']:,} samples, pre-SPL model, failures / "
                 f"successes, target {_ratio(choice['target_ratio'])}): {pool}, k = {choice['k']}, measured "
                 f"{_ratio(choice['failure_ratio'])}; verdict: {cal['verdict']}.\n")
    parts.append(calibration_table(cal))
    mined = report.get("mined_pairs")
    if mined:
        parts.append(f"Mined pairs per SPL iteration (primary seed, online, {mined['iterations']} iterations): mean "
                     f"{mined['mean']:.2f}, min {mined['min']}, max {mined['max']}, {mined['iterations_with_pairs']} "
                     f"iterations with pairs, {mined['total']} in all (failure ratio over the mined queries "
                     f"{_ratio(mined.get('failure_ratio'))}).\n")
    else:
        parts.append("SPL was not run (inapplicable): `reward_model` is the pre-SPL retrieval model.\n")
    comparison = report["comparison"]
    arms = [arm for arm in ("before", "control", "after") if arm in comparison["arms"]]
    metrics = ("R@1", "R@2", "R@3", "R@5", "R@10", "MedR")
    parts.append(f"Test split, mean ± 95% CI over {comparison['training_seeds']} training seeds "
                 f"(model seeds {', '.join(str(s) for s in comparison['model_seeds'])}; the catalog keeps seed "
                 f"{comparison['primary_seed']}); every model chosen on val:\n")
    lines = ["| protocol | direction | model | " + " | ".join(metrics) + " |", "|---" * (3 + len(metrics)) + "|"]
    for protocol in ("batch32", "full", "batch32_noised"):
        for direction in ("t2m", "m2t"):
            for arm in arms:
                cells = comparison["arms"][arm].get(protocol, {}).get(direction)
                if cells:
                    row = " | ".join(f"{cells[m]['mean']:.3f} ± {cells[m]['ci']:.3f}" for m in metrics if m in cells)
                    lines.append(f"| {protocol} | {direction} | {comparison['arm_names'][arm]} | {row} |")
    parts.append("\n".join(lines) + "\n")
    supported = comparison.get("supported") or []
    tests = sum(len(ms) for block in comparison.get("differences", {}).values() for dirs in block.values()
                for ms in dirs.values())
    parts.append(f"Differences the CIs support (paired over seeds, CI excluding 0; {len(supported)} of {tests} "
                 f"differences tested, uncorrected for multiple comparisons, so about {tests / 20:.1f} are expected "
                 "by chance alone): " + ("; ".join(supported) if supported else "none") + ".\n")
    parts.append(f"Reward sanity (`reward_model`, test): R(gt) > R(other label) "
                 f"{_fmt(report.get('sanity_gt_beats_other_label'))}, with the empty caption "
                 f"{_fmt(report.get('sanity_empty_caption_gt_beats_other'))}.\n")
    return "\n".join(parts)


def _reward_table_before_after(report: dict) -> str:
    metrics = ("R@1", "R@2", "R@3", "R@5", "R@10", "MedR")
    lines = ["| protocol | direction | model | " + " | ".join(metrics) + " |", "|---" * (3 + len(metrics)) + "|"]
    for protocol in ("batch32", "full", "batch32_noised"):
        for direction in ("t2m", "m2t"):
            for stage, label in (("before", "before SPL"), ("after", "after SPL")):
                cells = (report.get(stage) or {}).get(protocol, {}).get(direction)
                if not cells:
                    continue
                row = " | ".join(f"{cells[m]['mean']:.3f} ± {cells[m]['ci']:.3f}" for m in metrics if m in cells)
                lines.append(f"| {protocol} | {direction} | {label} | {row} |")
    extra = (f"\nMined pairs: {report.get('pairs')} (k = {report.get('k')}, failure ratio "
             f"{_fmt(report.get('failure_ratio'), 4)}); reward sanity R(gt) > R(other label): "
             f"{_fmt(report.get('sanity_gt_beats_other_label'))}, with the empty caption "
             f"{_fmt(report.get('sanity_empty_caption_gt_beats_other'))}.\n")
    return "\n".join(lines) + "\n" + extra


def finetune_table(report: dict) -> str:
    cols = ("updates", "wall_s", "s_per_update", "initial_val", "final_val", "best_val", "peak_saved_bytes")
    lines = ["| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for method, row in report.items():
        if isinstance(row, dict):
            lines.append(f"| {method} | " + " | ".join(_fmt(row.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


#: MotionLCM entries of the evaluation and their sampler in the speed benchmark
MLCM_ROWS = (("base_mld", "mld", None), ("base_mlcm_1s", "mlcm", 1), ("base_mlcm", "mlcm", 4))


def mlcm_table(metrics: dict, speed: dict) -> str:
    """MotionLCM against its teacher: denoiser calls and milliseconds per motion (benchmark) next to the evaluator's
    R@1 (mean ± CI), its ratio to the MLD's, and FID."""
    gen = {(r["model"], r["num_steps"] if r["model"] == "mlcm" else None): r for r in speed.get("generation", [])}
    teacher = metrics.get("base_mld", {}).get("R@1", {}).get("mean")
    lines = [f"| model | steps | denoiser calls per motion | ms per motion ({speed.get('device', '?')}, "
             f"{speed.get('threads', '?')} thread(s), batch {speed.get('batch_size', '?')}) | R@1 ↑ | R@1 / MLD's | "
             "FID ↓ |", "|---" * 7 + "|"]
    for name, model, steps in MLCM_ROWS:
        if name not in metrics:
            continue
        row = gen.get((model, steps), {})
        r1, fid = metrics[name].get("R@1", {}), metrics[name].get("FID", {})
        ratio = "-" if not teacher or r1.get("mean") is None else f"{r1['mean'] / teacher:.2f}"
        lines.append(f"| {name} | {row.get('num_steps', '-')} | {_fmt(row.get('denoiser_calls_per_motion'), 0)} | "
                     f"{_fmt(None if not row else 1000 * row['s_per_motion'], 1)} | "
                     f"{r1['mean']:.3f} ± {r1['ci']:.3f} | {ratio} | {_fmt(fid.get('mean'))} |")
    return "\n".join(lines) + "\n"


def render_study(folder: Path) -> str:
    """The method study's tables and conclusions from ``study_report.json`` (finetune_study pipeline)."""
    from easytune.core.study.report import markdown_tables

    report = _load(folder, "study_report.json")
    if not report:
        raise SystemExit(f"{folder}: no study_report.json found")
    return markdown_tables(report)


def render(folder: Path) -> str:
    parts = []
    if (report := _load(folder, "pretrain_report.json")):
        parts += ["**Base generators** (`pretrain_report.json`)\n", pretrain_table(report)]
    elif (report := _load(folder, "consistency_model_training.json")):  # the MotionLCM node's summary alone
        parts += ["**MotionLCM distillation** (`consistency_model_training.json`)\n",
                  pretrain_table({"consistency_model": report})]
    if (report := _load(folder, "reward_report.json")):
        parts += ["**Reward model: SPL calibration, before SPL / same steps without SPL / after SPL** "
                  "(`reward_report.json`)\n", reward_table(report)]
    if (report := _load(folder, "finetune_report.json")):
        parts += ["**Fine-tuning** (`finetune_report.json`; val = mean reward on held-out captions)\n",
                  finetune_table(report)]
    if (metrics := _load(folder, "evaluation_metrics.json")):
        parts += ["**Independent evaluator, test split** (`evaluation_metrics.json`, mean ± 1.96·std/√R)\n",
                  results_table_markdown(metrics)]
        if (speed := _load(folder, "mlcm_speed.json")) and any(name in metrics for name, _, _ in MLCM_ROWS[1:]):
            parts += ["**MotionLCM against its MLD teacher** (`evaluation_metrics.json`, `mlcm_speed.json`)\n",
                      mlcm_table(metrics, speed)]
    if not parts:
        raise SystemExit(f"{folder}: no report JSON found")
    return "\n".join(parts)


def replace_block(readme: str, name: str, body: str) -> str:
    begin, end = f"<!-- results:{name}:begin -->", f"<!-- results:{name}:end -->"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(readme):
        raise SystemExit(f"README has no block {begin} ... {end}")
    return pattern.sub(lambda _: f"{begin}\n{body}\n{end}", readme)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--part", choices=("results", "study"), default="results",
                        help="results: the pipelines' reports; study: study_report.json of finetune_study")
    args = parser.parse_args(argv)
    body = render_study(args.reports) if args.part == "study" else render(args.reports)
    args.readme.write_text(replace_block(args.readme.read_text(), args.name, body))
    print(f"updated {args.readme} block {args.name!r} from {args.reports}")


if __name__ == "__main__":
    main()
