"""Which channels of a packed target are segmentation and which are auxiliary targets.

An :class:`AuxiliaryTarget` only says how to compute a target from one segmentation; the transforms of
:mod:`nnunet_ext.targets.transforms` call it on the segmentation of every deep-supervision level (with that
level's spacing), so no auxiliary target is ever resized.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

@dataclass(frozen=True)
class AuxiliaryTarget:
    """An auxiliary target computed from the ground truth of one patch.

    name: key under which the loss term receives it.
    channels_per_class: output channels per foreground class/region (e.g. 1 for a skeleton tube).
    compute: ``compute(foreground (C, *S) bool, valid (*S) bool or None, spacing) -> (C * k, *S) float32``;
        must be a picklable callable (module-level function or ``functools.partial`` of one), because it
        runs in nnU-Net's data-augmentation worker processes. It is called once per deep-supervision
        level on that level's (nearest-downsampled) segmentation with that level's voxel spacing, so it
        must not assume the full-resolution grid. The package's targets ask for foreground of class c
        only where their input says c, so they agree with the segmentation target of every output.
    """

    name: str
    channels_per_class: int
    compute: Callable[[np.ndarray, np.ndarray | None, Sequence[float]], np.ndarray]

    def __post_init__(self):
        if self.channels_per_class < 1:
            raise ValueError(f"auxiliary target {self.name!r}: channels_per_class must be >= 1")


@dataclass(frozen=True)
class TargetLayout:
    """Channel layout of a packed target ``(B, n_segmentation + Σ aux channels, *S)``.

    n_segmentation_channels: 1 for a label map; the number of regions (+1 for the ignore mask) in
        region mode, i.e. exactly what nnU-Net's own pipeline produces.
    n_foreground: foreground classes or regions (auxiliary targets have ``channels_per_class`` each).
    """

    n_segmentation_channels: int
    n_foreground: int
    auxiliary: tuple[AuxiliaryTarget, ...] = ()

    @property
    def n_channels(self) -> int:
        return self.n_segmentation_channels + sum(a.channels_per_class * self.n_foreground for a in self.auxiliary)

    def slices(self) -> dict[str, slice]:
        """Channel slice of every auxiliary target inside the packed target."""
        out, start = {}, self.n_segmentation_channels
        for aux in self.auxiliary:
            stop = start + aux.channels_per_class * self.n_foreground
            out[aux.name] = slice(start, stop)
            start = stop
        return out

    def split(self, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(segmentation part, {name: auxiliary part})``; an unpacked target (validation, where no
        auxiliary targets are computed) gives an empty dict."""
        if target.shape[1] == self.n_segmentation_channels:
            return target, {}
        if target.shape[1] != self.n_channels:
            raise ValueError(f"target has {target.shape[1]} channels; this layout expects "
                             f"{self.n_segmentation_channels} (segmentation only) or {self.n_channels} (packed)")
        seg = target[:, : self.n_segmentation_channels]
        return seg, {name: target[:, s] for name, s in self.slices().items()}
