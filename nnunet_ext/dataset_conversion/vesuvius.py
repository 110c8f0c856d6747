"""Vesuvius Challenge – Surface Detection (Kaggle) → nnU-Net.

Raw layout::

    train.csv, test.csv              columns id,scroll_id (ids are unpadded integers: read as strings)
    train_images/<id>.tif            multi-page (Z, Y, X) uint8, LZW-compressed
    train_labels/<id>.tif            uint8: 0 background, 1 papyrus surface, 2 unlabeled
    test_images/<id>.tif

Rows whose files do not exist (deprecated volumes) are skipped and listed in the report. Label 2 becomes
nnU-Net's ``ignore`` label; images and labels are copied byte for byte (nnU-Net's ``Tiff3DIO`` reads LZW
through ``imagecodecs``) and get ``<id>.json`` spacing sidecars ([1, 1, 1]: the data carry no spacing)
in ``imagesTr``, ``labelsTr`` and ``imagesTs``.
"""
from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np

from .errors import ConversionError, Problems
from .io import check_labels, label_count_dict
from .tiff_io import read_tiff
from .report import CaseResult, ConversionReport
from .writer import CaseSpec, write_dataset

LABELS = {"background": 0, "surface": 1, "ignore": 2}
SPACING = [1.0, 1.0, 1.0]


def _read_ids(csv_path: str) -> list[tuple[str, str]]:
    try:
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ConversionError(csv_path, f"unreadable csv ({e})") from None
    if rows and "id" not in rows[0]:
        raise ConversionError(csv_path, f"csv has no 'id' column (columns: {list(rows[0])})")
    return [(r["id"].strip(), (r.get("scroll_id") or "").strip()) for r in rows if r.get("id", "").strip()]


def find_vesuvius_cases(source: str | os.PathLike, include_test: bool = True) -> tuple[list[CaseSpec], list[str]]:
    """List training (and test) cases; returns ``(cases, skipped)``.

    A csv row without any files is skipped (deprecated volume); a training image without its label
    (or the reverse) raises :class:`ConversionError`.
    """
    source = os.fspath(source)
    if not os.path.isdir(source):
        raise ConversionError(source, "source folder does not exist")
    train_csv = os.path.join(source, "train.csv")
    if not os.path.isfile(train_csv):
        raise ConversionError(train_csv, "missing: not a Vesuvius Surface Detection folder")
    cases, skipped = [], []
    problems = Problems()
    for cid, scroll in _read_ids(train_csv):
        img = os.path.join(source, "train_images", f"{cid}.tif")
        lab = os.path.join(source, "train_labels", f"{cid}.tif")
        if not os.path.lexists(img) and not os.path.lexists(lab):
            skipped.append(f"train.csv id {cid}: no image or label file (deprecated volume)")
            continue
        ok_img = problems.check_file(img, "missing image for existing label")
        ok_lab = problems.check_file(lab, "missing label file")
        if ok_img and ok_lab:
            cases.append(CaseSpec(cid, (img,), lab, group=scroll or None))
    problems.raise_if_any(source)
    test_csv = os.path.join(source, "test.csv")
    if include_test and os.path.isfile(test_csv):
        for cid, scroll in _read_ids(test_csv):
            img = os.path.join(source, "test_images", f"{cid}.tif")
            if os.path.isfile(img):
                cases.append(CaseSpec(cid, (img,), None, group=scroll or None))
            else:
                skipped.append(f"test.csv id {cid}: no image file")
    if not any(c.label for c in cases):
        raise ConversionError(os.path.join(source, "train_images"), "no training volumes found for the ids in train.csv")
    return cases, skipped


def _write_sidecar(folder: str, case_id: str) -> None:
    with open(os.path.join(folder, f"{case_id}.json"), "w") as f:
        json.dump({"spacing": SPACING}, f)


