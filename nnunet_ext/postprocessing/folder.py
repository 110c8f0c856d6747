"""Folders of predictions: finding cases, reading/writing them with nnU-Net's reader/writer
(so spacing and geometry are kept) and applying a pipeline to a whole folder.

Nothing is written half-way: outputs go to a temporary folder inside the output folder and are
moved into place only after every case succeeded; an existing output file is only replaced
with ``overwrite=True``.
"""
from __future__ import annotations

import glob
import multiprocessing
import os
import shutil
import tempfile
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from ..evaluation.folder import load_dataset_json, reference_folder_of_results
from ..image_io import check_label_values, read_seg
from ..inference.naming import is_uncertainty_map
from .labels import DatasetLabels
from .pipeline import PipelineError, apply_pipeline, load_pipeline, needs_probabilities, \
    resolve_steps, validate_pipeline


class Case(NamedTuple):
    """One prediction with its reference and (optional) saved probabilities."""
    name: str
    pred: str
    ref: Optional[str]
    npz: Optional[str]


# ---------------------------------------------------------------------------- reading / writing
def reader_writer_class(dataset_json: dict, example_file: str, plans_file: Optional[str] = None):
    """nnU-Net's reader/writer class: the one named in ``plans_file`` if given (what
    ``nnUNetv2_apply_postprocessing`` uses), else the one matching the dataset's file ending."""
    if plans_file is not None and os.path.isfile(plans_file):
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        return PlansManager(plans_file).image_reader_writer_class
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

    from ..image_io import check_image_file

    check_image_file(example_file, "segmentation")  # nnU-Net picks the reader by reading this file
    return determine_reader_writer_from_dataset_json(dataset_json, example_file, verbose=False)


def read_segmentation(reader, path: str, allowed_labels: Optional[Sequence[int]] = None,
                      what: str = "segmentation") -> Tuple[np.ndarray, Tuple[float, ...], dict, bool]:
    """Read a segmentation with an nnU-Net reader, through the shared reader of
    :mod:`nnunet_ext.image_io` (a damaged file is refused, naming it).

    With ``allowed_labels`` (the values of ``dataset.json``), other values are an error naming the
    file and the values.

    Returns
    -------
    seg : ndarray, shape (Z, Y, X), or (Y, X) for 2D images
    spacing : tuple of float, array-axis order
    properties : dict, nnU-Net's properties (needed to write with the same geometry)
    squeezed : bool, whether a leading singleton axis (nnU-Net's 2D layout) was removed
    """
    if not os.path.lexists(path):
        raise FileNotFoundError(f"segmentation not found: {path}")
    seg, props = read_seg(reader, path, what)
    seg = np.asarray(seg)[0]
    if allowed_labels is not None:
        check_label_values(seg, allowed_labels, path, what)
    spacing = tuple(float(s) for s in props["spacing"])
    squeezed = seg.ndim == 3 and seg.shape[0] == 1
    if squeezed:  # nnU-Net stores 2D images as (1, X, Y) with a dummy first spacing
        seg, spacing = seg[0], spacing[1:]
    return seg, spacing, props, squeezed


def write_segmentation(writer, seg: np.ndarray, path: str, properties: dict, squeezed: bool) -> None:
    """Write ``seg`` (as returned by :func:`read_segmentation`) with the reader's properties."""
    writer.write_seg(seg[None] if squeezed else seg, path, properties)


def read_probabilities(path: str) -> np.ndarray:
    """The ``probabilities`` array of an nnU-Net ``.npz`` (shape (C, Z, Y, X) or (C, 1, X, Y))."""
    from ..image_io import load_npz_probabilities

    if not os.path.lexists(path):
        raise FileNotFoundError(f"probabilities not found: {path}")
    return load_npz_probabilities(path)


def allowed_label_values(labels: DatasetLabels) -> Tuple[int, ...]:
    """Every value a segmentation of the dataset may hold (``dataset.json`` labels, ignore included)."""
    from ..image_io import label_values_of_dataset_json

    return label_values_of_dataset_json({"labels": labels.labels_dict})


# ---------------------------------------------------------------------------- finding cases
def _cases_in(folder: str, file_ending: str) -> List[str]:
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"folder not found: {folder}")
    # uncertainty maps written beside the segmentations by ``nnunet-ext predict`` are not cases
    return sorted(f for f in os.listdir(folder)
                  if f.endswith(file_ending) and not f.startswith(".") and not is_uncertainty_map(f))


