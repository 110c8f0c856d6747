"""The study report: per trainer × checkpoint (× configuration), every metric over all folds' validation
cases as mean [CI], ranks, paired bootstrap tests against the baseline, and PNG plots — the MiniVess table,
generated. Statistics come from :mod:`nnunet_ext.evaluation.compare` (the same numbers as
``nnunet-ext compare``); its full report is written beside the study table.

Methods whose results are missing (a failed fold, a checkpoint not scored yet) are listed as such; the
others are compared on the cases they share.
"""
from __future__ import annotations

import csv
import glob
import json
import os
from typing import Dict, List, Sequence

__all__ = ["collect_validation_results", "collect_test_results", "study_table", "write_study_report", "method_name"]


def method_name(trainer: str, configuration: str, checkpoint: str, n_configurations: int) -> str:
    """``Recipe_dice_ce @ final`` (with the configuration when the study has several)."""
    return f"{trainer} {configuration} @ {checkpoint}" if n_configurations > 1 else f"{trainer} @ {checkpoint}"


def collect_validation_results(study, ctx, metrics: Sequence[str], num_processes: int = 1,
                               progress: bool = False) -> tuple[Dict[str, list], Dict[str, str]]:
    """Rows (:func:`nnunet_ext.evaluation.compare.read_metrics_csv`) of every method's cross-validation
    cases, only the study's folds; and ``{method: why it is missing}`` for the others."""
    from nnunet_ext.evaluation.compare import evaluate_nnunet_results
    from nnunet_ext.study.graph import fold_folder, model_folder

    results: Dict[str, list] = {}
    missing: Dict[str, str] = {}
    n_conf = len(study.configurations)
    for trainer, configuration in study.models:
        for checkpoint in study.checkpoints:
            name = method_name(trainer, configuration, checkpoint, n_conf)
            # checkpoint_final: the model's own folder; others: `nnunet-ext validate`'s checkpoint view
            # <trainer>@<checkpoint>__<plans>__<configuration>, a results folder of links
            shown = trainer if checkpoint == "final" else f"{trainer}@{checkpoint}"
            validation = "validation" if checkpoint == "final" else f"validation_checkpoint_{checkpoint}"
            absent = [f for f in study.folds if not os.path.isfile(
                os.path.join(fold_folder(ctx, trainer, study.plans, configuration, f), validation, "summary.json"))]
            if len(absent) == len(study.folds):
                missing[name] = ("no fold finished its validation" if checkpoint == "final" or ctx.validate_available
                                 else "not scored (needs `nnunet-ext validate`)")
                continue
            rows = evaluate_nnunet_results(model_folder(ctx, shown, study.plans, configuration),
                                           num_processes=num_processes, progress=progress, metrics=list(metrics))
            rows = [r for r in rows if str(r.get("fold")) in {str(f) for f in study.folds}]
            if absent:
                missing[name] = f"fold(s) {', '.join(map(str, absent))} missing (the others are used)"
            if rows:
                results[name] = rows
    return results, missing


def collect_test_results(study, ctx) -> Dict[str, list]:
    """Rows of every evaluated test-set prediction (models and ensembles)."""
    from nnunet_ext.evaluation.compare import read_metrics_csv

    results = {}
    for path in sorted(glob.glob(os.path.join(ctx.workdir, "test", "*", "evaluation", "metrics_per_case.csv"))):
        results[os.path.basename(os.path.dirname(os.path.dirname(path)))] = read_metrics_csv(path)
    return results


def _fmt(v: float) -> str:
    return f"{v:.4f}" if v == 0 or 1e-3 <= abs(v) < 1e5 else f"{v:.3e}"


def study_table(cmp: dict, baseline: str | None) -> Dict[str, List[dict]]:
    """Per class, one row per method: ``{"method", "n", "<metric>": {"mean", "ci_low", "ci_high"},
    "rank": mean rank, "vs_baseline": {metric: paired test or None}}``."""
    table = {}
    for c in cmp["classes"]:
        rows = []
        for m in cmp["methods"]:
            row = {"method": m, "n": cmp["n_cases"][c], "rank": cmp["mean_rank"][c][m], "vs_baseline": {}}
            for metric in cmp["metrics"]:
                s = cmp["summary"][c][metric][m]
                row[metric] = {"mean": s["mean"], "ci_low": s["ci_low"], "ci_high": s["ci_high"]}
                test = None
                if baseline is not None and m != baseline:
                    for t in cmp["paired"][c][metric]:
                        if {t["a"], t["b"]} == {m, baseline}:
                            sign = 1.0 if t["a"] == m else -1.0  # always method − baseline
                            lo, hi = sorted((sign * t["ci_low"], sign * t["ci_high"]))
                            test = {"diff": sign * t["mean_diff"], "ci_low": lo, "ci_high": hi,
                                    "p_value": t["p_value"], "better": t["better"]}
                row["vs_baseline"][metric] = test
            rows.append(row)
        table[c] = sorted(rows, key=lambda r: r["rank"])
    return table


