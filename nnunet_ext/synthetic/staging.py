"""Write generated cases as an nnU-Net raw dataset, staged in a temporary folder and moved into place.

Shared by the synthetic generators (:mod:`~nnunet_ext.synthetic.fading`, :mod:`~nnunet_ext.synthetic.sheets`,
:mod:`~nnunet_ext.synthetic.nested`): the first ``n_train`` cases go to ``imagesTr`` / ``labelsTr``, the rest
to ``imagesTs`` / ``labelsTs`` (held-out test cases with their references). 2D cases (``(Y, X)`` arrays)
are written as one-slice volumes with z spacing 999, nnU-Net's convention for 2D data in NIfTI.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Tuple

import numpy as np


def write_raw_dataset(raw_root, dataset_id: int, name: str, make_case: Callable[[int], Tuple[np.ndarray, np.ndarray]],
                      n_train: int, n_test: int, spacing, dataset_json: dict, overwrite: bool = False,
                      prefix: str = "case") -> Path:
    """Write ``Dataset{id:03d}_{name}`` into ``raw_root`` and return its folder.

    Parameters
    ----------
    raw_root : path
        The ``nnUNet_raw`` folder.
    dataset_id : int
        1–999; a folder ``Dataset{id:03d}_*`` that exists already is an error unless ``overwrite``.
    name : str
        Dataset name.
    make_case : callable
        ``make_case(i) -> (image, label)``: arrays of the same shape, ``(Y, X)`` or ``(Z, Y, X)``, one
        image channel (written as ``<prefix>_{i:03d}_0000.nii.gz``).
    n_train, n_test : int
        Cases 0 … n_train − 1 are training cases, the next ``n_test`` held-out test cases.
    spacing : tuple
        Voxel spacing in array-axis order (2 or 3 entries, matching the case arrays).
    dataset_json : dict
        ``channel_names``, ``labels`` (and ``regions_class_order``, ``description`` …); ``numTraining``,
        ``file_ending`` and ``name`` are filled in.
    overwrite : bool
        Replace an existing dataset with the same id (only once the new one is complete).
    """
    from nnunet_ext.synthetic.raw_dataset import _write_nifti

    if not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset_id must be in 1..999, got {dataset_id}")
    if n_train < 1 or n_test < 0:
        raise ValueError(f"need n_train >= 1 and n_test >= 0, got {n_train}, {n_test}")
    raw_root = Path(raw_root)
    target = raw_root / f"Dataset{dataset_id:03d}_{name}"
    clashing = sorted(raw_root.glob(f"Dataset{dataset_id:03d}_*")) if raw_root.is_dir() else []
    if clashing and not overwrite:
        raise FileExistsError(f"{clashing[0]} already exists (dataset id {dataset_id} is taken); pass "
                              f"overwrite=True to replace it or choose another id")
    raw_root.mkdir(parents=True, exist_ok=True)
    spacing = tuple(float(s) for s in spacing)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=raw_root))
    try:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (staging / sub).mkdir()
        for i in range(n_train + n_test):
            image, label = make_case(i)
            if image.shape != label.shape or image.ndim != len(spacing):
                raise ValueError(f"case {i}: image {image.shape}, label {label.shape}, spacing {spacing} disagree")
            file_spacing = spacing
            if image.ndim == 2:
                image, label, file_spacing = image[None], label[None], (999.0, *spacing)
            train = i < n_train
            stem = f"{prefix}_{i:03d}"
            _write_nifti(image, file_spacing, staging / ("imagesTr" if train else "imagesTs") / f"{stem}_0000.nii.gz")
            _write_nifti(label, file_spacing, staging / ("labelsTr" if train else "labelsTs") / f"{stem}.nii.gz")
        (staging / "dataset.json").write_text(json.dumps(
            {**dataset_json, "numTraining": n_train, "file_ending": ".nii.gz", "name": name}, indent=2))
        for old in clashing:
            shutil.rmtree(old)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


__all__ = ["write_raw_dataset"]
