"""Compare evaluation results of several methods (trainers) on the same cases.

Input per method: the rows of a ``metrics_per_case.csv`` written by
:func:`nnunet_ext.evaluation.folder.evaluate_folders`, or an nnU-Net results folder
``<Trainer>__<Plans>__<configuration>`` whose ``fold_*/validation`` folders are evaluated against
the dataset's ``gt_segmentations``. Output: a Markdown report (tables of mean ± std with bootstrap
CIs, rankings, paired bootstrap tests, worst cases, reference-size terciles), the numbers as JSON,
and PNG plots.

Only (case, class) pairs present in every method are compared, so that all statistics are paired;
the report says how many rows of each method were left out.
"""
from __future__ import annotations

import csv
import glob
import json
import math
import os
import re
from typing import Dict, List, Optional, Sequence

import numpy as np

from ._common import STATUSES
from .case import METRICS as _CASE_METRICS
from .challenges import CHALLENGE_METRICS

#: every per-case column compare knows (metric -> True if higher is better)
METRICS = {**_CASE_METRICS, **CHALLENGE_METRICS}
from .stats import BOOTSTRAP_METHOD, paired_bootstrap, summarize

_KEY_COLUMNS = ("case", "class")
_TEXT_COLUMNS = ("case", "class", "labels", "status", "fold")
_TERCILE_NAMES = ("small", "medium", "large")

Rows = List[Dict[str, object]]


# --- loading ---------------------------------------------------------------------------------