def convert_vesuvius_case(case: CaseSpec, images_dir: str, labels_dir: str) -> CaseResult:
    """Validate one volume (3D, uint8, label values 0/1/2, same shape) and copy it with sidecars."""
    img = read_tiff(case.images[0], "image")
    if img.ndim != 3:
        raise ConversionError(case.images[0], f"expected a 3D (Z, Y, X) stack, got shape {img.shape}")
    if img.dtype != np.uint8:
        raise ConversionError(case.images[0], f"expected uint8 intensities, got {img.dtype}")
    shutil.copyfile(case.images[0], os.path.join(images_dir, f"{case.case_id}_0000.tif"))
    _write_sidecar(images_dir, case.case_id)
    nbytes = os.path.getsize(case.images[0])
    counts = {}
    if case.label is not None:
        lab = read_tiff(case.label, "label")
        if lab.shape != img.shape:
            raise ConversionError(case.label, f"label shape {lab.shape} does not match image "
                                              f"{os.path.basename(case.images[0])} shape {img.shape}")
        values, n = check_labels(lab, LABELS.values(), case.label)
        out = os.path.join(labels_dir, f"{case.case_id}.tif")
        if lab.dtype == np.uint8:
            shutil.copyfile(case.label, out)
        else:
            import tifffile
            tifffile.imwrite(out, lab.astype(np.uint8), photometric="minisblack", compression="zlib")
        _write_sidecar(labels_dir, case.case_id)
        counts = label_count_dict(values, n)
        nbytes += os.path.getsize(case.label)
    return CaseResult(case.case_id, tuple(SPACING), tuple(img.shape), counts, is_test=case.label is None,
                      bytes_read=nbytes)


def convert_vesuvius(source: str | os.PathLike, dataset_id: int, *, dataset_name: str = "VesuviusSurface",
                     raw_root: str | os.PathLike | None = None, overwrite: bool = False, num_processes: int = 1,
                     include_test: bool = True, n_folds: int | None = None, seed: int = 12345,
                     group_by_scroll: bool = False, verify: bool = True, progress: bool = True) -> ConversionReport:
    """Convert the Kaggle Vesuvius Surface Detection folder into ``DatasetNNN_VesuviusSurface``.

    Parameters
    ----------
    source : path
        Folder with ``train.csv`` and ``train_images/``, ``train_labels/`` (``test.csv``, ``test_images/``).
    include_test : bool
        Also convert ``test_images`` into ``imagesTs``.
    n_folds, seed, group_by_scroll : optional
        Write ``splits_final.json``; ``group_by_scroll`` keeps each scroll in one fold.
    Other parameters are those of :func:`~nnunet_ext.dataset_conversion.writer.write_dataset`.
    """
    if group_by_scroll and not n_folds:
        raise ConversionError(None, "group_by_scroll (--group-by-scroll) groups the folds of splits_final.json: "
                                    "give n_folds (--folds K) too")
    cases, skipped = find_vesuvius_cases(source, include_test)
    dataset_json = dict(
        channel_names={0: "CT"}, labels=LABELS, file_ending=".tif", overwrite_image_reader_writer="Tiff3DIO",
        dataset_name="Vesuvius Challenge - Surface Detection",
        reference="https://www.kaggle.com/competitions/vesuvius-challenge-surface-detection",
        license="see the competition rules", converted_by="nnunet-ext",
        description="X-ray CT of carbonised papyrus scrolls; label 2 (unlabeled) is nnU-Net's ignore label.")
    return write_dataset(cases, convert_vesuvius_case, dataset_id=dataset_id, dataset_name=dataset_name,
                         dataset_json=dataset_json, raw_root=raw_root, overwrite=overwrite,
                         num_processes=num_processes, verify=verify, n_folds=n_folds, seed=seed,
                         group_folds=group_by_scroll, group_name="scroll", spacing_axes="z, y, x (voxels)", skipped=skipped,
                         source=os.fspath(source), label_names={0: "background", 1: "surface", 2: "ignore"},
                         progress=progress, workers="threads")
