"""Synthetic raw datasets with the real folder/file names, dtypes, label values and headers.

Only the shapes are small. Each builder returns the raw root it wrote and can be told to inject one
of the edge cases the converters must handle (see the ``*_bad_input`` tests).
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------------------------- MiniVess

# (sx, sy, sz) in µm as found in the MiniVess headers; mv02 is the in-plane outlier
MINIVESS_SPACINGS = {
    "mv01": (0.99, 0.99, 5.0),
    "mv02": (4.97, 4.97, 5.0),
    "mv03": (0.62, 0.62, 5.0),
    "mv04": (0.99, 0.99, 2.0),
    "mv05": (0.62, 0.62, 10.0),
    "mv39": (0.99, 0.99, 5.0),
}


def write_minivess_nifti(path: Path, data: np.ndarray, spacing, cal_max: float | None = None) -> None:
    """NIfTI-1 as MiniVess ships it: affine diag(s), sform_code 2, qform_code 0, xyzt_units 0."""
    import nibabel as nib

    affine = np.diag([*spacing, 1.0])
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=2)
    img.set_qform(None, code=0)
    img.header["xyzt_units"] = 0
    if cal_max is not None:
        img.header["cal_max"] = cal_max
    nib.save(img, str(path))


def make_minivess(root: Path, xy: int = 16, depth: int = 8, seed: int = 0) -> Path:
    """MiniVess archive root: ``raw/``, ``seg/`` (``_y`` suffix), ``json/`` and the licence PDF.

    mv39 has 5 slices, mv02 has the 4.97 µm in-plane spacing.
    """
    rng = np.random.default_rng(seed)
    for d in ("raw", "seg", "json"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "Licence (CCBY-NC-SA).pdf").write_bytes(b"%PDF-1.4\n% licence placeholder for tests\n")
    for case, sp in MINIVESS_SPACINGS.items():
        z = 5 if case == "mv39" else depth
        img = rng.integers(0, 1000, size=(xy, xy, z), dtype=np.uint16)
        seg = np.zeros((xy, xy, z), dtype=np.uint8)
        seg[xy // 4: xy // 2, 2: xy - 2, :] = 1  # a slab of "vessel"
        write_minivess_nifti(root / "raw" / f"{case}.nii.gz", img, sp, cal_max=1000)
        write_minivess_nifti(root / "seg" / f"{case}_y.nii.gz", seg, sp)
        (root / "json" / f"{case}.json").write_text(json.dumps({"name": case, "spacing_um": list(sp)}))
    return root


# --------------------------------------------------------------------------------------------- Vesuvius

VESUVIUS_TRAIN = {  # id -> (scroll, shape) ; ids are unpadded 7-10 digit integers
    "1004283650": ("34117", (10, 10, 10)),
    "26894125": ("34117", (8, 12, 10)),
    "3330103": ("35360", (12, 8, 8)),
}
VESUVIUS_DEPRECATED = {"987654321": "26002"}  # row in train.csv without files
VESUVIUS_TEST = {"1407735": ("26002", (10, 10, 10))}


def write_tiff_stack(path: Path, data: np.ndarray, compression: str | None = "lzw") -> None:
    """Multi-page (Z, Y, X) TIFF. ``photometric='minisblack'`` keeps 3-4 slices from becoming RGB(A)."""
    import tifffile

    tifffile.imwrite(str(path), data, photometric="minisblack", compression=compression)


def vesuvius_label(shape, rng) -> np.ndarray:
    """0 background, 1 surface sheet, 2 unlabeled (including a 3-voxel border on every face)."""
    lab = np.full(shape, 2, dtype=np.uint8)
    inner = tuple(slice(3, s - 3) for s in shape)
    core = np.zeros(tuple(s - 6 for s in shape), dtype=np.uint8)
    core[:, core.shape[1] // 2, :] = 1  # a flat papyrus surface
    core[rng.random(core.shape) < 0.2] = 2
    lab[inner] = core
    return lab


def make_vesuvius(root: Path, seed: int = 0) -> Path:
    """Kaggle layout: ``train.csv``, ``test.csv``, ``train_images/``, ``train_labels/``, ``test_images/``."""
    rng = np.random.default_rng(seed)
    for d in ("train_images", "train_labels", "test_images"):
        (root / d).mkdir(parents=True, exist_ok=True)
    with open(root / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "scroll_id"])
        for i, (scroll, _) in VESUVIUS_TRAIN.items():
            w.writerow([i, scroll])
        for i, scroll in VESUVIUS_DEPRECATED.items():
            w.writerow([i, scroll])
    with open(root / "test.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "scroll_id"])
        for i, (scroll, _) in VESUVIUS_TEST.items():
            w.writerow([i, scroll])
    for i, (_, shape) in VESUVIUS_TRAIN.items():
        write_tiff_stack(root / "train_images" / f"{i}.tif", rng.integers(0, 256, shape, dtype=np.uint8))
        write_tiff_stack(root / "train_labels" / f"{i}.tif", vesuvius_label(shape, rng))
    for i, (_, shape) in VESUVIUS_TEST.items():
        write_tiff_stack(root / "test_images" / f"{i}.tif", rng.integers(0, 256, shape, dtype=np.uint8))
    return root


# --------------------------------------------------------------------------------------------- BraTS

BRATS_SHAPE = (12, 14, 10)  # x, y, z of the real 240 x 240 x 155
BRATS_2021_MODALITIES = ("t1", "t1ce", "t2", "flair")
BRATS_2023_MODALITIES = ("t1n", "t1c", "t2w", "t2f")


def write_brats_nifti(path: Path, data: np.ndarray) -> None:
    """1 mm isotropic with the LPS-flipped affine the BraTS files carry."""
    import nibabel as nib

    affine = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))


def brats_seg(shape, labels, rng) -> np.ndarray:
    """Nested tumour: edema shell around a necrotic core with an enhancing rim (given label values)."""
    edema, ncr, et = labels[:3]
    seg = np.zeros(shape, dtype=np.uint8)
    c = [s // 2 for s in shape]
    zz = np.indices(shape)
    r = np.sqrt(sum((zz[i] - c[i]) ** 2 for i in range(3)))
    seg[r < 4.5] = edema
    seg[r < 3.2] = et
    seg[r < 2.0] = ncr
    if len(labels) > 3:  # resection cavity off-centre
        seg[1:3, 1:3, 1:3] = labels[3]
    return seg


def make_brats(root: Path, year: int, n_patients: int = 3, timepoints: int = 1, seed: int = 0,
               shape=BRATS_SHAPE, float_images: bool = False, first_patient: int = 0) -> Path:
    """BraTS training folder of ``year`` (2021, 2023 or 2024) with ``n_patients`` x ``timepoints`` scans."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for p in range(first_patient, first_patient + n_patients):
        for t in range(timepoints):
            if year == 2021:
                case = f"BraTS2021_{p:05d}"
                mods, sep = BRATS_2021_MODALITIES, "_"
                lab = (2, 1, 4)
            else:
                case = f"BraTS-GLI-{p:05d}-{t:03d}"
                mods, sep = BRATS_2023_MODALITIES, "-"
                lab = (2, 1, 3) if year == 2023 else (2, 1, 3, 4)
            d = root / case
            d.mkdir(exist_ok=True)
            for m in mods:
                dtype = np.float32 if float_images else np.int16
                write_brats_nifti(d / f"{case}{sep}{m}.nii.gz", rng.integers(0, 3000, shape).astype(dtype))
            write_brats_nifti(d / f"{case}{sep}seg.nii.gz", brats_seg(shape, lab, rng))
    return root


