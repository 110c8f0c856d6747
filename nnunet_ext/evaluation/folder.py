"""Evaluate a folder of predicted segmentations against a folder of references.

Classes or regions come from ``dataset.json`` (nnU-Net's label handling; the ignore label is
excluded and its voxels are removed from both masks before any metric is computed). Images are
read with the nnU-Net reader/writer that matches the dataset's ``file_ending``, which also
supplies the voxel spacing in array-axis order.
"""
from __future__ import annotations

import csv
import json
import multiprocessing
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ..image_io import ImageReadError, check_image_file, check_label_values, geometry_problem, label_values_of_dataset_json, read_seg
from ..inference.naming import is_uncertainty_map
from ._common import STATUSES
from .case import case_metrics, check_metric_names
from .reference import prepare_reference
from .skeleton import SKELETON_STATUSES, check_skeleton_method
from .stats import BOOTSTRAP_METHOD, summarize



def load_dataset_json(path: str) -> dict:
    """Read ``dataset.json`` and check the keys evaluation and post-processing need."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"dataset.json not found: {path}")
    with open(path) as f:
        try:
            dj = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
    for key in ("labels", "file_ending"):
        if key not in dj:
            raise KeyError(f"{path} has no '{key}' entry")
    return dj


def reference_folder_of_results(results_folder: str, gt_folder: Optional[str] = None) -> str:
    """The reference segmentations of an nnU-Net results folder
    ``$nnUNet_results/<Dataset>/<Trainer>__<Plans>__<config>``: ``gt_folder`` if given, else
    ``$nnUNet_preprocessed/<Dataset>/gt_segmentations`` (what nnU-Net's own validation uses)."""
    if gt_folder is None:
        pre = os.environ.get("nnUNet_preprocessed")
        if not pre:
            raise KeyError(f"cannot find the reference segmentations of {results_folder}: the "
                           "environment variable nnUNet_preprocessed is not set; pass the reference "
                           "folder with --gt-folder")
        dataset = os.path.basename(os.path.dirname(os.path.normpath(results_folder)))
        gt_folder = os.path.join(pre, dataset, "gt_segmentations")
    if not os.path.isdir(gt_folder):
        raise FileNotFoundError(f"reference folder {gt_folder} (for {results_folder}) not found; pass the "
                                "reference segmentations with --gt-folder")
    return gt_folder


def classes_from_dataset_json(dataset_json: dict) -> List[Tuple[str, Tuple[int, ...]]]:
    """``(name, label values)`` for every foreground class or region (ignore label excluded).

    Examples
    --------
    >>> classes_from_dataset_json({"labels": {"background": 0, "vessel": 1}})
    [('vessel', (1,))]
    """
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    labels = dataset_json["labels"]
    lm = LabelManager(labels, regions_class_order=dataset_json.get("regions_class_order"))
    entries = lm.foreground_regions if lm.has_regions else lm.foreground_labels
    names = {}
    for name, value in labels.items():
        key = tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),)
        names.setdefault(key, name)
    out = []
    for e in entries:
        key = tuple(int(v) for v in e) if isinstance(e, (list, tuple)) else (int(e),)
        out.append((names.get(key, "_".join(map(str, key))), key))
    if not out:
        raise ValueError("dataset.json 'labels' defines no foreground class or region")
    return out


def _ignore_label(dataset_json: dict) -> Optional[int]:
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    lm = LabelManager(dataset_json["labels"], regions_class_order=dataset_json.get("regions_class_order"))
    return lm.ignore_label if lm.has_ignore_label else None


def _read(reader, path: str, allowed, what: str) -> Tuple[np.ndarray, Tuple[float, ...], dict]:
    """Read a segmentation through the shared reader (damaged files refused), check its label
    values against dataset.json; nnU-Net's 2D layout (1, X, Y) is squeezed."""
    seg, props = read_seg(reader, path, what)
    seg = np.asarray(seg)[0]
    check_label_values(seg, allowed, path, what)
    spacing = tuple(float(s) for s in props["spacing"])
    if seg.ndim == 3 and seg.shape[0] == 1:  # nnU-Net stores 2D images as (1, X, Y)
        seg, spacing = seg[0], spacing[1:]
    return seg, spacing, props


