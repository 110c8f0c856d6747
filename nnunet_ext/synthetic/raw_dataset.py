"""Write a synthetic tube dataset in nnU-Net raw format, in one of nnU-Net's three label modes."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_ext.synthetic.tubes import branching_tubes, vessel_image

#: kind → (labels entry of dataset.json, regions_class_order or None, radius range of the tubes)
DATASET_KINDS: dict[str, tuple[dict, list | None, tuple[float, float]]] = {
    # plain softmax labels: one thin-vessel class
    "labels": ({"background": 0, "vessel": 1}, None, (0.9, 2.2)),
    # sigmoid regions: vessel = wall ∪ lumen, lumen ⊂ vessel (two overlapping regions)
    "regions": ({"background": 0, "vessel": [1, 2], "lumen": [2]}, [1, 2], (1.6, 3.2)),
    # plain labels plus an ignore label over a frame on every face and one unlabeled slab
    "ignore": ({"background": 0, "vessel": 1, "ignore": 2}, None, (0.9, 2.2)),
}


def _label_map(kind: str, tree, rng: np.random.Generator) -> np.ndarray:
    if kind == "regions":
        return np.where(tree.mask(0.5), 2, np.where(tree.mask(), 1, 0)).astype(np.uint8)
    seg = tree.mask().astype(np.uint8)
    if kind == "ignore":
        frame = 2
        unlabeled = np.ones(seg.shape, dtype=bool)
        unlabeled[tuple(slice(frame, -frame) for _ in seg.shape)] = False
        axis = int(rng.integers(0, 3))
        start = int(rng.integers(0, seg.shape[axis] // 2))
        slab = [slice(None)] * 3
        slab[axis] = slice(start, start + max(1, seg.shape[axis] // 5))
        unlabeled[tuple(slab)] = True
        seg[unlabeled] = 2
    return seg


def _write_nifti(array: np.ndarray, spacing_zyx, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing([float(s) for s in reversed(spacing_zyx)])  # SimpleITK speaks x, y, z
    sitk.WriteImage(image, str(path), useCompression=True)


def write_synthetic_dataset(
    raw_root: str | os.PathLike,
    dataset_id: int,
    kind: str = "labels",
    name: str | None = None,
    n_train: int = 8,
    n_test: int = 2,
    shape: tuple[int, int, int] = (32, 64, 64),
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write ``Dataset{id:03d}_{name}`` with branching tubes into ``raw_root``.

    Parameters
    ----------
    raw_root : path
        The ``nnUNet_raw`` folder.
    dataset_id : int
        nnU-Net dataset id (1–999).
    kind : {"labels", "regions", "ignore"}
        Label mode, see :data:`DATASET_KINDS`.
    name : str or None
        Dataset name (default ``SyntheticTubes<Kind>``).
    n_train, n_test : int
        Training cases (imagesTr/labelsTr) and test cases (imagesTs, references in labelsTs).
    shape, spacing : (Z, Y, X)
        Volume shape and voxel spacing in array-axis order.
    seed : int
        Seed; case i uses ``seed + i``.
    overwrite : bool
        Replace an existing dataset folder of the same name (otherwise it is an error).

    Returns
    -------
    Path
        The dataset folder. It is written to a temporary folder first and moved into place at the end.
    """
    if kind not in DATASET_KINDS:
        raise ValueError(f"kind must be one of {sorted(DATASET_KINDS)}, got {kind!r}")
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset_id must be in 1..999, got {dataset_id}")
    from nnunet_ext.synthetic.staging import write_raw_dataset

    labels, regions_class_order, radius_range = DATASET_KINDS[kind]
    name = name or f"SyntheticTubes{kind.capitalize()}"

    def make_case(i: int):
        rng = np.random.default_rng(seed + i)
        tree = branching_tubes(shape, spacing, n_roots=2, depth=2, radius_range=radius_range, seed=seed + i)
        return vessel_image(tree, seed=seed + 10_000 + i), _label_map(kind, tree, rng)

    dataset_json = {"channel_names": {"0": "two-photon"}, "labels": labels,
                    "description": f"Synthetic branching tubes ({kind}), written by nnunet-ext"}
    if regions_class_order is not None:
        dataset_json["regions_class_order"] = regions_class_order
    return write_raw_dataset(raw_root, dataset_id, name, make_case, n_train, n_test, spacing, dataset_json,
                             overwrite=overwrite, prefix="tubes")
