"""Reading and validating raw NIfTI files and label maps (TIFF and SVS: :mod:`.tiff_io`).

Every reader here turns low-level failures (truncated or corrupt gzip streams, invalid headers,
unknown formats) into a :class:`~nnunet_ext.dataset_conversion.errors.ConversionError` that names
the file. Labels are validated *before* they are cast: raw datasets do not always store them in the
dtype the documentation promises.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from .errors import ConversionError, absent_file_problem
from .nifti_scan import scan_nifti


@dataclass
class Volume:
    """An image array with its geometry.

    ``array`` is in numpy axis order of the reader (SimpleITK: z, y, x; tifffile: page, row, col).
    ``spacing`` is in the same order as ``array``'s axes; ``origin`` and ``direction`` as SimpleITK
    reports them. ``itk_image`` is the SimpleITK image where one was read (``None`` when the voxels
    came from the validation pass), so labels can be written with the image's exact geometry.
    """

    array: np.ndarray
    spacing: tuple
    origin: tuple | None = None
    direction: tuple | None = None
    itk_image: object | None = None
    path: str = ""

    @property
    def shape(self) -> tuple:
        return tuple(self.array.shape)


def require_file(path: str | os.PathLike, what: str) -> str:
    """Return ``path`` as a string, or raise if it is not an existing non-empty file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConversionError(path, absent_file_problem(path, f"missing {what}"))
    if os.path.getsize(path) == 0:
        raise ConversionError(path, f"empty file ({what})")
    return path


