"""MiniVess (two-photon rodent cerebrovasculature, Sci Data 2023) → nnU-Net.

Raw layout::

    raw/mv01.nii.gz ... raw/mv70.nii.gz     uint16 NIfTI, shape (512, 512, Z), Z in 5..110
    seg/mv01_y.nii.gz ...                   uint8 labels {0, 1}
    json/mv01.json ...                      per-volume metadata (schema undocumented; kept as is)

Spacing comes from the NIfTI header (sform, units µm); the converter copies the images byte for
byte (so the header stays exactly as published), rewrites the labels as uint8 on the image's grid,
keeps the JSON files under ``source_metadata/`` and flags spacing outliers such as mv02 (4.97 µm
in-plane against a ~1 µm median).
"""
from __future__ import annotations

import functools
import os
import re
import shutil

from .errors import ConversionError, Problems, absent_file_problem
from .io import check_labels, check_same_grid, inspect_nifti, label_count_dict, read_nifti, write_nifti_like
from .report import CaseResult, ConversionReport
from .writer import CaseSpec, write_dataset

LABELS = {"background": 0, "vessel": 1}
_CASE = re.compile(r"^(mv\d+)\.nii\.gz$")
_SEG = re.compile(r"^(mv\d+)_y\.nii\.gz$")


def find_minivess_cases(source: str | os.PathLike) -> list[CaseSpec]:
    """List the MiniVess cases in ``source`` (the extracted archive root).

    Every ``raw/mvXX.nii.gz`` needs ``seg/mvXX_y.nii.gz`` and vice versa; missing partners raise one
    :class:`ConversionError` naming every expected file.
    """
    source = os.fspath(source)
    if not os.path.isdir(source):
        raise ConversionError(source, "source folder does not exist")
    raw_dir, seg_dir, json_dir = (os.path.join(source, d) for d in ("raw", "seg", "json"))
    for d in (raw_dir, seg_dir):
        if not os.path.isdir(d):
            raise ConversionError(d, "missing folder: not a MiniVess archive root (expected raw/ and seg/)")
    raws = {m.group(1) for f in os.listdir(raw_dir) if (m := _CASE.match(f))}
    segs = {m.group(1) for f in os.listdir(seg_dir) if (m := _SEG.match(f))}
    if not raws and not segs:
        raise ConversionError(raw_dir, "no mvXX.nii.gz volumes found")
    problems = Problems()
    for case in sorted(segs | raws):
        if case not in raws:
            problems.add(os.path.join(raw_dir, f"{case}.nii.gz"),
                         absent_file_problem(os.path.join(raw_dir, f"{case}.nii.gz"),
                                             f"missing image for existing label seg/{case}_y.nii.gz"))
        if case not in segs:
            problems.add(os.path.join(seg_dir, f"{case}_y.nii.gz"),
                         absent_file_problem(os.path.join(seg_dir, f"{case}_y.nii.gz"), "missing label file"))
    problems.raise_if_any(source)
    cases = []
    for case in sorted(raws):
        meta_file = os.path.join(json_dir, f"{case}.json")
        cases.append(CaseSpec(case, (os.path.join(raw_dir, f"{case}.nii.gz"),), os.path.join(seg_dir, f"{case}_y.nii.gz"),
                              meta={"json": meta_file} if os.path.isfile(meta_file) else {}))
    return cases


def convert_minivess_case(case: CaseSpec, images_dir: str, labels_dir: str) -> CaseResult:
    """Validate one MiniVess volume and write ``mvXX_0000.nii.gz`` / ``mvXX.nii.gz``."""
    img = inspect_nifti(case.images[0], "image")  # copied byte for byte: voxels checked, not kept
    if len(img.shape) != 3:
        raise ConversionError(img.path, f"expected a 3D volume, got shape {img.shape}")
    seg = read_nifti(case.label, "label")
    check_same_grid(img, seg, "label")
    values, counts = check_labels(seg.array, LABELS.values(), seg.path)
    shutil.copyfile(img.path, os.path.join(images_dir, f"{case.case_id}_0000.nii.gz"))
    write_nifti_like(seg.array, img, os.path.join(labels_dir, f"{case.case_id}.nii.gz"))
    return CaseResult(case.case_id, img.header_spacing, tuple(img.shape[::-1]),  # header order x, y, z (µm)
                      label_count_dict(values, counts),
                      bytes_read=os.path.getsize(img.path) + os.path.getsize(seg.path))


def convert_minivess(source: str | os.PathLike, dataset_id: int, *, dataset_name: str = "MiniVess",
                     raw_root: str | os.PathLike | None = None, overwrite: bool = False, num_processes: int = 1,
                     n_folds: int | None = 3, seed: int = 42, verify: bool = True,
                     progress: bool = True) -> ConversionReport:
    """Convert a MiniVess archive into ``DatasetNNN_MiniVess``.

    Parameters
    ----------
    source : path
        Extracted archive root holding ``raw/``, ``seg/`` (and ``json/``).
    dataset_id : int
        nnU-Net dataset id.
    n_folds, seed : int
        ``splits_final.json`` folds (3 folds with seed 42 reproduce the published experiments' setup);
        ``n_folds=None`` writes no splits.
    Other parameters are those of :func:`~nnunet_ext.dataset_conversion.writer.write_dataset`.

    Returns
    -------
    ConversionReport
        Spacings are reported in NIfTI header order (x, y, z), in µm.
    """
    cases = find_minivess_cases(source)
    extra = {f"source_metadata/{c.case_id}.json": c.meta["json"] for c in cases if "json" in c.meta}
    dataset_json = dict(
        channel_names={0: "two_photon"}, labels=LABELS, file_ending=".nii.gz", dataset_name="MiniVess",
        reference="https://doi.org/10.1038/s41597-023-02048-8",
        license="CC BY-NC-SA 4.0 (see 'Licence (CCBY-NC-SA).pdf' in the archive)",
        description="Two-photon microscopy of rodent cerebrovasculature; spacing in micrometres.",
        converted_by="nnunet-ext")
    return write_dataset(cases, functools.partial(convert_minivess_case), dataset_id=dataset_id,
                         dataset_name=dataset_name, dataset_json=dataset_json, raw_root=raw_root,
                         overwrite=overwrite, num_processes=num_processes, verify=verify, n_folds=n_folds,
                         seed=seed, spacing_axes="x, y, z (µm, NIfTI header order)", extra_files=extra,
                         source=os.fspath(source), progress=progress, workers="threads")