# --------------------------------------------------------------------------------------------- MoNuSAC

MONUSAC_PATIENTS = {
    "TCGA-55-1594-01Z-00-DX1": ["_1", "_2"],
    "TCGA-A2-A0ES-01Z-00-DX1": ["-1"],  # older releases use '-n'
}


def _ellipse(cx, cy, rx, ry, n=16):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in t]


def monusac_xml(layers: dict[str, list[list[tuple[float, float]]]]) -> str:
    """Aperio ImageScope XML with one ``<Annotation>`` per layer; vertices are (X=column, Y=row)."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>', '<Annotations MicronsPerPixel="0.252100">']
    for i, (name, polys) in enumerate(layers.items(), start=1):
        out.append(f'<Annotation Id="{i}" Name="" ReadOnly="0" LineColor="65280" Visible="1">')
        out.append(f'<Attributes><Attribute Name="{name}" Id="0" Value=""/></Attributes>')
        out.append('<Regions><RegionAttributeHeaders/>')
        for j, poly in enumerate(polys, start=1):
            out.append(f'<Region Id="{j}" Type="0" Zoom="1" Selected="0" ImageLocation="" Text="">')
            out.append("<Attributes/><Vertices>")
            out.extend(f'<Vertex X="{x:.4f}" Y="{y:.4f}" Z="0"/>' for x, y in poly)
            out.append("</Vertices></Region>")
        out.append("</Regions><Plots/></Annotation>")
    out.append("</Annotations>")
    return "\n".join(out)


def write_svs(path: Path, rgb: np.ndarray, tile: int = 16) -> None:
    """Aperio SVS as scanners write it: a tiled, JPEG-compressed RGB baseline whose ImageDescription
    starts with ``Aperio Image Library``, then a stripped thumbnail and a tiled half-resolution level."""
    import tifffile

    h, w = rgb.shape[:2]
    desc = (f"Aperio Image Library v12.0.15 \n{w}x{h} [0,0 {w}x{h}] ({tile}x{tile}) JPEG/RGB Q=90"
            f"|AppMag = 40|StripeWidth = 992|ScanScope ID = SS1234|MPP = 0.2521")
    with tifffile.TiffWriter(str(path)) as tw:
        tw.write(rgb, tile=(tile, tile), compression="jpeg", photometric="rgb", description=desc, metadata=None)
        tw.write(np.ascontiguousarray(rgb[::4, ::4]), photometric="rgb", metadata=None,
                 description=f"Aperio Image Library v12.0.15 \n{w}x{h} -> {w // 4}x{h // 4} - |AppMag = 40")
        tw.write(np.ascontiguousarray(rgb[::2, ::2]), tile=(tile, tile), compression="jpeg", photometric="rgb",
                 metadata=None,
                 description=f"Aperio Image Library v12.0.15 \n{w}x{h} -> {w // 2}x{h // 2} JPEG/RGB Q=90")


def make_monusac(root: Path, size=(40, 48), seed: int = 0, ambiguous: bool = True,
                 image_format: str = "tif") -> Path:
    """``MoNuSAC_images_and_annotations/<patient>/<patient>_<n>.{svs,tif,xml}``.

    Layers: Epithelial, Lymphocyte, Neutrophil, ``Macrophages`` (plural spelling), ``Description``
    (unknown, to be skipped) and, when ``ambiguous``, an ``Ambiguous`` region (→ ignore label).
    ``image_format="tif"``: an RGB ``.tif`` next to a placeholder ``.svs`` (the ``.tif`` must win);
    ``"svs"``: only a real Aperio-style ``.svs`` slide (:func:`write_svs`).
    """
    import tifffile

    rng = np.random.default_rng(seed)
    base = root / "MoNuSAC_images_and_annotations"
    h, w = size
    for patient, suffixes in MONUSAC_PATIENTS.items():
        (base / patient).mkdir(parents=True, exist_ok=True)
        for suf in suffixes:
            stem = f"{patient}{suf}"
            rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            if image_format == "svs":
                write_svs(base / patient / f"{stem}.svs", rgb)
            else:
                tifffile.imwrite(str(base / patient / f"{stem}.tif"), rgb, photometric="rgb")
                (base / patient / f"{stem}.svs").write_bytes(b"II*\x00 whole-slide placeholder")
            layers = {
                "Epithelial": [_ellipse(10, 10, 6, 5), _ellipse(21, 10, 5, 5)],  # two touching nuclei
                "Lymphocyte": [_ellipse(36, 12, 4, 4)],
                "Neutrophil": [_ellipse(12, 30, 4, 3)],
                "Macrophages": [_ellipse(30, 30, 7, 6)],
                "Description": [[(0, 0), (5, 0), (5, 5)]],
            }
            if ambiguous:
                layers["Ambiguous"] = [[(40, 30), (47, 30), (47, 39), (40, 39)]]
            (base / patient / f"{stem}.xml").write_text(monusac_xml(layers))
    return base
