"""Soft-skeleton iteration counts chosen from the training labels, per deep-supervision level.

clDice and cbDice thin structures with ``k`` soft erosions; a structure deeper than ``k`` has an empty soft
skeleton and the term is blind to it (missing it entirely costs nothing). The reference code hard-codes
``k`` (3 in 2D, 10 in 3D). Here ``k`` comes from the data: the ridge depths (half-widths, see
:mod:`nnunet_ext.targets.structure_width`) of every foreground class / region in the fold's preprocessed
training labels are pooled, at the resolution of each deep-supervision output (the labels downsampled
exactly as nnU-Net downsamples its targets), and ``k_level`` thins the ``percentile``-th percentile
structure (default 95, capped at ``maximum`` = 25 — the cost of the term grows linearly with ``k``).

The result is written to ``skeleton_iterations.json`` in the fold folder, printed to the training log, and
read back when the run is continued (``--c``), validated (``--val``) or resumed elsewhere, so every epoch
of a run uses the same counts. Explicit overrides, strongest first: the environment variable
``nnunet_ext_skeleton_iterations`` (``"7"``, ``"7,4,2,1"`` one per level, or ``"auto"``), a trainer's
``skeleton_iterations`` class attribute, a term's ``iterations`` option (recipes).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_ext.targets.structure_width import (iterations_from_histogram, nearest_exact_downsample,
                                                ridge_depth_histogram)

__all__ = ["FILE_NAME", "ENVIRONMENT_VARIABLE", "AUTO", "parse_iterations", "derive_iterations",
           "resolve_skeleton_iterations"]

FILE_NAME = "skeleton_iterations.json"
ENVIRONMENT_VARIABLE = "nnunet_ext_skeleton_iterations"
AUTO = "auto"
#: cases read at most (evenly spaced over the sorted training keys): the statistic is stable long before
MAX_CASES = 40


def parse_iterations(value, where: str):
    """``"auto"``, a non-negative int, or a non-empty sequence of them (also as ``"7,4,2"``) → ``"auto"``,
    ``int`` or ``tuple[int, ...]``; anything else raises ``ValueError`` naming ``where``."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == AUTO:
            return AUTO
        parts = [p.strip() for p in text.split(",")]
        if not all(p.isdigit() for p in parts):
            raise ValueError(f"{where}: expected 'auto', a non-negative integer or integers separated by commas "
                             f"(one per deep-supervision level), got {value!r}")
        values = tuple(int(p) for p in parts)
        return values[0] if len(values) == 1 else values
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 for v in items):
        raise ValueError(f"{where}: expected 'auto', a non-negative integer or a list of them (one per "
                         f"deep-supervision level), got {value!r}")
    return tuple(int(v) for v in items) if isinstance(value, (list, tuple)) else int(value)


def _foreground_masks(seg: np.ndarray, classes: Sequence, has_regions: bool):
    """One bool mask per foreground class (labels) or region (regions) of a preprocessed label map."""
    for c in classes:
        yield np.isin(seg, c) if has_regions else seg == c


def derive_iterations(segmentations, classes: Sequence, has_regions: bool, scales: Sequence[Sequence[float]],
                      percentile: float = 95.0, maximum: int = 25) -> dict:
    """Iteration counts per deep-supervision level from label maps.

    Parameters
    ----------
    segmentations : iterable of ndarray
        Label maps ``(*S)`` (nnU-Net's preprocessed ``seg[0]``; values ≤ 0 and the ignore label are
        background here).
    classes : sequence
        Foreground labels (label mode) or the label tuples of every region (region mode).
    has_regions : bool
    scales : sequence of per-axis scale factors
        One entry per deep-supervision output, highest resolution first (``[[1, 1, 1]]`` without DS).

    Returns
    -------
    dict
        ``iterations`` (one int per level), ``histograms`` (ridge-depth counts per level), ``percentile``,
        ``maximum`` and ``cases`` (how many label maps were read).
    """
    histograms = [np.zeros(1, dtype=np.int64) for _ in scales]
    cases = 0
    for seg in segmentations:
        cases += 1
        for level, scale in enumerate(scales):
            small = nearest_exact_downsample(seg, scale) if any(s != 1 for s in scale) else seg
            here = ridge_depth_histogram(_foreground_masks(small, classes, has_regions))
            size = max(here.size, histograms[level].size)
            histograms[level] = np.pad(histograms[level], (0, size - histograms[level].size))
            histograms[level][:here.size] += here
    iterations = [iterations_from_histogram(h, percentile, 1, maximum) for h in histograms]
    return {"iterations": iterations, "histograms": [h.tolist() for h in histograms], "percentile": percentile,
            "maximum": maximum, "cases": cases}


