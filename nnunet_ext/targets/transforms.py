"""batchgeneratorsv2 transforms that append auxiliary targets and downsample packed targets."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from batchgeneratorsv2.transforms.base.basic_transform import SegOnlyTransform

from nnunet_ext.targets.layout import TargetLayout


def foreground_view(segmentation: np.ndarray, has_regions: bool, n_foreground: int,
                    ignore_label: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """One patch's target as nnU-Net's pipeline hands it over → ``(foreground (C, *S) bool, valid)``.

    Label mode: ``segmentation`` is ``(1, *S)`` with values 0..C (and ``ignore_label``); foreground
    channel c is ``label == c + 1``. Region mode: ``(R, *S)`` or ``(R + 1, *S)`` with the ignore mask last.
    ``valid`` is False on ignored voxels (``None`` without an ignore label); ignored voxels are never
    foreground.
    """
    if has_regions:
        regions = segmentation[:n_foreground].astype(bool)
        valid = None
        if ignore_label is not None:
            valid = ~segmentation[n_foreground].astype(bool)
            regions = regions & valid
        return regions, valid
    labels = segmentation[0]
    valid = None if ignore_label is None else labels != ignore_label
    foreground = np.stack([labels == c for c in range(1, n_foreground + 1)])
    return foreground, valid


class AppendAuxiliaryTargets(SegOnlyTransform):
    """Computes the layout's auxiliary targets from the (augmented) segmentation of one sample and
    appends them as float32 channels: ``(n_seg, *S)`` → ``(n_seg + n_aux, *S)`` float32.

    Runs in nnU-Net's augmentation workers, after spatial augmentation and region conversion and before
    deep-supervision downsampling. ``spacing`` is the patch's voxel spacing (the configuration's).
    """

    def __init__(self, layout: TargetLayout, has_regions: bool, ignore_label: int | None,
                 spacing: Sequence[float]):
        super().__init__()
        self.layout = layout
        self.has_regions = has_regions
        self.ignore_label = ignore_label
        self.spacing = tuple(float(s) for s in spacing)

    def _apply_to_segmentation(self, segmentation: torch.Tensor, **params) -> torch.Tensor:
        seg = segmentation.numpy()
        if seg.shape[0] != self.layout.n_segmentation_channels:
            raise ValueError(f"segmentation has {seg.shape[0]} channels, layout expects "
                             f"{self.layout.n_segmentation_channels}")
        foreground, valid = foreground_view(seg, self.has_regions, self.layout.n_foreground, self.ignore_label)
        spacing = self.spacing[-(seg.ndim - 1):]
        parts = [segmentation.float()]
        for aux in self.layout.auxiliary:
            values = np.asarray(aux.compute(foreground, valid, spacing), dtype=np.float32)
            expected = (aux.channels_per_class * self.layout.n_foreground,) + seg.shape[1:]
            if values.shape != expected:
                raise ValueError(f"auxiliary target {aux.name!r} returned shape {values.shape}, expected {expected}")
            parts.append(torch.from_numpy(values))
        return torch.cat(parts)


def _resize(x: torch.Tensor, shape: Sequence[int], mode: str) -> torch.Tensor:
    """``(C, *S)`` → ``(C, *shape)``."""
    if tuple(x.shape[1:]) == tuple(shape):
        return x
    batched = x[None].float()
    if mode == "nearest":
        out = F.interpolate(batched, list(shape), mode="nearest-exact")
    else:
        pool = {("max", 2): F.adaptive_max_pool2d, ("max", 3): F.adaptive_max_pool3d,
                ("mean", 2): F.adaptive_avg_pool2d, ("mean", 3): F.adaptive_avg_pool3d}[(mode, len(shape))]
        out = pool(batched, list(shape))
    return out[0]


class DownsamplePackedTargetsForDS(SegOnlyTransform):
    """nnU-Net's deep-supervision downsampling for packed targets: the segmentation channels exactly as
    nnU-Net does (``nearest-exact`` to ``round(size · scale)``), each auxiliary target by its own mode.
    Returns a list with one ``(C, *S_i)`` tensor per scale."""

    def __init__(self, ds_scales: Sequence, layout: TargetLayout):
        super().__init__()
        self.ds_scales = ds_scales
        self.layout = layout

    def _apply_to_segmentation(self, segmentation: torch.Tensor, **params) -> list[torch.Tensor]:
        n_seg = self.layout.n_segmentation_channels
        slices = self.layout.slices()
        results = []
        for scale in self.ds_scales:
            if not isinstance(scale, (tuple, list)):
                scale = [scale] * (segmentation.ndim - 1)
            shape = [round(s * f) for s, f in zip(segmentation.shape[1:], scale)]
            parts = [_resize(segmentation[:n_seg], shape, "nearest")]
            parts += [_resize(segmentation[slices[a.name]], shape, a.downsampling) for a in self.layout.auxiliary]
            results.append(torch.cat(parts))
        return results