def _evaluate_case_many(job) -> List[List[Dict[str, object]]]:
    """One case against several predictions (``None`` where a folder lacks the case): the
    reference is read once and each class's reference mask prepared once
    (:class:`~nnunet_ext.evaluation.PreparedReference`); rows per prediction, identical to
    scoring each prediction against the plain reference mask."""
    (case, pred_paths, ref_path, reader_cls, classes, ignore, metrics, tolerance, percentile,
     empty_distance, skeleton, allowed) = job
    reader = reader_cls()
    ref, sp_ref, ref_props = _read(reader, ref_path, allowed, "reference")
    valid = None if ignore is None else ref != ignore
    prepared = {}
    out: List[List[Dict[str, object]]] = []
    for pred_path in pred_paths:
        if pred_path is None:
            out.append([])
            continue
        pred, sp_pred, pred_props = _read(reader, pred_path, allowed, "prediction")
        if pred.shape != ref.shape:
            raise ImageReadError(None, f"case {case}: prediction {pred_path} has shape "
                                       f"{pred.shape}, reference {ref_path} has shape {ref.shape}")
        problem = geometry_problem(pred_props, ref_props, f"reference {ref_path}")
        if problem is not None:
            raise ImageReadError(pred_path, f"prediction {problem}")
        rows = []
        for name, values in classes:
            if name not in prepared:
                r = np.isin(ref, values)
                if valid is not None:
                    r &= valid
                prepared[name] = prepare_reference(r, sp_ref)
            p = np.isin(pred, values)
            if valid is not None:
                p &= valid
            res = case_metrics(p, prepared[name], sp_ref, metrics=metrics, tolerance=tolerance,
                               percentile=percentile, empty_distance=empty_distance,
                               skeleton=skeleton)
            rows.append({"case": case, "class": name, "labels": "+".join(map(str, values)),
                         **res})
        out.append(rows)
    return out


def _list_cases(pred_folder: str, ref_folder: str, file_ending: str,
                only_predicted: bool = False) -> List[str]:
    for folder, what in ((pred_folder, "prediction"), (ref_folder, "reference")):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{what} folder not found: {folder}")
    refs = sorted(f for f in os.listdir(ref_folder) if f.endswith(file_ending))
    if not refs:
        raise FileNotFoundError(f"no '*{file_ending}' files in reference folder {ref_folder}")
    if only_predicted:
        preds = sorted(f for f in os.listdir(pred_folder)
                       if f.endswith(file_ending) and not is_uncertainty_map(f))
        if not preds:
            raise FileNotFoundError(f"no '*{file_ending}' files in prediction folder {pred_folder}")
        ref_set = set(refs)
        orphans = [f for f in preds if f not in ref_set]
        if orphans:
            raise FileNotFoundError(
                f"{len(orphans)} prediction(s) in {pred_folder} have no reference in {ref_folder}: "
                f"{', '.join(orphans[:5])}{' ...' if len(orphans) > 5 else ''}")
        return preds
    missing = [f for f in refs if not os.path.isfile(os.path.join(pred_folder, f))]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} reference case(s) have no prediction in {pred_folder}: "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return refs


def summarize_rows(rows: Sequence[Dict[str, object]], metrics: Sequence[str],
                   confidence: float = 0.95, n_resamples: int = 10000, seed: int = 0) -> dict:
    """Per class and metric: mean, std, median, bootstrap CI and the empty counts;
    plus the same over the per-case mean across classes (``mean_over_classes``)."""
    classes = list(dict.fromkeys(r["class"] for r in rows))
    cases = list(dict.fromkeys(r["case"] for r in rows))
    out = {"n_cases": len(cases), "confidence": confidence, "bootstrap_resamples": n_resamples,
           "bootstrap_method": BOOTSTRAP_METHOD, "classes": {}, "mean_over_classes": {}}
    table = {(r["case"], r["class"]): r for r in rows}
    for c in classes:
        cr = [table[(k, c)] for k in cases if (k, c) in table]
        entry = {"empty": {s: sum(1 for r in cr if r["status"] == s) for s in STATUSES}}
        if any("skeleton_status" in r for r in cr):
            entry["skeleton_empty"] = {s: sum(1 for r in cr if r.get("skeleton_status") == s)
                                       for s in SKELETON_STATUSES}
        for m in metrics:
            entry[m] = summarize([r[m] for r in cr], confidence, n_resamples, seed)
        out["classes"][c] = entry
    for m in metrics:
        per_case = [np.mean([table[(k, c)][m] for c in classes if (k, c) in table]) for k in cases]
        out["mean_over_classes"][m] = summarize(per_case, confidence, n_resamples, seed)
    return out


