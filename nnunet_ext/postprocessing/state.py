"""One case being post-processed: how an edit of a class or region changes the segmentation.

Label datasets are held as the label map; region datasets as one boolean mask per region.
Edits keep each representation consistent:

* label map — removed voxels become background (0); added voxels (hole filling) are only
  taken from background, so no other class is overwritten; a threshold assigns the class where
  its probability exceeds the threshold (hysteresis: where its hysteresis mask is) and gives the
  voxels it releases to the most probable other label; bridges only take background voxels;
* region masks — removed voxels leave the edited regions and every region inside them; added
  voxels join the edited region and every region containing it
  (:func:`~nnunet_ext.postprocessing.regions.propagate_change`), so nested regions stay nested.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from . import regions as _regions
from .labels import DatasetLabels, label_values_of


class CaseState:
    """Segmentation of one case under post-processing.

    Parameters
    ----------
    labels : DatasetLabels
    seg : ndarray of int, spatial shape S, optional
        Label map (label datasets, or region datasets whose masks are derived from it).
    masks : ndarray of bool, shape (R, *S), optional
        Region masks (region datasets only). Give exactly one of ``seg`` / ``masks``.
    """

    def __init__(self, labels: DatasetLabels, seg: Optional[np.ndarray] = None,
                 masks: Optional[np.ndarray] = None):
        if (seg is None) == (masks is None):
            raise ValueError("give exactly one of seg and masks")
        self.labels = labels
        if labels.has_regions:
            self.masks = labels.to_masks(seg) if masks is None else np.asarray(masks, dtype=bool).copy()
            self.seg = None
        else:
            if masks is not None:
                raise ValueError("label datasets are held as a label map, not as masks")
            self.seg = np.array(seg, copy=True)
            self.masks = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_probabilities(cls, labels: DatasetLabels, probabilities: np.ndarray) -> "CaseState":
        """Raw network decision: per-region ``p > 0.5`` masks (not repaired, may violate the
        nesting) or the argmax label map.

        Parameters
        ----------
        probabilities : ndarray of float, shape (n_channels, *S)
        """
        if labels.has_regions:
            return cls(labels, masks=probabilities > 0.5)
        return cls(labels, seg=labels.probabilities_to_segmentation(probabilities))

    def copy(self) -> "CaseState":
        if self.labels.has_regions:
            return CaseState(self.labels, masks=self.masks)
        return CaseState(self.labels, seg=self.seg)

    @property
    def shape(self):
        return self.masks.shape[1:] if self.masks is not None else self.seg.shape

    # ------------------------------------------------------------------ reading
    def mask(self, indices: Sequence[int]) -> np.ndarray:
        """Union of the masks of the given classes / regions, spatial shape."""
        if self.masks is not None:
            return np.any(self.masks[list(indices)], axis=0)
        return np.isin(self.seg, label_values_of(self.labels, indices))

    def class_mask(self, index: int) -> np.ndarray:
        """Mask of one class / region (what the metrics are computed on)."""
        if self.masks is not None:
            return self.masks[index].copy()
        return self.labels.class_mask(self.seg, index)

    def segmentation(self) -> np.ndarray:
        """The label map (regions painted in ``regions_class_order``, nnU-Net's rule)."""
        if self.masks is not None:
            return self.labels.to_segmentation(self.masks)
        return self.seg.copy()

    # ------------------------------------------------------------------ editing (in place)
    def remove(self, indices: Sequence[int], removed: np.ndarray) -> None:
        """Take ``removed`` voxels out of the given classes / regions."""
        if self.masks is not None:
            _regions.propagate_change(self.masks, indices, removed, np.zeros_like(removed),
                                      self.labels.ancestors)
        else:
            self.seg[removed & self.mask(indices)] = 0

    def add(self, index: int, added: np.ndarray) -> None:
        """Put ``added`` voxels into class / region ``index`` (label maps: background voxels only)."""
        if self.masks is not None:
            _regions.propagate_change(self.masks, [index], np.zeros_like(added), added,
                                      self.labels.ancestors)
        else:
            self.seg[added & (self.seg == 0)] = self.labels.values[index][0]

    def probability(self, index: int, probabilities: np.ndarray) -> np.ndarray:
        """The probability channel of class / region ``index``, spatial shape.

        Parameters
        ----------
        probabilities : ndarray of float, shape (n_channels, *S)
            Region datasets: one channel per region; label datasets: one per label value.
        """
        if self.labels.has_regions:
            return probabilities[index]
        return probabilities[self.labels.all_labels.index(self.labels.values[index][0])]

    def other_classes(self, index: int) -> Optional[np.ndarray]:
        """Voxels that an addition to class ``index`` cannot take: another foreground label of a
        label map (:meth:`add` only takes background). ``None`` for region datasets."""
        if self.labels.has_regions:
            return None
        return (self.seg != 0) & ~self.mask([index])

    def set_from_probability(self, index: int, probabilities: np.ndarray, threshold: float) -> None:
        """Class / region ``index`` becomes ``probabilities[channel] > threshold``.

        Parameters
        ----------
        probabilities : ndarray of float, shape (n_channels, *S)
        """
        self.set_mask(index, self.probability(index, probabilities) > threshold, probabilities)

    def set_mask(self, index: int, new: np.ndarray, probabilities: np.ndarray) -> None:
        """Class / region ``index`` becomes ``new`` (a decision on its probabilities); label maps
        give the voxels it releases to the most probable other label.

        Parameters
        ----------
        new : ndarray of bool, spatial shape
        probabilities : ndarray of float, shape (n_channels, *S)
        """
        lab = self.labels
        if lab.has_regions:
            old = self.masks[index]
            _regions.propagate_change(self.masks, [index], old & ~new, new & ~old, lab.ancestors)
            return
        value = lab.values[index][0]
        ch = lab.all_labels.index(value)
        released = (self.seg == value) & ~new
        if released.any():
            others = np.delete(probabilities[:, released], ch, axis=0)
            lut = np.delete(np.asarray(lab.all_labels), ch)
            self.seg[released] = lut[np.argmax(others, axis=0)]
        self.seg[new] = value

    def enforce_nesting(self, rule: str) -> None:
        """Repair the region masks with ``rule`` (see :mod:`.regions`)."""
        if self.masks is None:
            raise ValueError("nesting enforcement needs a region dataset")
        self.masks = _regions.enforce_nesting(self.masks, self.labels.ancestors, rule)