def read_metrics_csv(path: str) -> Rows:
    """Read a ``metrics_per_case.csv`` and check it.

    Returns one dict per row with ``case``, ``class`` (and ``status``, ``labels``, ``fold`` when
    present) as text and every known metric column (:data:`METRICS`) as float. Unknown columns
    are ignored.

    Raises
    ------
    FileNotFoundError, ValueError
        Naming the file, and the row and column of a bad value.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"metrics file not found: {path}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in _KEY_COLUMNS if c not in header]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; found {header}")
        metrics = [c for c in header if c in METRICS]
        if not metrics:
            raise ValueError(f"{path}: no metric column; expected some of {sorted(METRICS)}")
        rows: Rows = []
        seen = set()
        for line, raw in enumerate(reader, start=2):
            row: Dict[str, object] = {c: raw[c] for c in _TEXT_COLUMNS if c in raw}
            if not row["case"] or not row["class"]:
                raise ValueError(f"{path}, line {line}: empty case or class")
            key = (row["case"], row["class"])
            if key in seen:
                raise ValueError(f"{path}, line {line}: case {key[0]!r} class {key[1]!r} appears "
                                 "twice")
            seen.add(key)
            if "status" in row and row["status"] not in STATUSES:
                raise ValueError(f"{path}, line {line}: status {row['status']!r} is not one of "
                                 f"{STATUSES}")
            for m in metrics:
                try:
                    v = float(raw[m])
                except (TypeError, ValueError):
                    raise ValueError(f"{path}, line {line}, column {m!r}: {raw[m]!r} is not a "
                                     "number") from None
                if not math.isfinite(v):
                    raise ValueError(f"{path}, line {line}, column {m!r}: value {raw[m]!r} is "
                                     "not finite")
                row[m] = v
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no data rows")
    return rows


def is_nnunet_results_folder(path: str) -> bool:
    """True if ``path`` looks like ``<Trainer>__<Plans>__<configuration>`` with fold folders."""
    return (os.path.isdir(path) and os.path.basename(os.path.normpath(path)).count("__") >= 2
            and bool(glob.glob(os.path.join(path, "fold_*", "validation"))))


def _fold_sort_key(folder: str):
    tail = os.path.basename(folder)[len("fold_"):]
    return (0, int(tail), tail) if tail.isdigit() else (1, 0, tail)


def evaluate_nnunet_results(
    results_folder: str,
    gt_folder: Optional[str] = None,
    recompute: bool = False,
    num_processes: int = 1,
    progress: bool = True,
    **evaluate_kwargs,
) -> Rows:
    """Per-case metrics of every ``fold_*/validation`` folder of an nnU-Net results folder.

    Parameters
    ----------
    results_folder : str
        ``$nnUNet_results/<Dataset>/<Trainer>__<Plans>__<configuration>``; its ``dataset.json``
        gives the classes, ignore label and file ending.
    gt_folder : str, optional
        Reference segmentations; default ``$nnUNet_preprocessed/<Dataset>/gt_segmentations``
        with ``<Dataset>`` the name of the results folder's parent.
    recompute : bool
        Evaluate again even if a fold's ``validation/metrics_per_case.csv`` exists (otherwise it
        is reused).
    num_processes, progress, evaluate_kwargs
        Passed to :func:`nnunet_ext.evaluation.folder.evaluate_folders` (through
        :func:`evaluate_nnunet_results_many` of this one folder).

    Returns
    -------
    Rows of all folds together, with a ``fold`` entry.
    """
    return evaluate_nnunet_results_many([results_folder], gt_folder, recompute=recompute,
                                        num_processes=num_processes, progress=progress, **evaluate_kwargs)[0]


def evaluate_nnunet_results_many(
    results_folders: Sequence[str],
    gt_folder: Optional[str] = None,
    recompute: bool = False,
    num_processes: int = 1,
    progress: bool = True,
    **evaluate_kwargs,
) -> List[Rows]:
    """:func:`evaluate_nnunet_results` of several results folders (trainers) at once: the
    ``fold_X/validation`` folders of all of them that need evaluating and share the reference
    folder and the dataset's labels are evaluated together
    (:func:`~nnunet_ext.evaluation.folder.evaluate_folders_many`), so each reference case is read,
    and its skeleton, border k-d tree, components and Betti numbers are computed, once for all
    trainers. Every fold's ``metrics_per_case.csv`` is identical to what
    :func:`evaluate_nnunet_results` writes.

    Returns
    -------
    list of Rows, one per results folder (all folds, with a ``fold`` entry).
    """
    from .folder import evaluate_folders_many, load_dataset_json, reference_folder_of_results

    groups: Dict[tuple, List[tuple]] = {}
    listed = []
    for folder in results_folders:
        folder = os.path.normpath(folder)
        dj = os.path.join(folder, "dataset.json")
        if not os.path.isfile(dj):
            raise FileNotFoundError(f"nnU-Net results folder {folder} has no dataset.json")
        folds = sorted(glob.glob(os.path.join(folder, "fold_*", "validation")),
                       key=lambda p: _fold_sort_key(os.path.dirname(p)))
        if not folds:
            raise FileNotFoundError(f"no fold_*/validation folder in {folder}")
        gt = os.path.normpath(reference_folder_of_results(folder, gt_folder))
        # folders are evaluated together only when they read the same references with the
        # same classes, ignore label and file ending
        labels = json.dumps({k: load_dataset_json(dj).get(k) for k in
                             ("labels", "regions_class_order", "file_ending")}, sort_keys=True)
        for val in folds:
            if recompute or not os.path.isfile(os.path.join(val, "metrics_per_case.csv")):
                groups.setdefault((gt, labels), []).append((val, dj))
        listed.append(folds)
    for (gt, _), members in groups.items():
        vals = [v for v, _ in members]
        evaluate_folders_many(vals, gt, members[0][1], output_folders=vals,
                              num_processes=num_processes, progress=progress,
                              only_predicted=True, overwrite=True, **evaluate_kwargs)
    out: List[Rows] = []
    for folds in listed:
        rows: Rows = []
        for val in folds:
            fold = os.path.basename(os.path.dirname(val))[len("fold_"):]
            for r in read_metrics_csv(os.path.join(val, "metrics_per_case.csv")):
                r["fold"] = fold
                rows.append(r)
        out.append(rows)
    return out


def load_result(path: str, **kwargs) -> Rows:
    """Rows of one result: a CSV file, a folder holding ``metrics_per_case.csv``, or an nnU-Net
    results folder (see :func:`evaluate_nnunet_results`, which receives ``kwargs``)."""
    if os.path.isfile(path):
        return read_metrics_csv(path)
    if os.path.isfile(os.path.join(path, "metrics_per_case.csv")):
        return read_metrics_csv(os.path.join(path, "metrics_per_case.csv"))
    if is_nnunet_results_folder(path):
        return evaluate_nnunet_results(path, **kwargs)
    raise FileNotFoundError(f"{path} is neither a metrics_per_case.csv, a folder holding one, nor "
                            "an nnU-Net results folder (<Trainer>__<Plans>__<config>/fold_*/"
                            "validation)")


def result_names(paths: Sequence[str]) -> List[str]:
    """Short unique display names: the last path component, extended by parent folders until
    the names differ (``metrics_per_case.csv`` itself is never used as a name).

    Examples
    --------
    >>> result_names(["runs/A/fold_0/validation", "runs/B/fold_0/validation"])
    ['A/fold_0/validation', 'B/fold_0/validation']
    """
    parts = []
    for p in paths:
        comps = [c for c in os.path.normpath(os.path.abspath(p)).split(os.sep) if c]
        if comps and comps[-1] == "metrics_per_case.csv":
            comps = comps[:-1]
        parts.append(comps)
    depth = 1
    while True:
        names = ["/".join(c[-depth:]) for c in parts]
        if len(set(names)) == len(names) or depth >= max(len(c) for c in parts):
            break
        depth += 1
    if len(set(names)) != len(names):
        raise ValueError(f"results must be distinct paths, got {list(paths)}")
    return names


# --- statistics --------------------------------------------------------------------------------

def _common_metrics(results: Dict[str, Rows], metrics: Optional[Sequence[str]]) -> List[str]:
    have = None
    for rows in results.values():
        cols = {k for k in rows[0] if k in METRICS}
        have = cols if have is None else have & cols
    if metrics is None:
        names = [m for m in METRICS if m in have and not m.startswith(("volume_", "fg_fraction"))]
    else:
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(METRICS)}")
        absent = [m for m in metrics if m not in have]
        if absent:
            raise ValueError(f"metric(s) {absent} are not in every result")
        names = list(dict.fromkeys(metrics))
    if not names:
        raise ValueError("the results have no metric in common")
    return names


def _align(results: Dict[str, Rows]):
    """The (case, class) keys present in every result, in the first result's order."""
    tables = {n: {(r["case"], r["class"]): r for r in rows} for n, rows in results.items()}
    first = next(iter(results.values()))
    keys = [(r["case"], r["class"]) for r in first if all((r["case"], r["class"]) in t
                                                           for t in tables.values())]
    if not keys:
        raise ValueError("the results share no (case, class) pair: were they computed on the "
                         "same cases with the same dataset.json?")
    dropped = {n: len(t) - len(keys) for n, t in tables.items()}
    return tables, keys, dropped