def evaluate_folders(
    pred_folder: str,
    ref_folder: str,
    dataset_json: str,
    output_folder: Optional[str] = None,
    metrics: Optional[Iterable[str]] = None,
    num_processes: int = 1,
    tolerance: float = 1.0,
    percentile: float = 95.0,
    empty_distance: Optional[float] = None,
    n_resamples: int = 10000,
    seed: int = 0,
    progress: bool = True,
    only_predicted: bool = False,
    write: bool = True,
    skeleton: str = "skimage",
    overwrite: bool = False,
) -> Tuple[List[Dict[str, object]], dict]:
    """Evaluate every reference case against the prediction with the same file name.

    Parameters
    ----------
    pred_folder, ref_folder : str
        Folders with one segmentation file per case (``file_ending`` from ``dataset_json``).
    dataset_json : str
        Path of the dataset's ``dataset.json`` (labels or regions, ignore label, file ending).
    output_folder : str, optional
        Where ``metrics_per_case.csv`` and ``metrics_summary.json`` are written (default
        ``pred_folder``).
    metrics : iterable of str, optional
        Metric names (see :data:`nnunet_ext.evaluation.METRICS`).
    num_processes : int
        Cases evaluated in parallel.
    tolerance, percentile, empty_distance
        As in :func:`nnunet_ext.evaluation.case_metrics`.
    n_resamples, seed
        Bootstrap settings of the summary.
    only_predicted : bool
        Evaluate only the reference cases that have a prediction (e.g. one fold's validation
        cases against all of ``gt_segmentations``); every prediction still needs a reference.
        Default: every reference case needs a prediction.
    write : bool
        Write the CSV and JSON files (default); ``False`` only returns them.
    skeleton : {"skimage", "robust"}
        Skeleton definition of clDice (:func:`nnunet_ext.evaluation.case_metrics`); with clDice
        the CSV has a ``skeleton_status`` column.
    overwrite : bool
        Replace ``metrics_per_case.csv`` / ``metrics_summary.json`` that exist in the output folder
        (otherwise that is an error, raised before any case is read).

    Returns
    -------
    rows, summary
        One dict per (case, class) and the summary dict written to JSON.
    """
    out = pred_folder if output_folder is None else output_folder
    return evaluate_folders_many(
        [pred_folder], ref_folder, dataset_json, [out], metrics=metrics, num_processes=num_processes,
        tolerance=tolerance, percentile=percentile, empty_distance=empty_distance, n_resamples=n_resamples,
        seed=seed, progress=progress, only_predicted=only_predicted, write=write, skeleton=skeleton,
        overwrite=overwrite)[0]


def _finish_rows(rows, cases, classes, names, n_resamples, seed, tolerance, percentile, skeleton,
                 empty_distance, ignore, out: Optional[str]):
    """Sort one prediction folder's rows (case order, class order), summarise them and write
    the outputs into ``out`` (unless ``None``)."""
    order = {case: i for i, case in enumerate(cases)}
    cls_order = {c[0]: i for i, c in enumerate(classes)}
    rows.sort(key=lambda r: (order[r["case"]], cls_order[r["class"]]))
    summary = summarize_rows(rows, names, n_resamples=n_resamples, seed=seed)
    summary["settings"] = {"metrics": list(names), "nsd_tolerance": tolerance,
                           "hd_percentile": percentile,
                           "skeleton": skeleton,
                           "empty_distance": "array diagonal" if empty_distance is None else empty_distance,
                           "ignore_label": ignore,
                           "classes": {n: list(v) for n, v in classes}}
    if out is not None:
        write_evaluation_outputs(rows, summary, out)
    return rows, summary


