"""MoNuSAC 2020 (2D H&E nuclei) → nnU-Net, semantic or ternary (background / inside / boundary) labels.

Raw layout::

    MoNuSAC_images_and_annotations/<TCGA patient>/<patient>_<n>.{svs,tif,xml}   (older releases: '-n')

The image is the ``.svs`` slide (Aperio: tiled JPEG/JPEG 2000 TIFF, read at full resolution, level 0)
or, in releases that ship one next to it, the ``.tif`` with the same pixels (preferred: it decodes
faster). The Aperio XML has one ``<Annotation>`` layer per class (``Attributes/Attribute[@Name]``)
with ``<Region>`` polygons of ``<Vertex X=column Y=row>``. Class names are normalised (``Macrophages``
→ Macrophage); unknown layers such as ``Description`` are skipped (and reported); ``Ambiguous``
regions become nnU-Net's ignore label.
"""
from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from functools import partial

import numpy as np

from .errors import ConversionError, Problems
from .io import check_labels, label_count_dict
from .tiff_io import read_slide, read_tiff
from .report import CaseResult, ConversionReport
from .writer import CaseSpec, write_dataset

CLASSES = ("Epithelial", "Lymphocyte", "Neutrophil", "Macrophage")
SEMANTIC_LABELS = {"background": 0, **{c: i + 1 for i, c in enumerate(CLASSES)}, "ignore": len(CLASSES) + 1}
TERNARY_LABELS = {"background": 0, "inside": 1, "boundary": 2, "ignore": 3}
AMBIGUOUS = "Ambiguous"


def normalise_class(name: str) -> str | None:
    """Canonical class of a layer name, ``"Ambiguous"``, or ``None`` for unknown layers.

    >>> normalise_class("Macrophages"), normalise_class("description")
    ('Macrophage', None)
    """
    key = re.sub(r"[^a-z]", "", name.lower())
    for c in CLASSES + (AMBIGUOUS,):
        if key in (c.lower(), c.lower() + "s"):
            return c
    return None


def parse_annotations(xml_path: str) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """Polygons of an Aperio XML file.

    Returns
    -------
    polygons : list of (class, (N, 2) array of (row, col))
    skipped_layers : list of str
        Names of layers that are not a known class.
    """
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as e:
        raise ConversionError(xml_path, f"unreadable annotation XML ({e})") from None
    polygons, skipped = [], []
    for ann in root.iter("Annotation"):
        attr = ann.find("Attributes/Attribute")
        name = attr.get("Name", "") if attr is not None else ""
        cls = normalise_class(name)
        if cls is None:
            skipped.append(name or "<unnamed>")
            continue
        for region in ann.iter("Region"):
            try:
                pts = [(float(v.get("Y")), float(v.get("X"))) for v in region.iter("Vertex")]
            except (TypeError, ValueError):
                raise ConversionError(xml_path, f"region {region.get('Id')} of layer {name!r} has a vertex "
                                                f"without numeric X/Y") from None
            if len(pts) >= 3:
                polygons.append((cls, np.asarray(pts)))
    return polygons, skipped


