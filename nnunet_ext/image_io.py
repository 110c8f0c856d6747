"""The one reader every command uses for segmentations and images it did not write itself.

nnU-Net's readers trust their input: SimpleITK reads a truncated ``.nii.gz`` without an error (the
missing voxels come back as zeros) and returns NaN voxels of float images as 0; tifffile only logs
some damage. So before a reader is used, :func:`check_image_file` validates the file completely,
with the converters' own checks (one decompression pass for NIfTI, a full decode for TIFF), and
every failure becomes one :class:`ImageReadError` whose message names the file and the problem.

On top of reading, :func:`geometry_problem` compares two files' geometry (spacing, origin, direction
as nnU-Net's reader reports them) and :func:`check_label_values` the values of a segmentation
against the labels ``dataset.json`` declares.
"""
from __future__ import annotations

import os
from typing import Iterable, Optional, Sequence, Tuple

import numpy as np

#: spacing tolerance (relative) when two files of one case are compared
SPACING_RTOL = 1e-4
#: origin tolerance (absolute, in the image's units) and direction-cosine tolerance
ORIGIN_ATOL = 1e-4
DIRECTION_ATOL = 1e-5


class ImageReadError(ValueError):
    """A file cannot be used: missing, empty, damaged, unreadable, wrong geometry or label values.

    The message is one line: ``<path>: <problem>``.
    """

    def __init__(self, path: Optional[str], problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(problem if self.path is None else f"{self.path}: {problem}")

    def __reduce__(self):  # picklable across worker processes
        return (type(self), (self.path, self.problem))


def require_regular_file(path: str, what: str = "image") -> str:
    """``path`` as a string; raises :class:`ImageReadError` for a missing file, a folder, a dangling
    symbolic link or an empty file (each said as such)."""
    path = os.fspath(path)
    if os.path.islink(path) and not os.path.exists(path):
        raise ImageReadError(path, f"{what} is a dangling symbolic link (to {os.readlink(path)})")
    if os.path.isdir(path):
        raise ImageReadError(path, f"{what} is a folder, not a file")
    if not os.path.exists(path):
        raise ImageReadError(path, f"missing {what}")
    if not os.path.isfile(path):
        raise ImageReadError(path, f"{what} is not a regular file")
    if not os.access(path, os.R_OK):
        raise ImageReadError(path, f"{what} is not readable (permission denied)")
    if os.path.getsize(path) == 0:
        raise ImageReadError(path, f"empty file ({what}, 0 bytes)")
    return path


def check_image_file(path: str, what: str = "image") -> None:
    """Validate a file completely before an nnU-Net reader gets it.

    ``.nii``/``.nii.gz``: gzip stream complete (CRC-32, length, end marker), header valid, data
    section as long as the header declares, no NaN/inf in floating-point data
    (:func:`~nnunet_ext.dataset_conversion.nifti_scan.scan_nifti`). ``.tif``/``.tiff``: decoded
    completely, tifffile's warnings about damaged pages count as errors. Other formats: present and
    non-empty (their readers fail loudly on damage).

    Raises
    ------
    ImageReadError
        Naming the file and the problem.
    """
    from .dataset_conversion.errors import ConversionError

    path = require_regular_file(path, what)
    lower = path.lower()
    try:
        if lower.endswith((".nii.gz", ".nii")):
            from .dataset_conversion.nifti_scan import scan_nifti

            scan_nifti(path, what)
        elif lower.endswith((".tif", ".tiff")):
            from .dataset_conversion.tiff_io import read_tiff

            read_tiff(path, what)
    except ConversionError as e:
        raise ImageReadError(path, e.problem) from None
    except OSError as e:
        raise ImageReadError(path, f"cannot read {what} ({e.strerror or e})") from None


def _error_detail(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    detail = next((ln for ln in lines if "ERROR" in ln), lines[-1] if lines else type(e).__name__)
    return detail[:300]


def read_seg(reader, path: str, what: str = "segmentation") -> Tuple[np.ndarray, dict]:
    """``reader.read_seg(path)`` (an nnU-Net reader/writer instance) after :func:`check_image_file`.

    Returns nnU-Net's ``(seg, properties)``; any reader failure becomes an :class:`ImageReadError`.
    """
    check_image_file(path, what)
    try:
        return reader.read_seg(path)
    except Exception as e:  # SimpleITK's RuntimeError with a C++ trace, tifffile, nibabel, PIL ...
        raise ImageReadError(path, f"unreadable {what} ({_error_detail(e)})") from None


def geometry_of(properties: dict) -> dict:
    """``{"spacing", "origin", "direction"}`` of nnU-Net reader properties (what the reader knows:
    SimpleITK gives all three, other readers only the spacing)."""
    geo = {"spacing": tuple(float(s) for s in properties.get("spacing", ()))}
    itk = properties.get("sitk_stuff")
    if itk:
        geo["origin"] = tuple(float(v) for v in itk["origin"])
        geo["direction"] = tuple(float(v) for v in itk["direction"])
    nib = properties.get("nibabel_stuff")
    if nib and "original_affine" in nib:
        aff = np.asarray(nib["original_affine"], dtype=float)
        geo["origin"] = tuple(aff[:3, 3].tolist())
        geo["direction"] = tuple(aff[:3, :3].ravel().tolist())
    return geo


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def geometry_problem(props: dict, ref_props: dict, ref_name: str = "the reference") -> Optional[str]:
    """What differs between the geometry of two files (``None`` if nothing does).

    Spacing (relative tolerance :data:`SPACING_RTOL`), origin (:data:`ORIGIN_ATOL`) and direction
    (:data:`DIRECTION_ATOL`), each only where both readers report it. Spacing is given in the
    reader's array-axis order (z, y, x for SimpleITK), origin and direction in SimpleITK's (x, y, z).
    """
    a, b = geometry_of(props), geometry_of(ref_props)
    if len(a["spacing"]) != len(b["spacing"]) or not np.allclose(a["spacing"], b["spacing"], rtol=SPACING_RTOL):
        return f"spacing {_fmt(a['spacing'])} differs from {ref_name}'s {_fmt(b['spacing'])} (array axis order)"
    if "origin" in a and "origin" in b and (
            len(a["origin"]) != len(b["origin"]) or not np.allclose(a["origin"], b["origin"], rtol=0, atol=ORIGIN_ATOL)):
        return f"origin {_fmt(a['origin'])} differs from {ref_name}'s {_fmt(b['origin'])}"
    if "direction" in a and "direction" in b and (
            len(a["direction"]) != len(b["direction"])
            or not np.allclose(a["direction"], b["direction"], rtol=0, atol=DIRECTION_ATOL)):
        return f"direction {_fmt(a['direction'])} differs from {ref_name}'s {_fmt(b['direction'])}"
    return None


def label_values_of_dataset_json(dataset_json: dict) -> Tuple[int, ...]:
    """Every label value a segmentation of this dataset may hold: background, plain labels, the
    values regions are made of, and the ignore label."""
    values = {0}
    for v in dataset_json["labels"].values():
        for x in (v if isinstance(v, (list, tuple)) else (v,)):
            values.add(int(x))
    return tuple(sorted(values))


def check_label_values(seg: np.ndarray, allowed: Iterable[int], path: str, what: str = "segmentation") -> None:
    """Raise :class:`ImageReadError` naming ``path`` and the values when ``seg`` holds a value that
    is not in ``allowed`` (the labels of ``dataset.json``)."""
    allowed = sorted(int(a) for a in allowed)
    arr = np.asarray(seg)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageReadError(path, f"{what} holds NaN or infinite values")
        if not np.all(np.mod(arr, 1) == 0):
            raise ImageReadError(path, f"{what} holds non-integer values; label maps are integers")
    if arr.dtype == np.uint8:
        found = np.nonzero(np.bincount(arr.ravel(), minlength=256))[0]
    else:
        found = np.unique(arr)
    bad = sorted({int(v) for v in found.tolist()} - set(allowed))
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
        raise ImageReadError(path, f"{what} holds label value(s) {shown} that dataset.json does not define "
                                   f"(allowed: {', '.join(map(str, allowed))})")


def load_npz_probabilities(path: str) -> np.ndarray:
    """The ``probabilities`` array of an nnU-Net ``.npz``, read completely.

    Raises
    ------
    ImageReadError
        Missing, empty, truncated or corrupt file, a file that is not an ``.npz`` archive (never
        unpickled), or no ``probabilities`` array (with the keys that are there).
    """
    import zipfile
    import zlib

    path = require_regular_file(path, "probabilities (.npz)")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic[:2] != b"PK":
        raise ImageReadError(path, "not an .npz archive (no zip header); nnU-Net writes probabilities with "
                                   "--save_probabilities")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "probabilities" not in npz.files:
                raise ImageReadError(None, f"{path} has no 'probabilities' array (keys: "
                                           f"{', '.join(npz.files) or 'none'}); write it with --save_probabilities")
            return np.asarray(npz["probabilities"])
    except ImageReadError:
        raise
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError, zlib.error) as e:
        raise ImageReadError(path, f"truncated or corrupt .npz ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None