def _sitk_error_detail(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return next((ln for ln in lines if "ERROR" in ln), lines[-1] if lines else "")[:300]


def read_nifti(path: str | os.PathLike, what: str = "image") -> Volume:
    """Validate a NIfTI file (:func:`~nnunet_ext.dataset_conversion.nifti_scan.scan_nifti`) and read it
    with SimpleITK, as nnU-Net's default reader does.

    Returns a :class:`Volume` whose ``spacing`` is in numpy (z, y, x) order. Raises
    :class:`ConversionError` for missing, empty, truncated, corrupt or unreadable files and for
    NaN/infinite intensities.
    """
    import SimpleITK as sitk

    path = require_file(path, what)
    scan = scan_nifti(path, what, keep_voxels=True)
    if scan.voxels is not None:  # decoded once already: only the geometry is needed from SimpleITK
        info = _read_header_info(path, what)
        if info.shape == scan.voxels.shape:
            return Volume(scan.voxels, info.spacing, info.origin, info.direction, None, path)
    try:
        img = sitk.ReadImage(path)
        arr = sitk.GetArrayFromImage(img)
    except Exception as e:  # SimpleITK raises plain RuntimeError with a C++ trace
        raise ConversionError(path, f"unreadable {what} ({_sitk_error_detail(e)})") from None
    return Volume(arr, tuple(float(s) for s in img.GetSpacing()[::-1]), tuple(img.GetOrigin()),
                  tuple(img.GetDirection()), img, path)


@dataclass
class NiftiInfo:
    """Header facts of a NIfTI file whose voxels were checked but not kept (see :func:`inspect_nifti`).

    ``shape`` and ``spacing`` are in numpy (z, y, x) order; ``header_spacing``, ``origin`` and
    ``direction`` as SimpleITK reports them (x, y, z).
    """

    shape: tuple
    spacing: tuple
    header_spacing: tuple
    path: str
    origin: tuple = ()
    direction: tuple = ()


def inspect_nifti(path: str | os.PathLike, what: str = "image") -> NiftiInfo:
    """Validate a NIfTI image without keeping its voxels: cheaper than :func:`read_nifti`.

    One pass checks the file (gzip stream complete, header valid, data section complete,
    no NaN/inf in floating-point data; see :func:`~nnunet_ext.dataset_conversion.nifti_scan.scan_nifti`),
    then SimpleITK reads the header only, so shape and geometry are those nnU-Net will see. Used for
    images that are then copied byte for byte.
    """
    path = require_file(path, what)
    scan_nifti(path, what)
    return _read_header_info(path, what)


def _read_header_info(path: str, what: str) -> NiftiInfo:
    """Shape and geometry as SimpleITK reads them from the header alone."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except Exception as e:
        raise ConversionError(path, f"unreadable {what} ({_sitk_error_detail(e)})") from None
    spacing = tuple(float(s) for s in reader.GetSpacing())
    return NiftiInfo(tuple(int(s) for s in reader.GetSize()[::-1]), spacing[::-1], spacing, path,
                     tuple(reader.GetOrigin()), tuple(reader.GetDirection()))


def check_labels(array: np.ndarray, allowed: Iterable[int], path: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate that a label array holds only ``allowed`` values.

    Returns ``(values, counts)`` of the labels found. Non-integral floats, NaN and values outside the
    allowed set raise :class:`ConversionError`.
    """
    allowed = sorted(int(a) for a in allowed)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ConversionError(path, "label map contains NaN or infinite values")
        if not np.all(np.mod(array, 1) == 0):
            raise ConversionError(path, "label map contains non-integer values")
    elif not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise ConversionError(path, f"label map has unsupported dtype {array.dtype}")
    values, counts = label_histogram(array)
    bad = [v for v in values.tolist() if int(v) not in allowed]
    if bad:
        raise ConversionError(path, f"label values {sorted(int(b) for b in bad)} outside the allowed set {allowed}")
    return values.astype(np.int64), counts.astype(np.int64)


def label_histogram(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted label values of ``array`` and their voxel counts (``np.unique(..., return_counts=True)``).

    Label maps are mostly background, so only the non-zero voxels are gathered and counted (a
    ``bincount`` for uint8/bool); background is ``size - count_nonzero``. Several times faster than
    ``np.unique`` on a full BraTS volume.

    >>> [v.tolist() for v in label_histogram(np.array([[0, 4, 4], [0, 0, 1]], np.uint8))]
    [[0, 1, 4], [3, 1, 2]]
    """
    flat = array.ravel()
    foreground = flat[flat != 0]
    if foreground.dtype == bool:
        foreground = foreground.view(np.uint8)
    if foreground.dtype == np.uint8:
        counts_all = np.bincount(foreground, minlength=256)
        values = np.nonzero(counts_all)[0]
        counts = counts_all[values]
    else:
        values, counts = np.unique(foreground, return_counts=True)
    n_background = flat.size - foreground.size
    if n_background:
        values = np.concatenate([np.zeros(1, values.dtype), values])
        counts = np.concatenate([[n_background], counts])
    order = np.argsort(values, kind="stable")  # negative labels sort before 0
    return values[order], counts[order]


def check_same_grid(ref, other, what: str, rtol: float = 1e-5, atol: float = 1e-8) -> None:
    """Raise if ``other`` does not share shape, spacing, origin and direction with ``ref``
    (:class:`Volume` or :class:`NiftiInfo`).

    The default tolerance is that of nnU-Net's own check (``np.allclose``), so a case accepted here
    is accepted by ``verify_dataset_integrity`` without its origin/direction warnings. Shapes and
    spacings in messages are in NIfTI header order (x, y, z), the order the report uses.
    """
    ref_name = os.path.basename(ref.path)
    if ref.shape != other.shape:
        raise ConversionError(other.path, f"{what} shape (x, y, z) {tuple(other.shape[::-1])} does not match "
                                          f"{ref_name} shape {tuple(ref.shape[::-1])}")
    if not np.allclose(other.spacing, ref.spacing, rtol=rtol, atol=atol):
        raise ConversionError(other.path, f"{what} spacing (x, y, z) {tuple(round(s, 5) for s in other.spacing[::-1])} "
                                          f"does not match {ref_name} spacing "
                                          f"{tuple(round(s, 5) for s in ref.spacing[::-1])}")
    for key in ("origin", "direction"):
        a, b = getattr(other, key, None), getattr(ref, key, None)
        if a and b and (len(a) != len(b) or not np.allclose(a, b, rtol=rtol, atol=atol)):
            raise ConversionError(other.path, f"{what} {key} {tuple(round(float(v), 5) for v in a)} does not match "
                                              f"{ref_name} {key} {tuple(round(float(v), 5) for v in b)}; "
                                              f"the files are not on the same grid (a flipped or shifted "
                                              f"{what} would be written onto the wrong voxels)")


def write_nifti_like(array: np.ndarray, ref: Volume | NiftiInfo, out_path: str, dtype=np.uint8) -> None:
    """Write ``array`` as NIfTI with the geometry (spacing, origin, direction) of ``ref``.

    ``ref`` is a :class:`Volume` (its SimpleITK image) or a :class:`NiftiInfo` (header only); either way
    the result equals ``CopyInformation`` from the image SimpleITK reads.
    """
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(array.astype(dtype, copy=False))
    if getattr(ref, "itk_image", None) is not None:
        img.CopyInformation(ref.itk_image)
    else:
        img.SetSpacing(tuple(ref.spacing[::-1]))
        img.SetOrigin(ref.origin)
        img.SetDirection(ref.direction)
    sitk.WriteImage(img, out_path)


def label_count_dict(values: Sequence[int], counts: Sequence[int]) -> dict[int, int]:
    """``{label: voxel count}`` from the output of :func:`check_labels`."""
    return {int(v): int(c) for v, c in zip(values, counts)}
