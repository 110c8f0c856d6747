"""Reading and validating raw image files.

Every reader here turns low-level failures (truncated gzip streams, unknown formats, missing codecs)
into a :class:`~nnunet_ext.dataset_conversion.errors.ConversionError` that names the file.
Labels are validated *before* they are cast: raw datasets do not always store them in the dtype the
documentation promises.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from .errors import ConversionError


@dataclass
class Volume:
    """An image array with its geometry.

    ``array`` is in numpy axis order of the reader (SimpleITK: z, y, x; tifffile: page, row, col).
    ``spacing`` is in the same order as ``array``'s axes. ``itk_image`` keeps the SimpleITK image
    (or ``None`` for TIFF/PNG) so labels can be written with the image's exact geometry.
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
        raise ConversionError(path, f"missing {what}")
    if os.path.getsize(path) == 0:
        raise ConversionError(path, f"empty file ({what})")
    return path


def check_gzip_complete(path: str, what: str = "image", chunk: int = 1 << 22) -> None:
    """Raise unless ``path`` is a complete gzip stream.

    SimpleITK reads a truncated ``.nii.gz`` without complaint (the missing voxels come back as
    garbage or zeros), so the stream is decompressed once, discarding the output, to find its end.
    """
    import zlib

    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        with open(path, "rb") as f:
            while not d.eof:
                block = f.read(chunk)
                if not block:
                    break
                d.decompress(block)
                while d.unconsumed_tail and not d.eof:
                    d.decompress(d.unconsumed_tail)
    except zlib.error as e:
        raise ConversionError(path, f"corrupt gzip data in {what} ({e})") from None
    if not d.eof:
        raise ConversionError(path, f"truncated {what}: the gzip stream ends before its end marker")


def _check_nifti_finite_on_disk(path: str, what: str) -> None:
    """SimpleITK's NIfTI reader replaces NaN voxels by 0, so look at the stored values with nibabel."""
    import nibabel as nib

    try:
        raw = np.asanyarray(nib.load(path).dataobj.get_unscaled())
    except Exception as e:
        raise ConversionError(path, f"unreadable {what} ({type(e).__name__}: {e})") from None
    check_finite(raw, path, what)


def read_nifti(path: str | os.PathLike, what: str = "image") -> Volume:
    """Read a NIfTI file with SimpleITK, as nnU-Net's default reader does.

    Returns a :class:`Volume` whose ``spacing`` is in numpy (z, y, x) order. Raises
    :class:`ConversionError` for missing, empty, truncated or unreadable files.
    """
    import SimpleITK as sitk

    path = require_file(path, what)
    if path.endswith(".gz"):
        check_gzip_complete(path, what)
    try:
        img = sitk.ReadImage(path)
        arr = sitk.GetArrayFromImage(img)
    except Exception as e:  # SimpleITK raises plain RuntimeError with a C++ trace
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "ERROR" in ln), lines[-1] if lines else "")
        raise ConversionError(path, f"unreadable {what} ({detail[:300]})") from None
    if np.issubdtype(arr.dtype, np.floating):
        _check_nifti_finite_on_disk(path, what)
    return Volume(arr, tuple(float(s) for s in img.GetSpacing()[::-1]), tuple(img.GetOrigin()),
                  tuple(img.GetDirection()), img, path)


def read_tiff(path: str | os.PathLike, what: str = "image") -> np.ndarray:
    """Read a (multi-page) TIFF with tifffile; LZW needs the ``imagecodecs`` package."""
    import tifffile

    import logging

    path = require_file(path, what)
    problems: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record):
            problems.append(record.getMessage())

    # tifffile only *logs* broken page offsets of a truncated file and returns fewer pages
    handler = _Collect(level=logging.WARNING)
    logger = logging.getLogger("tifffile")
    logger.addHandler(handler)
    try:
        data = tifffile.imread(path)
    except ValueError as e:
        if "imagecodecs" in str(e):
            raise ConversionError(path, "this TIFF is compressed (e.g. LZW); install the 'imagecodecs' "
                                        "package to read it") from None
        raise ConversionError(path, f"unreadable or truncated {what} ({e})") from None
    except Exception as e:
        raise ConversionError(path, f"unreadable or truncated {what} ({type(e).__name__}: {e})") from None
    finally:
        logger.removeHandler(handler)
    if problems:
        raise ConversionError(path, f"unreadable or truncated {what} ({problems[0][:300]})")
    return data


