"""Back-conversion of nnU-Net predictions to each dataset's own label convention / submission format."""
from __future__ import annotations

import os
import zipfile
from functools import partial

import numpy as np

from nnunet_ext.staged_output import staged_output

from .errors import ConversionError


def brats_labels_from_nnunet(seg: np.ndarray, year: int) -> np.ndarray:
    """Map a prediction in ``labelsTr`` convention back to the BraTS labels of ``year``.

    2021: 1→2 (edema), 2→1 (NCR/NET), 3→4 (enhancing), as nnU-Net's Dataset137 script does.
    2023/2024: labels are stored unchanged, only validated. Unknown values raise ``ValueError``.

    >>> brats_labels_from_nnunet(np.array([0, 1, 2, 3]), 2021).tolist()
    [0, 2, 1, 4]
    """
    from .brats import get_convention

    conv = get_convention(year)
    allowed = sorted({int(v) for v in (conv.to_nnunet.values() if conv.to_nnunet else conv.raw_labels)})
    found = np.unique(seg)
    bad = [int(v) for v in found if int(v) not in allowed]
    if bad:
        raise ValueError(f"prediction holds labels {bad} that BraTS {year} (nnU-Net convention) does not define")
    if conv.to_nnunet is None:
        return seg.astype(np.uint8)
    lut = np.zeros(max(allowed) + 1, dtype=np.uint8)
    for raw, ours in conv.to_nnunet.items():
        lut[ours] = raw
    return lut[seg.astype(np.intp)]


def _convert_one(name: str, input_folder: str, output_folder: str, year: int) -> str:
    import SimpleITK as sitk

    from ..image_io import ImageReadError, check_image_file

    src = os.path.join(input_folder, name)
    try:
        check_image_file(src, "prediction")  # SimpleITK alone reads a truncated .nii.gz without an error
    except ImageReadError as e:
        raise ConversionError(src, e.problem) from None
    try:
        img = sitk.ReadImage(src)
    except Exception:
        raise ConversionError(src, "unreadable prediction") from None
    try:
        arr = brats_labels_from_nnunet(sitk.GetArrayFromImage(img), year)
    except ValueError as e:
        raise ConversionError(src, str(e)) from None
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    sitk.WriteImage(out, os.path.join(output_folder, name))
    return name


def _convert_one_collecting(name: str, **kw) -> tuple:
    try:
        _convert_one(name, **kw)
        return name, None
    except ConversionError as e:
        return name, str(e)
    except OSError as e:  # a full disk, a folder that became unwritable
        return name, f"{os.path.join(kw['input_folder'], name)}: {e.strerror or e}"


