"""BraTS 2021 / 2023 / 2024 → nnU-Net (region-based for 2021 and 2023, plain labels for 2024).

Raw layouts::

    2021:       BraTS2021_XXXXX/BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii.gz     labels 1, 2, 4
    2023/2024:  BraTS-GLI-NNNNN-TTT/BraTS-GLI-NNNNN-TTT-{t1n,t1c,t2w,t2f,seg}.nii.gz
                (also MEN, MET, PED, SSA, ...; TTT = timepoint of patient BraTS-GLI-NNNNN)
                2023 labels 1 NETC, 2 SNFH, 3 ET; 2024 adds 4 resection cavity

2021 is converted exactly as nnU-Net's own ``Dataset137_BraTS21`` script does it (channels
t1, t1ce, t2, flair; labels 4→3, 2→1, 1→2; regions whole tumor (1,2,3), tumor core (2,3), enhancing
tumor (3), ``regions_class_order`` (1, 2, 3)). 2023 keeps the labels and declares tumor core as
(1, 3) with ``regions_class_order`` (2, 1, 3), the order under which region predictions paint back
into the original labels. 2024 is trained on plain labels 0..4 as nnU-Net's Dataset226 does.
Images are validated (readable, finite, same grid as the segmentation) and then copied byte for byte.
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from functools import partial

import numpy as np

from .errors import ConversionError, Problems
from .io import check_labels, check_same_grid, inspect_nifti, label_count_dict, read_nifti, write_nifti_like
from .report import CaseResult, ConversionReport
from .writer import CaseSpec, write_dataset


@dataclass(frozen=True)
class BratsConvention:
    """File naming and label conventions of one BraTS edition."""

    year: int
    case_pattern: str
    separator: str
    modalities: tuple
    raw_labels: tuple
    to_nnunet: dict | None  # raw label -> label in labelsTr (None: unchanged)
    labels: dict
    regions_class_order: tuple | None
    channel_names: dict
    label_names: dict  # label in labelsTr -> name, for the report

    def patient(self, case_id: str) -> str:
        """Patient of a scan: ``BraTS-GLI-00012-001`` → ``BraTS-GLI-00012`` (2021: the case itself)."""
        return case_id if self.year == 2021 else case_id.rsplit("-", 1)[0]


CONVENTIONS = {
    2021: BratsConvention(
        2021, r"BraTS2021_\d+", "_", ("t1", "t1ce", "t2", "flair"), (0, 1, 2, 4), {0: 0, 1: 2, 2: 1, 4: 3},
        {"background": 0, "whole tumor": (1, 2, 3), "tumor core": (2, 3), "enhancing tumor": (3,)}, (1, 2, 3),
        {0: "T1", 1: "T1ce", 2: "T2", 3: "Flair"}, {0: "background", 1: "edema", 2: "NCR/NET", 3: "enhancing"}),
    2023: BratsConvention(
        2023, r"BraTS-[A-Za-z]+-\d{5}-\d{3}", "-", ("t1n", "t1c", "t2w", "t2f"), (0, 1, 2, 3), None,
        {"background": 0, "whole tumor": (1, 2, 3), "tumor core": (1, 3), "enhancing tumor": (3,)}, (2, 1, 3),
        {0: "T1", 1: "T1C", 2: "T2W", 3: "T2F"}, {0: "background", 1: "NETC", 2: "SNFH", 3: "ET"}),
    2024: BratsConvention(
        2024, r"BraTS-[A-Za-z]+-\d{5}-\d{3}", "-", ("t1n", "t1c", "t2w", "t2f"), (0, 1, 2, 3, 4), None,
        {"background": 0, "NETC": 1, "SNFH": 2, "ET": 3, "RC": 4}, None,
        {0: "T1", 1: "T1C", 2: "T2W", 3: "T2F"},
        {0: "background", 1: "NETC", 2: "SNFH", 3: "ET", 4: "resection cavity"}),
}


def get_convention(year: int) -> BratsConvention:
    """The :class:`BratsConvention` of ``year`` (2021, 2023 or 2024)."""
    try:
        return CONVENTIONS[int(year)]
    except (KeyError, ValueError, TypeError):
        raise ConversionError(None, f"unsupported BraTS year {year!r}; choose one of {sorted(CONVENTIONS)}") from None


def raw_to_nnunet_labels(seg: np.ndarray, year: int) -> np.ndarray:
    """Map raw BraTS label values to the labels written into ``labelsTr`` (uint8).

    Values must already be validated. For 2021: 1→2, 2→1, 4→3 (nnU-Net's Dataset137 convention).

    >>> raw_to_nnunet_labels(np.array([0, 1, 2, 4]), 2021).tolist()
    [0, 2, 1, 3]
    """
    conv = get_convention(year)
    if conv.to_nnunet is None:
        return seg.astype(np.uint8)
    lut = np.zeros(max(conv.to_nnunet) + 1, dtype=np.uint8)
    for k, v in conv.to_nnunet.items():
        lut[k] = v
    out = np.zeros(seg.shape, dtype=np.uint8)
    foreground = seg != 0  # a tumour is a few percent of the volume: look up only its voxels
    out[foreground] = lut[seg[foreground].astype(np.intp)]
    return out


def detect_brats_year(source: str | os.PathLike) -> tuple[int, str]:
    """The BraTS edition of a training folder from its layout: ``(year, how it was recognised)``.

    ``BraTS2021_XXXXX`` case folders are 2021; ``BraTS-GLI-XXXXX-XXX`` folders are 2023, or 2024 when
    some segmentation holds label 4 (resection cavity of the post-treatment cases; segmentations are
    read until one does). Raises :class:`ConversionError` when the folder holds no case folders or
    both layouts (then ``year`` must be given).
    """
    source = os.fspath(source)
    if not os.path.isdir(source):
        raise ConversionError(source, "source folder does not exist")
    entries = sorted(n for n in os.listdir(source) if os.path.isdir(os.path.join(source, n)))
    old = [n for n in entries if re.fullmatch(CONVENTIONS[2021].case_pattern, n)]
    new = [n for n in entries if re.fullmatch(CONVENTIONS[2023].case_pattern, n)]
    if old and new:
        raise ConversionError(source, f"cannot tell the BraTS year: the folder holds both 2021 case folders "
                                      f"({old[0]}) and 2023/2024 ones ({new[0]}); pass --year")
    if old:
        return 2021, f"case folders named like {old[0]}"
    if not new:
        raise ConversionError(source, "no BraTS case folders (like BraTS2021_00000 or BraTS-GLI-00000-000) found; "
                                      "cannot tell the year")
    from .nifti_scan import scan_nifti

    for n in new:
        seg = os.path.join(source, n, f"{n}-seg.nii.gz")
        try:
            scan = scan_nifti(seg, "label", keep_voxels=True)
        except (ConversionError, OSError):
            continue  # the conversion itself reports a damaged or missing file
        voxels = scan.voxels
        if voxels is None:
            try:
                voxels = read_nifti(seg, "label").array
            except ConversionError:
                continue
        if np.any(voxels == 4):
            return 2024, f"case folders named like {n}, and {os.path.basename(seg)} holds label 4 (resection cavity)"
    return 2023, (f"case folders named like {new[0]} and no segmentation with label 4 (2024's resection cavity); "
                  f"pass --year 2024 if these are 2024 data")


def find_brats_cases(source: str | os.PathLike, year: int, labelled: bool = True) -> list[CaseSpec]:
    """List the case folders of a BraTS training (``labelled``) or validation/test folder.

    Raises :class:`ConversionError` for a missing/empty source, a folder without matching case folders,
    and a case folder that lacks a modality (or, when ``labelled``, its segmentation).
    """
    conv = get_convention(year)
    source = os.fspath(source)
    if not os.path.isdir(source):
        raise ConversionError(source, "source folder does not exist")
    pat = re.compile(rf"^{conv.case_pattern}$")
    names = sorted(n for n in os.listdir(source) if pat.match(n) and os.path.isdir(os.path.join(source, n)))
    if not names:
        other = [y for y, c in CONVENTIONS.items()
                 if c.case_pattern != conv.case_pattern
                 and any(re.match(rf"^{c.case_pattern}$", n) for n in os.listdir(source))]
        hint = f" (the folders look like BraTS {other[0]})" if other else ""
        example = "BraTS2021_00000" if year == 2021 else "BraTS-GLI-00000-000"
        raise ConversionError(source, f"no BraTS {year} case folders (like {example}) found{hint}")
    cases = []
    problems = Problems()
    for n in names:
        d = os.path.join(source, n)
        images = tuple(os.path.join(d, f"{n}{conv.separator}{m}.nii.gz") for m in conv.modalities)
        for f, m in zip(images, conv.modalities):
            problems.check_file(f, f"missing modality '{m}'")
        label = os.path.join(d, f"{n}{conv.separator}seg.nii.gz")
        if labelled:
            problems.check_file(label, "missing label file")
        cases.append(CaseSpec(n, images, label if labelled else None, group=conv.patient(n)))
    problems.raise_if_any(source)
    return cases


def convert_brats_case(case: CaseSpec, images_dir: str, labels_dir: str, *, year: int) -> CaseResult:
    """Validate one BraTS case and write its four channels and (remapped) segmentation."""
    conv = get_convention(year)
    vols = []
    for f in case.images:
        v = inspect_nifti(f, "image")  # images are copied as they are, so their voxels are not kept
        if len(v.shape) != 3:
            raise ConversionError(f, f"expected a 3D volume, got shape {v.shape}")
        if vols:
            check_same_grid(vols[0], v, "image")
        vols.append(v)
    counts = {}
    nbytes = sum(os.path.getsize(f) for f in case.images)
    if case.label is not None:
        seg = read_nifti(case.label, "label")
        check_same_grid(vols[0], seg, "label")
        values, n = check_labels(seg.array, conv.raw_labels, case.label)
        out = raw_to_nnunet_labels(seg.array, year)
        write_nifti_like(out, seg, os.path.join(labels_dir, f"{case.case_id}.nii.gz"))
        mapping = conv.to_nnunet or {}
        counts = label_count_dict([mapping.get(int(v), int(v)) for v in values], n)
        nbytes += os.path.getsize(case.label)
    for i, f in enumerate(case.images):
        shutil.copyfile(f, os.path.join(images_dir, f"{case.case_id}_{i:04d}.nii.gz"))
    return CaseResult(case.case_id, vols[0].header_spacing, tuple(vols[0].shape[::-1]), counts, is_test=case.label is None, bytes_read=nbytes)


def convert_brats(source: str | os.PathLike, dataset_id: int, *, year: int | None = None, dataset_name: str | None = None,
                  test_source: str | os.PathLike | None = None, raw_root: str | os.PathLike | None = None,
                  overwrite: bool = False, num_processes: int = 1, n_folds: int | None = None, seed: int = 12345,
                  verify: bool = True, progress: bool = True) -> ConversionReport:
    """Convert a BraTS training folder (and optionally an unlabelled one) into ``DatasetNNN_BraTS<year>``.

    Parameters
    ----------
    source : path
        Folder of case folders, each with four modalities and a segmentation.
    year : int, optional
        2021, 2023 or 2024 (sets naming, label remapping and regions); detected from the layout when
        not given (:func:`detect_brats_year`).
    test_source : path, optional
        Folder of unlabelled case folders (validation data) → ``imagesTs``.
    n_folds, seed : optional
        Write ``splits_final.json``; folds are grouped by patient, so all timepoints of one patient
        land in the same fold.
    Other parameters are those of :func:`~nnunet_ext.dataset_conversion.writer.write_dataset`.
    """
    if year is None:
        year, _ = detect_brats_year(source)
    conv = get_convention(year)
    cases = find_brats_cases(source, year, labelled=True)
    if test_source is not None:
        cases += find_brats_cases(test_source, year, labelled=False)
    dataset_json = dict(
        channel_names=dict(conv.channel_names), labels=dict(conv.labels), file_ending=".nii.gz",
        regions_class_order=conv.regions_class_order, dataset_name=f"BraTS {year}",
        reference="https://www.synapse.org/brats", license="see the BraTS challenge data terms",
        converted_by="nnunet-ext", brats_year=int(year))
    return write_dataset(cases, partial(convert_brats_case, year=int(year)), dataset_id=dataset_id,
                         dataset_name=dataset_name or f"BraTS{year}", dataset_json=dataset_json, raw_root=raw_root,
                         overwrite=overwrite, num_processes=num_processes, verify=verify, n_folds=n_folds,
                         seed=seed, group_folds=True, spacing_axes="x, y, z (mm, NIfTI header order)",
                         source=os.fspath(source), label_names=conv.label_names, progress=progress,
                         workers="threads")