def _training_segmentations(trainer, max_cases: int):
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    folder = trainer.preprocessed_dataset_folder
    if folder is None or not Path(folder).is_dir():
        where = "nnUNet_preprocessed is not set" if folder is None else f"{folder} does not exist"
        raise FileNotFoundError(
            f"choosing the soft-skeleton iteration count from the data needs the preprocessed dataset, but "
            f"{where}; run nnUNetv2_plan_and_preprocess first, or set the count explicitly "
            f"(export {ENVIRONMENT_VARIABLE}=5, or 7,4,2,1 for one value per deep-supervision level)")
    keys, _ = trainer.do_split()
    keys = sorted(keys)
    if len(keys) > max_cases:
        keys = [keys[int(i)] for i in np.linspace(0, len(keys) - 1, max_cases).round()]
    dataset = infer_dataset_class(folder)(folder, keys)
    for key in keys:
        yield np.asarray(dataset.load_case(key)[1][:])[0]


def network_inputs(segmentations, dims: int):
    """The label maps as the network sees them: a 2D configuration trains on single slices (nnU-Net keeps
    its label maps 3D, ``(Z, Y, X)``, one slice for a 2D dataset), so each slice is measured on its own;
    a 3D configuration gets the volumes as they are."""
    for seg in segmentations:
        if dims == 2 and seg.ndim == 3:
            yield from (seg[z] for z in range(seg.shape[0]) if seg[z].any())
        else:
            yield seg


def _level_scales(trainer) -> list[list[float]]:
    dims = len(trainer.configuration_manager.patch_size)
    scales = trainer._get_deep_supervision_scales()
    return [[1.0] * dims] if scales is None else [[float(s) for s in scale] for scale in scales]


def _as_levels(value, n_levels: int) -> tuple[int, ...]:
    values = value if isinstance(value, tuple) else (value,)
    return tuple(values[min(i, len(values) - 1)] for i in range(n_levels))


def resolve_skeleton_iterations(trainer, requested=AUTO) -> tuple[int, ...]:
    """The iteration count of every deep-supervision level of ``trainer``'s run.

    ``requested`` is the trainer's own setting (``"auto"``, an int or one int per level); the environment
    variable overrides it. ``"auto"``: read from ``skeleton_iterations.json`` in the fold folder if the run
    has one, else derived from the fold's training labels and written there. Every decision is printed to
    the training log.
    """
    n_levels = len(_level_scales(trainer))
    record_path = Path(trainer.output_folder) / FILE_NAME
    environment = os.environ.get(ENVIRONMENT_VARIABLE)
    if environment is not None and parse_iterations(environment, ENVIRONMENT_VARIABLE) != AUTO:
        levels = _as_levels(parse_iterations(environment, ENVIRONMENT_VARIABLE), n_levels)
        trainer.print_to_log_file(f"soft-skeleton iterations per deep-supervision level: {list(levels)} "
                                  f"(set by {ENVIRONMENT_VARIABLE})")
        return levels
    requested = parse_iterations(requested, f"{type(trainer).__name__}.skeleton_iterations")
    if requested != AUTO:
        return _as_levels(requested, n_levels)
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        levels = _as_levels(tuple(int(k) for k in record["iterations"]), n_levels)
        trainer.print_to_log_file(f"soft-skeleton iterations per deep-supervision level: {list(levels)} "
                                  f"(as chosen when this run started, {record_path})")
        return levels
    lm = trainer.label_manager
    classes = list(lm.foreground_regions) if lm.has_regions else list(lm.foreground_labels)
    start = time.perf_counter()
    dims = len(trainer.configuration_manager.patch_size)
    record = derive_iterations(network_inputs(_training_segmentations(trainer, MAX_CASES), dims), classes,
                               lm.has_regions,
                               _level_scales(trainer))
    record["seconds"] = round(time.perf_counter() - start, 2)
    levels = tuple(record["iterations"])
    trainer.print_to_log_file(
        f"soft-skeleton iterations per deep-supervision level: {list(levels)} — the {record['percentile']:g}th "
        f"percentile of the structure half-widths (city-block depth along the medial ridge) in "
        f"{record['cases']} training label maps (cases; slices for 2D) of fold {trainer.fold}, capped at {record['maximum']} "
        f"({record['seconds']:.1f} s; override with {ENVIRONMENT_VARIABLE}=N or N1,N2,…)")
    if trainer.local_rank == 0:
        record_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = record_path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(record, indent=1))
        temporary.replace(record_path)
    return levels
