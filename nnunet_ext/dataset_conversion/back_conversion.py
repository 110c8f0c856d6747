"""Back-conversion of nnU-Net predictions to each dataset's own label convention / submission format."""
from __future__ import annotations

import os
import zipfile
from functools import partial

import numpy as np

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

    src = os.path.join(input_folder, name)
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


def convert_brats_predictions(input_folder: str | os.PathLike, output_folder: str | os.PathLike, year: int,
                              num_processes: int = 1) -> list[str]:
    """Convert every ``*.nii.gz`` prediction in ``input_folder`` to BraTS labels in ``output_folder``.

    Returns the converted file names. Geometry is copied from each prediction.
    """
    input_folder, output_folder = os.fspath(input_folder), os.fspath(output_folder)
    if not os.path.isdir(input_folder):
        raise ConversionError(input_folder, "prediction folder does not exist")
    names = sorted(f for f in os.listdir(input_folder) if f.endswith(".nii.gz"))
    if not names:
        raise ConversionError(input_folder, "no .nii.gz predictions found")
    os.makedirs(output_folder, exist_ok=True)
    fn = partial(_convert_one, input_folder=input_folder, output_folder=output_folder, year=int(year))
    if num_processes <= 1:
        return [fn(n) for n in names]
    import multiprocessing
    with multiprocessing.get_context("spawn").Pool(num_processes) as pool:
        return pool.map(fn, names)


def write_vesuvius_submission(prediction_folder: str | os.PathLike, zip_path: str | os.PathLike,
                              test_images_folder: str | os.PathLike | None = None) -> list[str]:
    """Zip nnU-Net's Vesuvius predictions as a competition submission.

    Every ``<id>.tif`` prediction (written by nnU-Net's ``Tiff3DIO``, spacing sidecars ignored) is
    stored as ``<id>.tif``, uint8, values 0/1. With ``test_images_folder`` each prediction's shape is
    checked against ``<id>.tif`` there and missing predictions raise.

    Returns the ids written.
    """
    import tifffile

    from .tiff_io import read_tiff

    prediction_folder = os.fspath(prediction_folder)
    if not os.path.isdir(prediction_folder):
        raise ConversionError(prediction_folder, "prediction folder does not exist")
    ids = sorted(f[:-4] for f in os.listdir(prediction_folder) if f.endswith(".tif"))
    if not ids:
        raise ConversionError(prediction_folder, "no .tif predictions found")
    if test_images_folder is not None:
        test_images_folder = os.fspath(test_images_folder)
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
                    raise ConversionError(src, f"prediction holds values {bad.tolist()}; a submission is 0/1")
                import io as _io
                buf = _io.BytesIO()
                tifffile.imwrite(buf, pred.astype(np.uint8), photometric="minisblack", compression="zlib")
                zf.writestr(f"{i}.tif", buf.getvalue())
        os.replace(tmp_zip, zip_path)
    finally:
        if os.path.exists(tmp_zip):
            os.remove(tmp_zip)
    return ids