def find_cases(pred_folder: str, ref_folder: Optional[str], file_ending: str,
               probabilities_folder: Optional[str] = None) -> List[Case]:
    """Every prediction of ``pred_folder`` with its reference (same file name in
    ``ref_folder``; a missing reference is an error) and ``<case>.npz`` if it exists."""
    preds = _cases_in(pred_folder, file_ending)
    if not preds:
        raise FileNotFoundError(f"no '*{file_ending}' files in {pred_folder}")
    npz_dir = pred_folder if probabilities_folder is None else probabilities_folder
    out = []
    missing = []
    for f in preds:
        name = f[: -len(file_ending)]
        ref = None
        if ref_folder is not None:
            ref = os.path.join(ref_folder, f)
            if not os.path.isfile(ref):
                missing.append(f)
        npz = os.path.join(npz_dir, name + ".npz")
        out.append(Case(name, os.path.join(pred_folder, f), ref, npz if os.path.isfile(npz) else None))
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} prediction(s) in {pred_folder} have no reference in {ref_folder}: "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return out


def find_cv_cases(results_folder: str, gt_folder: Optional[str] = None,
                  folds: Optional[Sequence[str]] = None) -> Tuple[List[Case], str, str]:
    """The cross-validation predictions of an nnU-Net results folder.

    Parameters
    ----------
    results_folder : str
        ``<nnUNet_results>/<Dataset>/<Trainer>__<Plans>__<configuration>`` with
        ``fold_*/validation`` folders and ``dataset.json``.
    gt_folder : str, optional
        Reference segmentations; default ``$nnUNet_preprocessed/<Dataset>/gt_segmentations``.
    folds : sequence of str, optional
        Folds to use (default: every ``fold_*`` with a ``validation`` folder).

    Returns
    -------
    cases, dataset_json_path, gt_folder
    """
    results_folder = os.path.normpath(results_folder)
    dj_path = os.path.join(results_folder, "dataset.json")
    if not os.path.isfile(dj_path):
        raise FileNotFoundError(f"nnU-Net results folder {results_folder} has no dataset.json")
    fe = load_dataset_json(dj_path)["file_ending"]
    if folds is None:
        vals = sorted(glob.glob(os.path.join(results_folder, "fold_*", "validation")))
    else:
        vals = [os.path.join(results_folder, f"fold_{f}", "validation") for f in folds]
        absent = [v for v in vals if not os.path.isdir(v)]
        if absent:
            raise FileNotFoundError(f"validation folder(s) not found: {', '.join(absent)}")
    if not vals:
        raise FileNotFoundError(f"no fold_*/validation folder in {results_folder}")
    gt_folder = reference_folder_of_results(results_folder, gt_folder)
    cases: List[Case] = []
    seen: Dict[str, str] = {}
    for v in vals:
        for c in find_cases(v, gt_folder, fe):
            if c.name in seen:
                raise ValueError(f"case {c.name} is predicted in two folds: {seen[c.name]} and {v}")
            seen[c.name] = v
            cases.append(c)
    return cases, dj_path, gt_folder


# ---------------------------------------------------------------------------- apply to a folder
def _apply_case(job) -> Tuple[str, List[Dict[str, int]], bool]:
    name, in_path, out_path, npz_path, reader_cls, pipeline, labels = job
    rw = reader_cls()
    seg, spacing, props, squeezed = read_segmentation(rw, in_path, allowed_label_values(labels), "prediction")
    probs = read_probabilities(npz_path) if npz_path is not None else None
    try:
        out, log = apply_pipeline(seg, pipeline, labels, spacing, probs, source=f"case {name}")
    except PipelineError as e:
        raise PipelineError(f"{in_path}: {e}") from None
    write_segmentation(rw, out, out_path, props, squeezed)
    return name, log, bool(np.any(out != seg))


