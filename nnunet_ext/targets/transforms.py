"""batchgeneratorsv2 transforms that pack auxiliary targets behind the segmentation of a patch.

Auxiliary targets are computed from the segmentation *of the resolution they supervise*. Without deep
supervision, :class:`AppendAuxiliaryTargets` computes them from the full-resolution patch. With deep
supervision, :class:`DownsampleSegAndAppendAuxiliaryForDS` replaces nnU-Net's
``DownsampleSegForDSTransform``: it downsamples the segmentation exactly as nnU-Net does and computes every
auxiliary target afresh from each level's own segmentation, with that level's voxel spacing. So a tube, a
centreline weight or a negative signed distance lies only on voxels that the level's segmentation target
(what Dice+CE/BCE is trained on) calls foreground of that class, and in label mode tubes of different
classes never overlap. (Pooling full-resolution targets instead puts thin tubes on voxels nearest-exact
calls background, and makes two classes' tubes share voxels.)
"""
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

    Runs in nnU-Net's augmentation workers, after spatial augmentation and region conversion, when the
    network has no deep supervision (with it, use :class:`DownsampleSegAndAppendAuxiliaryForDS`).
    ``spacing`` is the patch's voxel spacing (the configuration's).
    """

    def __init__(self, layout: TargetLayout, has_regions: bool, ignore_label: int | None,
                 spacing: Sequence[float]):
        super().__init__()
        self.layout = layout
        self.has_regions = has_regions
        self.ignore_label = ignore_label
        self.spacing = tuple(float(s) for s in spacing)

    def _pack(self, segmentation: torch.Tensor, spacing: Sequence[float]) -> torch.Tensor:
        """``segmentation (n_seg, *S)`` and its voxel spacing → the packed ``(n_channels, *S)`` float32."""
        seg = segmentation.numpy()
        if seg.shape[0] != self.layout.n_segmentation_channels:
            raise ValueError(f"segmentation has {seg.shape[0]} channels, layout expects "
                             f"{self.layout.n_segmentation_channels}")
        foreground, valid = foreground_view(seg, self.has_regions, self.layout.n_foreground, self.ignore_label)
        parts = [segmentation.float()]
        for aux in self.layout.auxiliary:
            values = np.asarray(aux.compute(foreground, valid, spacing), dtype=np.float32)
            expected = (aux.channels_per_class * self.layout.n_foreground,) + seg.shape[1:]
            if values.shape != expected:
                raise ValueError(f"auxiliary target {aux.name!r} returned shape {values.shape}, expected {expected}")
            parts.append(torch.from_numpy(values))
        return torch.cat(parts)

    def _apply_to_segmentation(self, segmentation: torch.Tensor, **params) -> torch.Tensor:
        return self._pack(segmentation, self.spacing[-(segmentation.ndim - 1):])


class DownsampleSegAndAppendAuxiliaryForDS(AppendAuxiliaryTargets):
    """nnU-Net's ``DownsampleSegForDSTransform`` with the auxiliary targets of every level packed behind
    that level's segmentation: ``(n_seg, *S)`` → a list with one ``(n_seg + n_aux, *S_i)`` float32 tensor
    per scale.

    Level i's segmentation is exactly nnU-Net's (``nearest-exact`` to ``round(size · scale)``; the input
    itself at scale 1), and its auxiliary targets are ``compute(foreground_view(level segmentation),
    spacing / scale)``: computed from the very target Dice+CE/BCE sees at that output, with the voxel spacing
    of that resolution (``ds_scales`` are nnU-Net's per-axis fractions ≤ 1, one list per output, or one
    number per output for all axes). A target defined in voxels of the finest spacing (the skeleton tube's
    radius) is therefore that many voxels of the level.
    """

    def __init__(self, ds_scales: Sequence, layout: TargetLayout, has_regions: bool, ignore_label: int | None,
                 spacing: Sequence[float]):
        super().__init__(layout, has_regions, ignore_label, spacing)
        self.ds_scales = ds_scales

    def _apply_to_segmentation(self, segmentation: torch.Tensor, **params) -> list[torch.Tensor]:
        dims = segmentation.ndim - 1
        spacing = self.spacing[-dims:]
        seg_float = None  # as nnU-Net: one float copy of the full-resolution segmentation for every level
        results = []
        for scale in self.ds_scales:
            scale = list(scale) if isinstance(scale, (tuple, list)) else [scale] * dims
            if len(scale) != dims:
                raise ValueError(f"deep-supervision scale {scale} does not match a {dims}D segmentation")
            if all(f == 1 for f in scale):
                level = segmentation
            else:
                if seg_float is None:
                    seg_float = segmentation[None].float()
                shape = [round(s * f) for s, f in zip(segmentation.shape[1:], scale)]
                level = F.interpolate(seg_float, shape, mode="nearest-exact")[0]
            results.append(self._pack(level, tuple(s / f for s, f in zip(spacing, scale))))
        return results