def _rank(means: Dict[str, float], higher_is_better: bool) -> Dict[str, float]:
    """Rank 1 = best; ties share their average rank."""
    vals = sorted(means.items(), key=lambda kv: -kv[1] if higher_is_better else kv[1])
    ranks: Dict[str, float] = {}
    i = 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1][1] == vals[i][1]:
            j += 1
        for k in range(i, j + 1):
            ranks[vals[k][0]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def size_terciles(volumes: Sequence[float]) -> np.ndarray:
    """Tercile index (0 small, 1 medium, 2 large) of each reference volume: the sorted cases
    split into three groups as equal as possible (ties broken by input order).

    Examples
    --------
    >>> size_terciles([5.0, 1.0, 9.0, 3.0, 7.0, 2.0]).tolist()
    [1, 0, 2, 1, 2, 0]
    """
    v = np.asarray(volumes, dtype=float)
    order = np.argsort(v, kind="stable")
    out = np.empty(v.size, dtype=int)
    for t, chunk in enumerate(np.array_split(order, 3)):
        out[chunk] = t
    return out


def compare_results(
    results: Dict[str, Rows],
    metrics: Optional[Sequence[str]] = None,
    n_worst: int = 5,
    confidence: float = 0.95,
    n_resamples: int = 10000,
    seed: int = 0,
) -> dict:
    """Statistics comparing several results on their common (case, class) pairs.

    Parameters
    ----------
    results : dict name -> rows
        Rows as returned by :func:`read_metrics_csv` (``case``, ``class``, metric floats).
    metrics : sequence of str, optional
        Metrics to compare (default: every metric of :data:`METRICS` present in all results,
        except volumes and foreground fractions).
    n_worst : int
        Worst cases listed per method, class and metric.
    confidence, n_resamples, seed
        Percentile bootstrap settings (the same seed everywhere, so every statistic resamples the
        same cases).

    Returns
    -------
    dict with ``methods``, ``metrics``, ``classes``, ``n_cases`` (per class), ``dropped_rows``,
    ``summary[class][metric][method]`` (:func:`summarize` output), ``ranking[class][metric]``
    (method -> rank), ``mean_rank[class][method]``, ``paired[class][metric]`` (list of
    ``{"a", "b", mean_diff, ci_low, ci_high, p_value, n, "better"}``), ``worst[class][metric]
    [method]`` (list of ``(case, value)``), ``terciles[class]`` (``None`` without
    ``volume_ref``), ``status_counts[class][method]``, ``overall_mean_rank[method]`` (mean of
    the per-class mean ranks).
    """
    if len(results) < 1:
        raise ValueError("nothing to compare: no result given")
    if n_worst < 0:
        raise ValueError(f"n_worst must be >= 0, got {n_worst}")
    methods = list(results)
    names = _common_metrics(results, metrics)
    tables, keys, dropped = _align(results)
    classes = list(dict.fromkeys(c for _, c in keys))
    out = {"methods": methods, "metrics": names, "classes": classes, "dropped_rows": dropped,
           "confidence": confidence, "bootstrap_resamples": n_resamples,
           "bootstrap_method": BOOTSTRAP_METHOD, "n_cases": {}, "summary": {}, "ranking": {},
           "mean_rank": {}, "paired": {}, "worst": {}, "terciles": {}, "status_counts": {}}
    for c in classes:
        cases = [k for k, cc in keys if cc == c]
        out["n_cases"][c] = len(cases)
        vals = {m: {n: np.array([tables[n][(k, c)][m] for k in cases]) for n in methods}
                for m in names}
        out["summary"][c] = {m: {n: summarize(vals[m][n], confidence, n_resamples, seed)
                                 for n in methods} for m in names}
        out["ranking"][c] = {m: _rank({n: out["summary"][c][m][n]["mean"] for n in methods},
                                      METRICS[m]) for m in names}
        out["mean_rank"][c] = {n: float(np.mean([out["ranking"][c][m][n] for m in names]))
                               for n in methods}
        out["paired"][c] = {}
        for m in names:
            tests = []
            for i, a in enumerate(methods):
                for b in methods[i + 1:]:
                    t = paired_bootstrap(vals[m][a], vals[m][b], confidence, n_resamples, seed)
                    better = None
                    if t["ci_low"] > 0 or t["ci_high"] < 0:
                        a_higher = t["ci_low"] > 0
                        better = a if a_higher == METRICS[m] else b
                    tests.append({"a": a, "b": b, **t, "better": better})
            out["paired"][c][m] = tests
        out["worst"][c] = {}
        for m in names:
            out["worst"][c][m] = {}
            for n in methods:
                v = vals[m][n]
                order = np.argsort(-v if METRICS[m] else v, kind="stable")[::-1][:n_worst]
                out["worst"][c][m][n] = [(cases[i], float(v[i])) for i in order]
        out["status_counts"][c] = {n: {s: sum(1 for k in cases if tables[n][(k, c)].get("status") == s)
                                       for s in STATUSES} for n in methods}
        out["terciles"][c] = _tercile_table(tables, methods, cases, c, names)
    out["overall_mean_rank"] = {n: float(np.mean([out["mean_rank"][c][n] for c in classes]))
                                for n in methods}
    return out


def _tercile_table(tables, methods, cases, c, names):
    first = tables[methods[0]]
    if "volume_ref" not in first[(cases[0], c)]:
        return None
    vol = np.array([first[(k, c)]["volume_ref"] for k in cases])
    for n in methods[1:]:
        other = np.array([tables[n][(k, c)].get("volume_ref", np.nan) for k in cases])
        if not np.allclose(other, vol, rtol=1e-6, equal_nan=False):
            raise ValueError(f"class {c!r}: reference volumes differ between {methods[0]!r} and "
                             f"{n!r}: the results were not computed against the same references")
    terc = size_terciles(vol)
    table = []
    for t in range(3):
        idx = np.flatnonzero(terc == t)
        if idx.size == 0:
            continue
        entry = {"tercile": _TERCILE_NAMES[t], "n": int(idx.size),
                 "volume_min": float(vol[idx].min()), "volume_max": float(vol[idx].max()),
                 "mean": {m: {n: float(np.mean([tables[n][(cases[i], c)][m] for i in idx]))
                              for n in methods} for m in names}}
        table.append(entry)
    return table


# --- report ------------------------------------------------------------------------------------

def _fmt(v: float) -> str:
    if v == 0 or 1e-3 <= abs(v) < 1e5:
        return f"{v:.4f}"
    return f"{v:.3e}"


def _fmt_p(p: float, n_resamples: int) -> str:
    """A bootstrap p-value of 0 only says p < 2 / n_resamples."""
    return f"< {2 / n_resamples:.2g}" if p == 0 else f"{p:.4f}"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    esc = lambda s: str(s).replace("|", "\\|")
    lines = ["| " + " | ".join(esc(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(esc(x) for x in r) + " |" for r in rows]
    return lines + [""]


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_") or "class"


def render_markdown(cmp: dict, sources: Optional[Dict[str, str]] = None,
                    plots: Optional[Dict[str, List[str]]] = None) -> str:
    """The Markdown report of a :func:`compare_results` dict."""
    methods, names = cmp["methods"], cmp["metrics"]
    pct = int(round(cmp["confidence"] * 100))
    L = ["# Comparison of segmentation results", ""]
    L.append(f"{len(methods)} result(s), metrics: {', '.join(names)}. Statistics are over cases "
             f"present in every result; {pct} % CIs are expanded percentile bootstraps of the "
             f"mean ({cmp['bootstrap_resamples']} resamples of the cases; never narrower than "
             "Student's t interval, so that they hold at small n). Arrows: ↑ higher is "
             "better, ↓ lower is better.")
    small = sorted({n for n in cmp["n_cases"].values() if n < 10})
    if small:
        L += ["", f"**Few cases** ({', '.join(map(str, small))} in some classes): the intervals "
              "are wide and a plain percentile bootstrap would understate them."]
    L.append("")
    rows = []
    for n in methods:
        rows.append([n, sources.get(n, "") if sources else "", str(cmp["dropped_rows"][n])])
    L += _md_table(["result", "source", "rows not in every result (left out)"], rows)
    if len(methods) > 1:
        L += ["Mean rank over all classes and metrics (1 = best): " + ", ".join(
            f"{n} {r:.2f}" for n, r in sorted(cmp["overall_mean_rank"].items(), key=lambda kv: kv[1])),
            ""]
    for c in cmp["classes"]:
        L += [f"## Class `{c}` ({cmp['n_cases'][c]} cases)", ""]
        counts = cmp["status_counts"][c]
        if any(counts[n][s] for n in methods for s in STATUSES if s != "ok"):
            L.append("Empty masks: " + "; ".join(
                f"{n}: " + ", ".join(f"{s} {counts[n][s]}" for s in STATUSES if s != "ok")
                for n in methods))
            L.append("")
        L += ["### Mean ± std [CI]", ""]
        rows = []
        for m in names:
            best = min(cmp["ranking"][c][m].values())
            cells = []
            for n in methods:
                s = cmp["summary"][c][m][n]
                txt = f"{_fmt(s['mean'])} ± {_fmt(s['std'])} [{_fmt(s['ci_low'])}, {_fmt(s['ci_high'])}]"
                cells.append(f"**{txt}**" if cmp["ranking"][c][m][n] == best and len(methods) > 1 else txt)
            rows.append([f"{m} {'↑' if METRICS[m] else '↓'}"] + cells)
        L += _md_table(["metric"] + methods, rows)
        L += ["### Ranking (1 = best, by mean)", ""]
        rows = [[m] + [f"{cmp['ranking'][c][m][n]:g}" for n in methods] for m in names]
        rows.append(["**mean rank**"] + [f"**{cmp['mean_rank'][c][n]:.2f}**" for n in methods])
        L += _md_table(["metric"] + methods, rows)
        if len(methods) > 1:
            L += ["### Paired bootstrap tests (difference a − b)", ""]
            rows = []
            for m in names:
                for t in cmp["paired"][c][m]:
                    rows.append([m, t["a"], t["b"], _fmt(t["mean_diff"]),
                                 f"[{_fmt(t['ci_low'])}, {_fmt(t['ci_high'])}]",
                                 _fmt_p(t["p_value"], cmp["bootstrap_resamples"]),
                                 t["better"] or "no significant difference"])
            L += _md_table(["metric", "a", "b", "mean diff", f"{pct} % CI", "p", "better"], rows)
        if any(cmp["worst"][c][m][n] for m in names for n in methods):
            L += ["### Worst cases", ""]
            rows = []
            for m in names:
                for n in methods:
                    rows.append([m, n, ", ".join(f"{k} ({_fmt(v)})" for k, v in cmp["worst"][c][m][n])])
            L += _md_table(["metric", "result", "worst cases (value)"], rows)
        if cmp["terciles"][c] is not None:
            L += ["### By reference size (terciles of volume_ref)", ""]
            rows = []
            for e in cmp["terciles"][c]:
                label = f"{e['tercile']} (n={e['n']}, {_fmt(e['volume_min'])}–{_fmt(e['volume_max'])})"
                for m in names:
                    rows.append([label, m] + [_fmt(e["mean"][m][n]) for n in methods])
            L += _md_table(["tercile", "metric"] + methods, rows)
        for p in (plots or {}).get(c, []):
            L += [f"![{os.path.splitext(p)[0]}]({p})", ""]
    return "\n".join(L)


#: metrics measured in the units of the image spacing (mm for medical images)
DISTANCE_METRICS = ("assd", "masd", "hd", "hd95")
_AXIS_LABELS = {
    "volume_pred": "volume (spacing units³, mm³)", "volume_ref": "volume (spacing units³, mm³)",
    "voi": "VOI (bits)",
}


def metric_axis_label(metric: str) -> str:
    """The y-axis label of a metric's per-case plot, with its unit.

    Examples
    --------
    >>> metric_axis_label("hd95")
    'hd95 (mm; spacing units)'
    """
    if metric in DISTANCE_METRICS or metric.endswith("_hd95"):
        return f"{metric} (mm; spacing units)"
    if metric in _AXIS_LABELS:
        return _AXIS_LABELS[metric]
    if metric.startswith("betti_"):
        return f"{metric} (features)"
    return f"{metric} (unitless, 0–1)"


def plot_comparison(results: Dict[str, Rows], cmp: dict, output_folder: str) -> Dict[str, List[str]]:
    """PNG plots per class: per-case distributions (box plot with the cases as points) of
    every metric per method, and a Dice-vs-clDice scatter when both are present. Returns the
    file names per class (relative to ``output_folder``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods, names = cmp["methods"], cmp["metrics"]
    tables, keys, _ = _align(results)
    files: Dict[str, List[str]] = {}
    rng = np.random.default_rng(0)
    for c in cmp["classes"]:
        cases = [k for k, cc in keys if cc == c]
        files[c] = []
        ncol = min(3, len(names))
        nrow = math.ceil(len(names) / ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.4 * nrow), squeeze=False)
        for ax, m in zip(axes.ravel(), names):
            data = [[tables[n][(k, c)][m] for k in cases] for n in methods]
            ax.boxplot(data, showfliers=False)
            for i, d in enumerate(data, start=1):
                ax.scatter(i + rng.uniform(-0.15, 0.15, len(d)), d, s=8, alpha=0.6)
            ax.set_xticks(range(1, len(methods) + 1))
            ax.set_xticklabels(methods, rotation=20, ha="right", fontsize=7)
            ax.set_title(f"{m} ({'higher' if METRICS[m] else 'lower'} is better)", fontsize=9)
            ax.set_ylabel(metric_axis_label(m), fontsize=8)
        for ax in axes.ravel()[len(names):]:
            ax.axis("off")
        fig.suptitle(f"class {c}: per-case values", fontsize=10)
        # keep the top band free for the figure title (tight_layout alone lets the first row's
        # panel titles run into it)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
        name = f"distributions_{_slug(c)}.png"
        fig.savefig(os.path.join(output_folder, name), dpi=100)
        plt.close(fig)
        files[c].append(name)
        if "dice" in names and "cldice" in names:
            fig, ax = plt.subplots(figsize=(5, 4.5))
            for n in methods:
                x = [tables[n][(k, c)]["dice"] for k in cases]
                y = [tables[n][(k, c)]["cldice"] for k in cases]
                pts = ax.scatter(x, y, s=12, alpha=0.5, label=n)
                ax.scatter([np.mean(x)], [np.mean(y)], s=120, marker="X", edgecolor="k",
                           color=pts.get_facecolor()[0])
            ax.set_xlabel("Dice")
            ax.set_ylabel("clDice")
            ax.set_title(f"class {c}: Dice vs clDice (X = mean)", fontsize=10)
            ax.legend(fontsize=7)
            fig.tight_layout()
            name = f"dice_vs_cldice_{_slug(c)}.png"
            fig.savefig(os.path.join(output_folder, name), dpi=100)
            plt.close(fig)
            files[c].append(name)
    return files


def write_comparison(
    paths: Sequence[str],
    output_folder: str,
    names: Optional[Sequence[str]] = None,
    metrics: Optional[Sequence[str]] = None,
    n_worst: int = 5,
    n_resamples: int = 10000,
    seed: int = 0,
    plots: bool = True,
    share_reference: bool = True,
    **load_kwargs,
) -> dict:
    """Load every result, compare them and write ``report.md``, ``comparison.json`` and the
    plots into ``output_folder``.

    Parameters
    ----------
    paths : sequence of str
        ``metrics_per_case.csv`` files, folders holding one, or nnU-Net results folders.
    names : sequence of str, optional
        Display names (default :func:`result_names` of the paths).
    share_reference : bool
        Evaluate the nnU-Net results folders that need it together
        (:func:`evaluate_nnunet_results_many`: each reference case prepared once for all of
        them); ``False`` evaluates them one after the other. The numbers are identical.
    load_kwargs
        Passed to :func:`evaluate_nnunet_results` for nnU-Net results folders (e.g.
        ``gt_folder``, ``num_processes``, ``recompute``).

    Returns
    -------
    The :func:`compare_results` dict.
    """
    if not paths:
        raise ValueError("no result given")
    if names is None:
        names = result_names(paths)
    elif len(names) != len(paths):
        raise ValueError(f"{len(names)} name(s) for {len(paths)} result(s)")
    if len(set(names)) != len(names):
        raise ValueError(f"result names must be unique, got {list(names)}")
    results = _load_results(names, paths, share_reference, load_kwargs)
    cmp = compare_results(results, metrics=metrics, n_worst=n_worst, n_resamples=n_resamples,
                          seed=seed)
    os.makedirs(output_folder, exist_ok=True)
    files = plot_comparison(results, cmp, output_folder) if plots else {}
    with open(os.path.join(output_folder, "report.md"), "w") as f:
        f.write(render_markdown(cmp, dict(zip(names, paths)), files))
    with open(os.path.join(output_folder, "comparison.json"), "w") as f:
        json.dump(cmp, f, indent=2)
    return cmp


def _load_results(names, paths, share_reference: bool, load_kwargs) -> Dict[str, Rows]:
    """Rows of every result; nnU-Net results folders evaluated together when
    ``share_reference`` and there are several."""
    shared = [i for i, p in enumerate(paths)
              if share_reference and not os.path.isfile(p)
              and not os.path.isfile(os.path.join(p, "metrics_per_case.csv"))
              and is_nnunet_results_folder(p)]
    rows = {}
    if len(shared) > 1:
        for i, r in zip(shared, evaluate_nnunet_results_many([paths[i] for i in shared],
                                                             **load_kwargs)):
            rows[i] = r
    return {n: rows[i] if i in rows else load_result(p, **load_kwargs)
            for i, (n, p) in enumerate(zip(names, paths))}