def _same_folder(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def convert_brats_predictions(input_folder: str | os.PathLike, output_folder: str | os.PathLike, year: int,
                              num_processes: int = 1, overwrite: bool = False) -> list[str]:
    """Convert every ``*.nii.gz`` prediction in ``input_folder`` to BraTS labels in ``output_folder``.

    Returns the converted file names. Geometry is copied from each prediction. Every prediction is
    validated first (a truncated or corrupt file is refused, naming it); the results go into a
    temporary folder inside ``output_folder`` and are moved into place only when every case
    succeeded, so a failure leaves nothing converted. Existing files in ``output_folder`` (and
    converting in place, ``output_folder == input_folder``) need ``overwrite``.
    """
    from ..inference.naming import is_uncertainty_map

    input_folder, output_folder = os.fspath(input_folder), os.fspath(output_folder)
    if not os.path.isdir(input_folder):
        raise ConversionError(input_folder, "prediction folder does not exist")
    if int(num_processes) < 1:
        raise ConversionError(None, f"-np must be at least 1, got {num_processes}")
    names = sorted(f for f in os.listdir(input_folder)
                   if f.endswith(".nii.gz") and not f.startswith(".") and not is_uncertainty_map(f))
    if not names:
        raise ConversionError(input_folder, "no .nii.gz predictions found")
    if os.path.exists(output_folder) and not os.path.isdir(output_folder):
        raise ConversionError(output_folder, "output folder is a file")
    if not overwrite:
        if os.path.isdir(output_folder) and _same_folder(input_folder, output_folder):
            raise ConversionError(output_folder, "output folder is the prediction folder: converting in place "
                                                 "replaces the predictions; choose another folder or pass --overwrite")
        existing = [n for n in names if os.path.lexists(os.path.join(output_folder, n))]
        if existing:
            raise ConversionError(output_folder, f"{len(existing)} output file(s) exist already (e.g. {existing[0]}); "
                                                 f"pass --overwrite to replace them")
    def cannot_write(error: OSError) -> ConversionError:
        return ConversionError(output_folder, f"cannot write the output folder ({error.strerror or error})")

    with staged_output(output_folder, ".brats-back-", cannot_write) as tmp:
        fn = partial(_convert_one_collecting, input_folder=input_folder, output_folder=tmp, year=int(year))
        if num_processes <= 1 or len(names) <= 1:
            outcomes = [fn(n) for n in names]
        else:
            import multiprocessing
            with multiprocessing.get_context("spawn").Pool(min(int(num_processes), len(names))) as pool:
                outcomes = pool.map(fn, names)
        errors = [err for _, err in outcomes if err is not None]
        if errors:
            raise ConversionError(input_folder, f"{len(errors)} of {len(names)} predictions could not be converted; "
                                                f"nothing was written:\n  " + "\n  ".join(errors))
    return names


def write_vesuvius_submission(prediction_folder: str | os.PathLike, zip_path: str | os.PathLike,
                              test_images_folder: str | os.PathLike | None = None,
                              overwrite: bool = False) -> list[str]:
    """Zip nnU-Net's Vesuvius predictions as a competition submission.

    Every ``<id>.tif`` prediction (written by nnU-Net's ``Tiff3DIO``, spacing sidecars ignored) is
    stored as ``<id>.tif``, uint8, values 0/1. With ``test_images_folder`` each prediction's shape is
    checked against ``<id>.tif`` there and missing predictions raise. Uncertainty maps written by
    ``nnunet-ext predict`` (``<id>_uncertainty_<kind>.tif``) are not predictions and are skipped. An
    existing ``zip_path`` is only replaced with ``overwrite``.

    Returns the ids written.
    """
    import tifffile

    from .tiff_io import read_tiff

    prediction_folder = os.fspath(prediction_folder)
    if not os.path.isdir(prediction_folder):
        raise ConversionError(prediction_folder, "prediction folder does not exist")
    from ..inference.naming import is_uncertainty_map

    ids = sorted(f[:-4] for f in os.listdir(prediction_folder)
                 if f.endswith(".tif") and not f.startswith(".") and not is_uncertainty_map(f))
    if not ids:
        raise ConversionError(prediction_folder, "no .tif predictions found")
    zip_path = os.fspath(zip_path)
    if os.path.isdir(zip_path):
        raise ConversionError(zip_path, "is a folder; give the path of the .zip file to write")
    if os.path.lexists(zip_path) and not overwrite:
        raise ConversionError(zip_path, "submission file exists already; pass --overwrite to replace it")
    if test_images_folder is not None:
        test_images_folder = os.fspath(test_images_folder)
        if not os.path.isdir(test_images_folder):
            raise ConversionError(test_images_folder, "test images folder does not exist")
        expected = sorted(f[:-4] for f in os.listdir(test_images_folder) if f.endswith(".tif"))
        missing = sorted(set(expected) - set(ids))
        if missing:
            raise ConversionError(prediction_folder, f"no prediction for test volumes {missing[:10]}")
    tmp_zip = os.fspath(zip_path) + ".partial"
    try:
        with zipfile.ZipFile(tmp_zip, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for i in ids:
                src = os.path.join(prediction_folder, f"{i}.tif")
                pred = read_tiff(src, "prediction")
                if pred.ndim != 3:
                    raise ConversionError(src, f"expected a 3D prediction, got shape {pred.shape}")
                if test_images_folder is not None:
                    ref = os.path.join(test_images_folder, f"{i}.tif")
                    with tifffile.TiffFile(ref) as tf:
                        ref_shape = tf.series[0].shape
                    if tuple(pred.shape) != tuple(ref_shape):
                        raise ConversionError(src, f"prediction shape {pred.shape} differs from test volume {ref_shape}")
                bad = np.setdiff1d(np.unique(pred), [0, 1])
                if bad.size:
                    shown = ", ".join(f"{v:g}" for v in bad[:10].tolist()) + (" ..." if bad.size > 10 else "")
                    raise ConversionError(src, f"prediction holds {bad.size} value(s) other than 0/1 ({shown}); "
                                               f"a submission is 0/1")
                import io as _io
                buf = _io.BytesIO()
                tifffile.imwrite(buf, pred.astype(np.uint8), photometric="minisblack", compression="zlib")
                zf.writestr(f"{i}.tif", buf.getvalue())
        os.replace(tmp_zip, zip_path)
    finally:
        if os.path.exists(tmp_zip):
            os.remove(tmp_zip)
    return ids