def rasterise(polygons, shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Instance map (int32, 0 = background), class map (uint8, 1..4) and ambiguous mask (bool)."""
    from skimage.draw import polygon as draw_polygon

    instances = np.zeros(shape, np.int32)
    classes = np.zeros(shape, np.uint8)
    ambiguous = np.zeros(shape, bool)
    k = 0
    for cls, pts in polygons:
        rr, cc = draw_polygon(pts[:, 0], pts[:, 1], shape)
        if cls == AMBIGUOUS:
            ambiguous[rr, cc] = True
            continue
        k += 1
        instances[rr, cc] = k
        classes[rr, cc] = CLASSES.index(cls) + 1
    return instances, classes, ambiguous


def ternary_from_instances(instances: np.ndarray, boundary_width: int = 1) -> np.ndarray:
    """Background (0) / inside (1) / boundary (2) from an instance map.

    A foreground pixel is *boundary* when a pixel of another instance or of the background lies within
    ``boundary_width`` (Euclidean disk, so width 1 means the 4-neighbours). Width 1 gives the 1-px inner
    contour; touching nuclei are separated by their boundaries. The image border is not a boundary.

    Examples
    --------
    >>> inst = np.zeros((7, 7), int); inst[1:6, 1:6] = 1
    >>> t = ternary_from_instances(inst, 1)
    >>> int((t == 2).sum()), int((t == 1).sum())
    (16, 9)
    """
    from scipy import ndimage
    from skimage.morphology import disk

    if boundary_width < 1:
        raise ValueError(f"boundary_width must be >= 1, got {boundary_width}")
    fp = disk(boundary_width).astype(bool)
    hi = ndimage.maximum_filter(instances, footprint=fp, mode="nearest")
    lo = ndimage.minimum_filter(instances, footprint=fp, mode="nearest")
    out = np.zeros(instances.shape, np.uint8)
    fg = instances > 0
    out[fg] = 1
    out[fg & ((hi != instances) | (lo != instances))] = 2
    return out


#: image files in order of preference: where a release ships both, the ``.tif`` holds the same pixels
#: as the slide and decodes faster
IMAGE_EXTENSIONS = (".tif", ".svs")


def find_monusac_cases(source: str | os.PathLike) -> list[CaseSpec]:
    """List ``<patient>/<name>.{tif,svs}`` + ``.xml`` pairs under ``source`` (the images-and-annotations
    folder or its parent).

    The ``.tif`` is used where there is one, the ``.svs`` slide otherwise. An image without ``.xml``
    (or the reverse) raises :class:`ConversionError`.
    """
    source = os.fspath(source)
    if not os.path.isdir(source):
        raise ConversionError(source, "source folder does not exist")
    nested = os.path.join(source, "MoNuSAC_images_and_annotations")
    base = nested if os.path.isdir(nested) else source
    cases = []
    problems = Problems()
    for patient in sorted(os.listdir(base)):
        pdir = os.path.join(base, patient)
        if not os.path.isdir(pdir):
            continue
        by_stem: dict[str, dict[str, str]] = {}
        for f in os.listdir(pdir):
            stem, ext = os.path.splitext(f)
            if ext.lower() in IMAGE_EXTENSIONS + (".xml",) and os.path.isfile(os.path.join(pdir, f)):
                by_stem.setdefault(stem, {})[ext.lower()] = os.path.join(pdir, f)
        for stem in sorted(by_stem):
            found = by_stem[stem]
            image = next((found[e] for e in IMAGE_EXTENSIONS if e in found), None)
            if image is None:
                problems.add(os.path.join(pdir, stem + ".svs"), "missing image (.svs or .tif) for existing annotation XML")
                continue
            if ".xml" not in found:
                problems.add(os.path.join(pdir, stem + ".xml"), "missing annotation (label) file")
                continue
            cases.append(CaseSpec(re.sub(r"[^A-Za-z0-9_\-]", "_", stem), (image,), found[".xml"], group=patient))
    problems.raise_if_any(source)
    if not cases:
        raise ConversionError(base, "no MoNuSAC <patient>/<name>.svs (or .tif) + .xml pairs found")
    return cases


def read_monusac_image(path: str) -> np.ndarray:
    """RGB uint8 pixels (rows, cols, 3) of a MoNuSAC ``.tif`` or ``.svs`` (level 0) image."""
    rgb = read_slide(path, "image") if path.lower().endswith(".svs") else read_tiff(path, "image")
    if rgb.ndim == 3 and rgb.shape[0] in (3, 4) and rgb.shape[-1] not in (3, 4):
        rgb = np.moveaxis(rgb, 0, -1)  # planar TIFF
    if rgb.ndim != 3 or rgb.shape[-1] not in (3, 4):
        raise ConversionError(path, f"expected an RGB(A) image, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ConversionError(path, f"expected uint8 RGB, got {rgb.dtype}")
    return rgb[..., :3]


def convert_monusac_case(case: CaseSpec, images_dir: str, labels_dir: str, *, ternary: bool = False,
                         boundary_width: int = 1) -> CaseResult:
    """Write ``<case>_0000.png`` (RGB) and ``<case>.png`` (semantic or ternary labels)."""
    from PIL import Image

    rgb = read_monusac_image(case.images[0])
    polygons, skipped = parse_annotations(case.label)
    instances, classes, ambiguous = rasterise(polygons, rgb.shape[:2])
    if ternary:
        lab = ternary_from_instances(instances, boundary_width)
        allowed = TERNARY_LABELS
    else:
        lab = classes
        allowed = SEMANTIC_LABELS
    lab[ambiguous] = allowed["ignore"]
    values, counts = check_labels(lab, allowed.values(), case.label)
    Image.fromarray(np.ascontiguousarray(rgb)).save(os.path.join(images_dir, f"{case.case_id}_0000.png"))
    Image.fromarray(lab).save(os.path.join(labels_dir, f"{case.case_id}.png"))
    notes = [f"skipped layer {s!r}" for s in sorted(set(skipped))]
    return CaseResult(case.case_id, (1.0, 1.0), tuple(rgb.shape[:2]), label_count_dict(values, counts),
                      bytes_read=os.path.getsize(case.images[0]) + os.path.getsize(case.label), notes=notes)


def convert_monusac(source: str | os.PathLike, dataset_id: int, *, ternary: bool = False, boundary_width: int = 1,
                    dataset_name: str | None = None, raw_root: str | os.PathLike | None = None,
                    overwrite: bool = False, num_processes: int = 1, n_folds: int | None = None, seed: int = 12345,
                    verify: bool = True, progress: bool = True) -> ConversionReport:
    """Convert MoNuSAC into ``DatasetNNN_MoNuSAC`` (semantic) or ``DatasetNNN_MoNuSACTernary``.

    Parameters
    ----------
    ternary : bool
        Write background (0) / inside (1) / boundary (2) labels from the instance polygons instead of
        the four nucleus classes.
    boundary_width : int
        Boundary width in pixels for ``ternary`` (see :func:`ternary_from_instances`).
    n_folds, seed : optional
        ``splits_final.json`` grouped by patient (several images per patient).
    Other parameters are those of :func:`~nnunet_ext.dataset_conversion.writer.write_dataset`.
    """
    if boundary_width < 1:
        raise ConversionError(None, f"boundary width must be >= 1 pixel, got {boundary_width}")
    cases = find_monusac_cases(source)
    labels = TERNARY_LABELS if ternary else SEMANTIC_LABELS
    dataset_json = dict(
        channel_names={0: "rgb_to_0_1", 1: "rgb_to_0_1", 2: "rgb_to_0_1"}, labels=dict(labels), file_ending=".png",
        dataset_name="MoNuSAC 2020", reference="https://monusac-2020.grand-challenge.org/",
        license="CC BY-NC-SA 4.0", converted_by="nnunet-ext",
        description=(f"ternary labels, boundary width {boundary_width} px" if ternary else "nucleus classes"))
    return write_dataset(cases, partial(convert_monusac_case, ternary=ternary, boundary_width=int(boundary_width)),
                         dataset_id=dataset_id, dataset_name=dataset_name or ("MoNuSACTernary" if ternary else "MoNuSAC"),
                         dataset_json=dataset_json, raw_root=raw_root, overwrite=overwrite,
                         num_processes=num_processes, verify=verify, n_folds=n_folds, seed=seed, group_folds=True,
                         spacing_axes="row, col (pixels)", source=os.fspath(source),
                         label_names={v: k for k, v in labels.items()}, progress=progress)
