"""The classes or regions of a dataset, read from its ``dataset.json`` with nnU-Net's LabelManager.

Label datasets are post-processed on the label map itself; region datasets (overlapping regions,
sigmoid outputs, e.g. BraTS) on one boolean mask per region, converted back to a label map by
painting the regions in ``regions_class_order`` exactly as nnU-Net does.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from .regions import region_ancestors


@dataclass(frozen=True)
class DatasetLabels:
    """Classes (label datasets) or regions (region datasets) of a dataset.

    Attributes
    ----------
    names : tuple of str
        Name of each foreground class / region (``dataset.json`` key), in nnU-Net's order
        (which is the order of the probability channels of region datasets).
    values : tuple of tuples of int
        Label values of each class (one value) or region (one or more).
    has_regions : bool
        Whether the dataset is region-based.
    regions_class_order : tuple of int or None
        Label painted for each region when converting masks to a label map.
    ignore_label : int or None
        The ignore label, excluded from every class and from the metrics.
    all_labels : tuple of int
        Every label value of the label map (background included, ignore excluded): the
        probability channels of label datasets.
    nnunet_keys : tuple
        Each class / region as nnU-Net writes it (``int`` or ``tuple``), used in its
        ``postprocessing.pkl``.
    ancestors : tuple of tuples of int
        Regions strictly containing each region (empty for label datasets).
    labels_dict : dict
        The ``labels`` entry of ``dataset.json``.
    """

    names: Tuple[str, ...]
    values: Tuple[Tuple[int, ...], ...]
    has_regions: bool
    regions_class_order: Optional[Tuple[int, ...]]
    ignore_label: Optional[int]
    all_labels: Tuple[int, ...]
    nnunet_keys: tuple
    ancestors: Tuple[Tuple[int, ...], ...]
    labels_dict: dict

    @classmethod
    def from_dataset_json(cls, dataset_json: Union[str, dict]) -> "DatasetLabels":
        """Build from a ``dataset.json`` path or its parsed content (keys ``labels`` and, for
        region datasets, ``regions_class_order``)."""
        from nnunetv2.utilities.label_handling.label_handling import LabelManager

        source = "dataset.json"
        if isinstance(dataset_json, (str, os.PathLike)):
            source = str(dataset_json)
            if not os.path.isfile(source):
                raise FileNotFoundError(f"dataset.json not found: {source}")
            with open(source) as f:
                try:
                    dataset_json = json.load(f)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{source} is not valid JSON: {e}") from None
        if "labels" not in dataset_json:
            raise KeyError(f"{source} has no 'labels' entry")
        labels = dataset_json["labels"]
        order = dataset_json.get("regions_class_order")
        try:
            lm = LabelManager(labels, regions_class_order=order)
        except (AssertionError, RuntimeError) as e:
            raise ValueError(f"{source}: invalid 'labels'/'regions_class_order': {e}") from None
        keys = tuple(lm.foreground_regions if lm.has_regions else lm.foreground_labels)
        if not keys:
            raise ValueError(f"{source}: 'labels' defines no foreground class or region")
        by_value = {}
        for name, v in labels.items():
            if name == "ignore":
                continue
            by_value.setdefault(_as_tuple(v), name)
        values = tuple(_as_tuple(k) for k in keys)
        names = tuple(by_value.get(v, "_".join(map(str, v))) for v in values)
        return cls(
            names=names, values=values, has_regions=bool(lm.has_regions),
            regions_class_order=tuple(int(c) for c in order) if lm.has_regions else None,
            ignore_label=lm.ignore_label if lm.has_ignore_label else None,
            all_labels=tuple(int(v) for v in lm.all_labels),
            nnunet_keys=tuple(k if isinstance(k, tuple) else int(k) for k in keys),
            ancestors=region_ancestors(values) if lm.has_regions else tuple(() for _ in values),
            labels_dict=dict(labels),
        )

    # ------------------------------------------------------------------ lookups
    def index(self, name: str, where: str = "class") -> int:
        """Index of a class / region by name; ``KeyError`` naming the known names otherwise."""
        try:
            return self.names.index(name)
        except ValueError:
            kind = "region" if self.has_regions else "class"
            raise KeyError(f"{where}: {name!r} is not a {kind} of dataset.json "
                           f"(known: {list(self.names)})") from None

    @property
    def n_channels(self) -> int:
        """Channels of nnU-Net's saved probabilities: regions, or every label incl. background."""
        return len(self.values) if self.has_regions else len(self.all_labels)

    # ------------------------------------------------------------------ conversions
    def class_mask(self, seg: np.ndarray, index: int) -> np.ndarray:
        """Boolean mask of class / region ``index`` in a label map (any shape)."""
        return np.isin(seg, self.values[index])

    def to_masks(self, seg: np.ndarray) -> np.ndarray:
        """Label map (spatial shape S) → masks, shape (n_classes, *S), one per class / region."""
        return np.stack([self.class_mask(seg, i) for i in range(len(self.values))])

    def to_segmentation(self, masks: np.ndarray, dtype=np.uint8) -> np.ndarray:
        """Region masks, shape (R, *S) → label map, shape S, painting ``regions_class_order``
        in order (later regions overwrite earlier ones), as nnU-Net does. For label datasets the
        masks must be disjoint and each gets its label value."""
        seg = np.zeros(masks.shape[1:], dtype=np.uint16 if max(self.all_labels) > 255 else dtype)
        paint = self.regions_class_order if self.has_regions else [v[0] for v in self.values]
        for i, c in enumerate(paint):
            seg[masks[i]] = c
        return seg

    def probabilities_to_segmentation(self, probabilities: np.ndarray) -> np.ndarray:
        """nnU-Net's rule: regions painted where their probability > 0.5, labels by argmax.

        Parameters
        ----------
        probabilities : ndarray of float, shape (n_channels, *S)
        """
        if self.has_regions:
            return self.to_segmentation(probabilities > 0.5)
        lut = np.asarray(self.all_labels)
        return lut[np.argmax(probabilities, axis=0)].astype(np.uint16 if lut.max() > 255 else np.uint8)


def _as_tuple(v) -> Tuple[int, ...]:
    return tuple(int(x) for x in v) if isinstance(v, (list, tuple)) else (int(v),)


def check_same_labels(expected: dict, actual: dict, where: str) -> None:
    """Raise ``ValueError`` if two ``labels`` dicts differ (a pipeline determined on another
    dataset must not be applied silently)."""
    norm = lambda d: {k: list(_as_tuple(v)) for k, v in d.items()}  # noqa: E731
    if norm(expected) != norm(actual):
        raise ValueError(f"{where}: the pipeline was made for labels {expected}, but dataset.json "
                         f"has {actual}")


def label_values_of(labels: DatasetLabels, indices: Sequence[int]) -> Tuple[int, ...]:
    """All label values of the given classes / regions (sorted, unique)."""
    return tuple(sorted({v for i in indices for v in labels.values[i]}))