def apply_pipeline_to_folder(
    input_folder: str,
    output_folder: str,
    pipeline: Union[str, dict],
    dataset_json: Optional[str] = None,
    num_processes: int = 1,
    overwrite: bool = False,
    probabilities_folder: Optional[str] = None,
    progress: bool = True,
) -> Dict[str, object]:
    """Apply a pipeline to every segmentation of a folder.

    Parameters
    ----------
    input_folder : str
        Predicted segmentations (e.g. the output of ``nnUNetv2_predict``).
    output_folder : str
        Where the post-processed segmentations go (same file names). May be ``input_folder``
        (then ``overwrite`` is needed).
    pipeline : str or dict
        Path of a pipeline JSON file, or the pipeline itself.
    dataset_json : str, optional
        The dataset's ``dataset.json`` (default: ``input_folder/dataset.json``, which
        ``nnUNetv2_predict`` writes).
    num_processes : int
        Cases processed in parallel.
    overwrite : bool
        Replace output files that already exist (otherwise that is an error, raised before
        anything is written).
    probabilities_folder : str, optional
        Where the ``<case>.npz`` probabilities are (default ``input_folder``); only read when
        the pipeline needs them.
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict with ``files`` (output paths), ``changed`` (cases whose segmentation changed) and
    ``steps`` (per step: ``cases_changed``, ``removed``, ``added`` voxels summed over cases).
    """
    from tqdm import tqdm

    if num_processes < 1:
        raise ValueError(f"num_processes must be at least 1, got {num_processes}")
    source = pipeline if isinstance(pipeline, str) else "pipeline"
    pipeline = load_pipeline(pipeline) if isinstance(pipeline, str) else validate_pipeline(pipeline)
    dj_path = dataset_json or os.path.join(input_folder, "dataset.json")
    if not os.path.isfile(dj_path):
        raise FileNotFoundError(f"dataset.json not found: {dj_path} (pass the dataset's dataset.json)")
    dj = load_dataset_json(dj_path)
    labels = DatasetLabels.from_dataset_json(dj)
    resolve_steps(pipeline, labels, source)  # bad class names etc. fail before any work
    cases = find_cases(input_folder, None, dj["file_ending"], probabilities_folder)
    if needs_probabilities(pipeline):
        missing = [c.name + ".npz" for c in cases if c.npz is None]
        if missing:
            raise FileNotFoundError(
                f"{source} needs the saved probabilities, but {len(missing)} case(s) have no .npz in "
                f"{probabilities_folder or input_folder}: {', '.join(missing[:5])}")
    else:
        cases = [c._replace(npz=None) for c in cases]
    names = [os.path.basename(c.pred) for c in cases]
    targets = [os.path.join(output_folder, n) for n in names]
    existing = [t for t in targets if os.path.exists(t)]
    if existing and not overwrite:
        raise FileExistsError(f"{len(existing)} output file(s) exist, e.g. {existing[0]} "
                              "(use overwrite to replace them)")
    reader_cls = reader_writer_class(dj, cases[0].pred, os.path.join(input_folder, "plans.json"))
    os.makedirs(output_folder, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".postprocess-", dir=output_folder)
    jobs = [(c.name, c.pred, os.path.join(tmp, n), c.npz, reader_cls, pipeline, labels)
            for c, n in zip(cases, names)]
    logs: Dict[str, List[Dict[str, int]]] = {}
    changed: List[str] = []
    try:
        bar = tqdm(total=len(jobs), desc="post-processing", unit="case", disable=not progress)
        if num_processes == 1:
            results = map(_apply_case, jobs)
            for name, log, ch in results:
                logs[name] = log
                changed += [name] if ch else []
                bar.update()
        else:
            with multiprocessing.get_context("spawn").Pool(num_processes) as pool:
                for name, log, ch in pool.imap_unordered(_apply_case, jobs):
                    logs[name] = log
                    changed += [name] if ch else []
                    bar.update()
        bar.close()
        for n, t in zip(names, targets):
            os.replace(os.path.join(tmp, n), t)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # the stock tools look for these beside the segmentations
    if os.path.abspath(output_folder) != os.path.abspath(input_folder):
        for extra in ("dataset.json", "plans.json"):
            src = os.path.join(input_folder, extra) if extra == "plans.json" else dj_path
            dst = os.path.join(output_folder, extra)
            if os.path.isfile(src) and not os.path.exists(dst):
                shutil.copyfile(src, dst)
    steps = []
    for i, step in enumerate(pipeline["steps"]):
        per = [logs[c.name][i] for c in cases]
        steps.append({"step": i, "op": step["op"], "classes": step.get("classes"),
                      "cases_changed": sum(1 for p in per if p["removed"] or p["added"]),
                      "removed": sum(p["removed"] for p in per), "added": sum(p["added"] for p in per)})
    return {"files": targets, "changed": sorted(changed), "steps": steps}