def evaluate_folders_many(
    pred_folders: Sequence[str],
    ref_folder: str,
    dataset_json: str,
    output_folders: Optional[Sequence[str]] = None,
    metrics: Optional[Iterable[str]] = None,
    num_processes: int = 1,
    tolerance: float = 1.0,
    percentile: float = 95.0,
    empty_distance: Optional[float] = None,
    n_resamples: int = 10000,
    seed: int = 0,
    progress: bool = True,
    only_predicted: bool = False,
    write: bool = True,
    skeleton: str = "skimage",
    overwrite: bool = False,
) -> List[Tuple[List[Dict[str, object]], dict]]:
    """:func:`evaluate_folders` of several prediction folders against one reference folder,
    reading each reference case once and preparing each of its class masks once
    (:func:`~nnunet_ext.evaluation.prepare_reference`: skeleton, border k-d tree, components and
    Betti numbers of the reference computed once for all predictions).

    Parameters are those of :func:`evaluate_folders`, with ``pred_folders`` and
    ``output_folders`` (default: each prediction folder) one per prediction folder; the cases
    of each folder are chosen as there (``only_predicted``). The outputs of each folder are
    identical to :func:`evaluate_folders` of that folder alone.

    Returns
    -------
    list of (rows, summary), one per prediction folder.
    """
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
    from tqdm import tqdm

    if not pred_folders:
        raise ValueError("no prediction folder given")
    outs = list(pred_folders) if output_folders is None else list(output_folders)
    if len(outs) != len(pred_folders):
        raise ValueError(f"{len(outs)} output folder(s) for {len(pred_folders)} prediction "
                         "folder(s)")
    names = check_metric_names(metrics)
    check_skeleton_method(skeleton)
    dj = load_dataset_json(dataset_json)
    classes = classes_from_dataset_json(dj)
    ignore = _ignore_label(dj)
    fe = dj["file_ending"]
    files = [_list_cases(f, ref_folder, fe, only_predicted) for f in pred_folders]
    if write:
        for out in outs:
            check_output_folder(out, EVALUATION_OUTPUTS, overwrite)
    every = sorted(set().union(*files))
    check_image_file(os.path.join(ref_folder, every[0]), "reference")
    reader_cls = determine_reader_writer_from_dataset_json(dj, os.path.join(ref_folder, every[0]))
    allowed = label_values_of_dataset_json(dj)
    present = [set(f) for f in files]
    jobs = [(f[: -len(fe)],
             [os.path.join(folder, f) if f in have else None
              for folder, have in zip(pred_folders, present)],
             os.path.join(ref_folder, f), reader_cls, classes, ignore, names, tolerance,
             percentile, empty_distance, skeleton, allowed)
            for f in every]
    rows: List[List[Dict[str, object]]] = [[] for _ in pred_folders]
    bar = tqdm(total=len(jobs), unit="case",
               desc="evaluating" if len(pred_folders) == 1 else f"evaluating {len(pred_folders)} predictions",
               disable=not progress)
    try:
        if num_processes <= 1:
            results = map(_evaluate_case_many, jobs)
            for res in results:
                for i, r in enumerate(res):
                    rows[i].extend(r)
                bar.update()
        else:
            with multiprocessing.get_context("spawn").Pool(num_processes) as pool:
                for res in pool.imap_unordered(_evaluate_case_many, jobs):
                    for i, r in enumerate(res):
                        rows[i].extend(r)
                    bar.update()
    finally:
        bar.close()
    return [_finish_rows(r, [f[: -len(fe)] for f in fs], classes, names, n_resamples, seed,
                         tolerance, percentile, skeleton, empty_distance, ignore,
                         out if write else None)
            for r, fs, out in zip(rows, files, outs)]