def _markdown_table(table: Dict[str, List[dict]], cmp: dict, baseline: str | None, title: str) -> List[str]:
    from nnunet_ext.evaluation.case import METRICS

    pct = int(round(cmp["confidence"] * 100))
    lines = [f"## {title}", ""]
    for c, rows in table.items():
        lines += [f"### Class `{c}` ({rows[0]['n']} cases; mean [{pct} % bootstrap CI], rank 1 = best)", ""]
        header = ["method", *[f"{m} {'↑' if METRICS[m] else '↓'}" for m in cmp["metrics"]], "mean rank"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in rows:
            cells = [f"{_fmt(r[m]['mean'])} [{_fmt(r[m]['ci_low'])}, {_fmt(r[m]['ci_high'])}]" for m in cmp["metrics"]]
            lines.append("| " + " | ".join([r["method"] + (" (baseline)" if r["method"] == baseline else ""),
                                             *cells, f"{r['rank']:.2f}"]) + " |")
        lines.append("")
        if baseline is not None and len(rows) > 1:
            lines += [f"Paired bootstrap tests against `{baseline}` (difference method − baseline [{pct} % CI], p; "
                      "* = significant):", ""]
            lines += ["| method | " + " | ".join(cmp["metrics"]) + " |", "|" + "---|" * (len(cmp["metrics"]) + 1)]
            for r in rows:
                if r["method"] == baseline:
                    continue
                cells = []
                for m in cmp["metrics"]:
                    t = r["vs_baseline"][m]
                    star = "*" if t["better"] else ""
                    p = f"< {2 / cmp['bootstrap_resamples']:.2g}" if t["p_value"] == 0 else f"{t['p_value']:.3f}"
                    cells.append(f"{t['diff']:+.4f} [{t['ci_low']:+.4f}, {t['ci_high']:+.4f}] p {p}{star}")
                lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
            lines.append("")
    return lines


def _compare_block(results, study, out: str, name: str, baseline: str | None) -> tuple[List[str], dict | None]:
    from nnunet_ext.evaluation.compare import compare_results, plot_comparison, render_markdown

    if not results:
        return [], None
    opts = study.report
    cmp = compare_results(results, metrics=opts["metrics"], confidence=opts["confidence"],
                          n_resamples=opts["bootstrap"], seed=opts["seed"])
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    plots = plot_comparison(results, cmp, folder) if opts["plots"] else {}
    with open(os.path.join(folder, "report.md"), "w") as f:
        f.write(render_markdown(cmp, None, plots))
    with open(os.path.join(folder, "comparison.json"), "w") as f:
        json.dump(cmp, f, indent=2)
    baseline = baseline if baseline in cmp["methods"] else None
    table = study_table(cmp, baseline)
    lines = _markdown_table(table, cmp, baseline, "Cross-validation (all folds' validation cases)"
                            if name == "validation" else "Test set")
    lines += [f"Full comparison (worst cases, size terciles, all pairs): [{name}/report.md]({name}/report.md)", ""]
    for c, files in plots.items():
        lines += [f"![{f}]({name}/{f})" for f in files] + [""]
    return lines, {"table": table, "comparison": f"{name}/comparison.json"}


def write_study_report(study, ctx, statuses: dict, num_processes: int = 1) -> str:
    """Write ``<workdir>/report/report.md`` (+ ``study_report.json``, ``study_table.csv`` and the plots);
    returns the path of ``report.md``."""
    from nnunet_ext.study.budget import budget_suffix
    from nnunet_ext.study.state import STATUS_ORDER

    out = os.path.join(ctx.workdir, "report")
    os.makedirs(out, exist_ok=True)
    validation, missing = collect_validation_results(study, ctx, study.report["metrics"], num_processes)
    n_conf = len(study.configurations)
    baseline_trainer = study.report["baseline"]
    baseline = method_name(baseline_trainer, study.configurations[0], study.checkpoints[0], n_conf)
    lines = [f"# Study `{study.name}`", ""]
    if study.description:
        lines += [study.description, ""]
    counts = {s: sum(1 for v in statuses.values() if v.status == s) for s in STATUS_ORDER}
    lines += [f"Dataset {ctx.dataset_name}, configurations {', '.join(study.configurations)}, folds "
              f"{', '.join(map(str, study.folds))}, {len(study.trainers)} trainer(s), checkpoints "
              f"{', '.join(study.checkpoints)}" + (f"; smoke budget {budget_suffix(study.budget)}" if study.budget else "") + ".", "",
              "Jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n), ""]
    failed = [s for s in statuses.values() if s.status in ("failed", "blocked")]
    if failed:
        lines += ["| job | state | log / reason |", "|---|---|---|"]
        lines += [f"| {s.job.id} | {s.status} | {s.log if s.status == 'failed' else s.detail} |" for s in failed]
        lines.append("")
    if missing:
        lines += ["Missing results:", ""] + [f"- {m}: {why}" for m, why in missing.items()] + [""]
    summary: dict = {"study": study.name, "dataset": ctx.dataset_name, "missing": missing}
    block, data = _compare_block(validation, study, out, "validation", baseline)
    lines += block or ["No cross-validation results yet.", ""]
    summary["validation"] = data
    test = collect_test_results(study, ctx)
    test_baseline = f"{baseline_trainer}__{study.configurations[0]}"
    block, data = _compare_block(test, study, out, "test", test_baseline)
    lines += block
    summary["test"] = data
    with open(os.path.join(out, "study_report.json"), "w") as f:
        json.dump(summary, f, indent=2)
    if summary["validation"]:
        with open(os.path.join(out, "study_table.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["class", "method", "n", *[f"{m}_{k}" for m in study.report["metrics"]
                                                       for k in ("mean", "ci_low", "ci_high")], "mean_rank"])
            for c, rows in summary["validation"]["table"].items():
                for r in rows:
                    writer.writerow([c, r["method"], r["n"], *[r[m][k] for m in study.report["metrics"]
                                                               for k in ("mean", "ci_low", "ci_high")], r["rank"]])
    path = os.path.join(out, "report.md")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines))
    os.replace(tmp, path)
    return path