@dataclass
class NiftiInfo:
    """Header facts of a NIfTI file whose voxels were checked but not kept (see :func:`inspect_nifti`)."""

    shape: tuple
    spacing: tuple
    header_spacing: tuple
    path: str


def inspect_nifti(path: str | os.PathLike, what: str = "image") -> NiftiInfo:
    """Validate a NIfTI image without keeping its voxels: cheaper than :func:`read_nifti`.

    Checks the gzip stream is complete, reads the header with SimpleITK (shape and spacing as nnU-Net
    will see them, numpy order) and, for floating-point data only, looks for NaN/inf (integer voxels
    cannot hold them). Used for images that are then copied byte for byte.
    """
    import SimpleITK as sitk

    path = require_file(path, what)
    if path.endswith(".gz"):
        check_gzip_complete(path, what)
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except Exception as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "ERROR" in ln), lines[-1] if lines else "")
        raise ConversionError(path, f"unreadable {what} ({detail[:300]})") from None
    if reader.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64, sitk.sitkVectorFloat32, sitk.sitkVectorFloat64):
        _check_nifti_finite_on_disk(path, what)
    spacing = tuple(float(s) for s in reader.GetSpacing())
    return NiftiInfo(tuple(int(s) for s in reader.GetSize()[::-1]), spacing[::-1], spacing, path)


def check_finite(array: np.ndarray, path: str, what: str = "image") -> None:
    """Raise if a floating-point array holds NaN or infinite values."""
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        n_nan = int(np.isnan(array).sum())
        n_inf = int(np.isinf(array).sum())
        raise ConversionError(path, f"{what} contains {n_nan} NaN and {n_inf} infinite intensities")


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
    if array.dtype == np.uint8 or array.dtype == bool:
        counts_all = np.bincount(array.ravel().view(np.uint8) if array.dtype == bool else array.ravel(),
                                 minlength=256)
        values = np.nonzero(counts_all)[0]
        counts = counts_all[values]
    else:
        values, counts = np.unique(array, return_counts=True)
    bad = [v for v in values.tolist() if int(v) not in allowed]
    if bad:
        raise ConversionError(path, f"label values {sorted(int(b) for b in bad)} outside the allowed set {allowed}")
    return values.astype(np.int64), counts.astype(np.int64)


def check_same_grid(ref, other, what: str, rtol: float = 1e-3) -> None:
    """Raise if ``other`` does not share shape and spacing with ``ref`` (:class:`Volume` or :class:`NiftiInfo`)."""
    if ref.shape != other.shape:
        raise ConversionError(other.path, f"{what} shape {other.shape} does not match "
                                          f"{os.path.basename(ref.path)} shape {ref.shape}")
    if not np.allclose(ref.spacing, other.spacing, rtol=rtol, atol=1e-6):
        raise ConversionError(other.path, f"{what} spacing {tuple(round(s, 5) for s in other.spacing)} does not "
                                          f"match {os.path.basename(ref.path)} spacing "
                                          f"{tuple(round(s, 5) for s in ref.spacing)}")


def write_nifti_like(array: np.ndarray, ref: Volume, out_path: str, dtype=np.uint8) -> None:
    """Write ``array`` as NIfTI with the geometry (spacing, origin, direction) of ``ref``."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(array.astype(dtype, copy=False))
    img.CopyInformation(ref.itk_image)
    sitk.WriteImage(img, out_path)


def label_count_dict(values: Sequence[int], counts: Sequence[int]) -> dict[int, int]:
    """``{label: voxel count}`` from the output of :func:`check_labels`."""
    return {int(v): int(c) for v, c in zip(values, counts)}