def write_evaluation_outputs(rows, summary: dict, out: str) -> None:
    """The per-case CSV and the summary JSON into ``out``, each written whole or not at all."""
    os.makedirs(out, exist_ok=True)
    csv_path, json_path = (os.path.join(out, n) for n in EVALUATION_OUTPUTS)
    write_rows_csv(rows, csv_path + ".partial")
    with open(json_path + ".partial", "w") as f:
        json.dump(summary, f, indent=2)
    os.replace(csv_path + ".partial", csv_path)
    os.replace(json_path + ".partial", json_path)


EVALUATION_OUTPUTS = ("metrics_per_case.csv", "metrics_summary.json")


def check_output_folder(folder: str, outputs: Sequence[str], overwrite: bool) -> None:
    """Refuse, before any work, an output folder that cannot take ``outputs``: a file in its
    place, a folder that cannot be created or written, or outputs that exist (without ``overwrite``)."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise NotADirectoryError(f"output folder {folder} is a file, not a folder")
    if os.path.isdir(folder):
        existing = [n for n in outputs if os.path.lexists(os.path.join(folder, n))]
        if existing and not overwrite:
            raise FileExistsError(f"{folder} already holds {', '.join(existing)} (use --overwrite to replace)")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(f"output folder {folder} is not writable (permission denied)")
        return
    parent = os.path.dirname(os.path.abspath(folder))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"output folder {folder} cannot be created: {parent} is not writable")


def write_rows_csv(rows: Sequence[Dict[str, object]], path: str) -> None:
    """Write per-case rows (all with the same keys) as CSV."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)


TOPOLOGY_METRICS = ("dice", "cldice", "betti_0_error", "betti_1_error", "betti_2_error", "voi")


def write_topology_summary(
    validation_folder: str,
    gt_folder: str,
    dataset_json_path: str,
    metrics: Sequence[str] = TOPOLOGY_METRICS,
    num_processes: int = 1,
    n_resamples: int = 10000,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Write ``summary_topology.json`` beside nnU-Net's ``summary.json`` of a validation folder.

    Evaluates the predictions in ``validation_folder`` (only those cases: ``gt_folder`` may hold
    all training cases, as ``gt_segmentations`` does) with the topology-aware metrics and writes
    a summary in the spirit of ``summary.json``: ``metric_per_case`` (prediction and reference
    file, status and metrics per class), ``mean`` per class, ``foreground_mean`` (mean over
    classes), plus the bootstrap statistics of :func:`summarize_rows` under ``statistics`` and the
    ``settings``. The file is written atomically (temporary file, then renamed).

    Parameters
    ----------
    validation_folder : str
        ``fold_X/validation`` of an nnU-Net results folder.
    gt_folder : str
        Reference segmentations (``$nnUNet_preprocessed/<Dataset>/gt_segmentations``).
    dataset_json_path : str
        The dataset.json of the results folder.
    metrics : sequence of str
        Metric names (default :data:`TOPOLOGY_METRICS`).

    Returns
    -------
    The dict written to JSON.
    """
    rows, stats = evaluate_folders(
        validation_folder, gt_folder, dataset_json_path, metrics=metrics,
        num_processes=num_processes, n_resamples=n_resamples, seed=seed, progress=progress,
        only_predicted=True, write=False)
    names = stats["settings"]["metrics"]
    fe = load_dataset_json(dataset_json_path)["file_ending"]
    per_case: Dict[str, dict] = {}
    for r in rows:
        entry = per_case.setdefault(r["case"], {
            "prediction_file": os.path.join(os.path.abspath(validation_folder), r["case"] + fe),
            "reference_file": os.path.join(os.path.abspath(gt_folder), r["case"] + fe),
            "metrics": {}})
        entry["metrics"][r["class"]] = {"status": r["status"], **{m: r[m] for m in names}}
    out = {
        "metric_per_case": list(per_case.values()),
        "mean": {c: {m: e[m]["mean"] for m in names} for c, e in stats["classes"].items()},
        "foreground_mean": {m: stats["mean_over_classes"][m]["mean"] for m in names},
        "statistics": stats,
        "settings": stats.pop("settings"),
    }
    path = os.path.join(validation_folder, "summary_topology.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=2)
    os.replace(tmp, path)
    return out
