"""Packed auxiliary targets: layout, computation in the augmentation pipeline, DS downsampling."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from scipy import ndimage

from nnunet_ext.targets import (AppendAuxiliaryTargets, AuxiliaryTarget, DownsamplePackedTargetsForDS,
                                TargetLayout, foreground_view)


def distance_inside(foreground, valid, spacing):
    """Test auxiliary target: physical distance to the background, per foreground channel."""
    return np.stack([ndimage.distance_transform_edt(f, sampling=spacing) for f in foreground]).astype(np.float32)


def as_float(foreground, valid, spacing):
    return foreground.astype(np.float32)


def test_foreground_view_labels_with_ignore():
    seg = np.array([[[0, 1, 2, 3], [3, 2, 1, 0]]])  # (1, 2, 4), ignore label 3
    foreground, valid = foreground_view(seg, has_regions=False, n_foreground=2, ignore_label=3)
    assert foreground.shape == (2, 2, 4)
    assert foreground[0].tolist() == [[False, True, False, False], [False, False, True, False]]
    assert valid.tolist() == [[True, True, True, False], [False, True, True, True]]


def test_foreground_view_regions_never_marks_ignored_voxels_as_foreground():
    regions = np.array([[[1, 1, 0]], [[0, 1, 1]], [[0, 1, 0]]], dtype=bool)  # 2 regions + ignore mask
    foreground, valid = foreground_view(regions, has_regions=True, n_foreground=2, ignore_label=3)
    assert foreground.tolist() == [[[True, False, False]], [[False, False, True]]]
    assert valid.tolist() == [[True, False, True]]


def test_append_computes_with_spacing_and_packs_behind_the_segmentation():
    layout = TargetLayout(1, 1, (AuxiliaryTarget("dist", 1, distance_inside, "mean"),))
    seg = torch.zeros(1, 5, 9, 9, dtype=torch.int16)
    seg[0, :, 2:7, 2:7] = 1
    packed = AppendAuxiliaryTargets(layout, False, None, spacing=(3.0, 1.0, 2.0))(segmentation=seg)["segmentation"]
    assert packed.shape == (2, 5, 9, 9) and packed.dtype == torch.float32
    assert torch.equal(packed[0], seg[0].float())
    expected = ndimage.distance_transform_edt(seg[0].numpy(), sampling=(3.0, 1.0, 2.0))
    assert np.allclose(packed[1].numpy(), expected)
    seg_part, aux = layout.split(packed[None])
    assert torch.equal(seg_part[0], seg.float()) and torch.equal(aux["dist"][0], packed[1:])


def test_append_rejects_a_wrongly_shaped_auxiliary_target():
    layout = TargetLayout(1, 2, (AuxiliaryTarget("fg", 1, as_float),))  # two classes in one label map
    seg = torch.zeros(1, 4, 4, dtype=torch.int16)
    bad = TargetLayout(1, 2, (AuxiliaryTarget("bad", 1, lambda f, v, s: f[:1].astype(np.float32)),))
    with pytest.raises(ValueError, match="'bad' returned shape"):
        AppendAuxiliaryTargets(bad, False, None, (1.0, 1.0))(segmentation=seg)
    out = AppendAuxiliaryTargets(layout, False, None, (1.0, 1.0))(segmentation=seg)["segmentation"]
    assert out.shape == (3, 4, 4)


def test_downsampling_matches_nnunet_for_the_segmentation_and_keeps_thin_lines_with_max():
    layout = TargetLayout(1, 1, (AuxiliaryTarget("tube", 1, as_float, "max"),
                                 AuxiliaryTarget("near", 1, as_float, "nearest")))
    seg = torch.zeros(1, 8, 16, 16, dtype=torch.int16)
    seg[0, 2, 4, :] = 1  # a one-voxel line on even indices: nearest-exact at 1/2 samples odd ones
    packed = AppendAuxiliaryTargets(layout, False, None, (1.0, 1.0, 1.0))(segmentation=seg)["segmentation"]
    scales = [[1, 1, 1], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]]
    ours = DownsamplePackedTargetsForDS(scales, layout)(segmentation=packed)["segmentation"]
    theirs = DownsampleSegForDSTransform(scales)(segmentation=seg)["segmentation"]
    for level, (o, t) in enumerate(zip(ours, theirs)):
        assert torch.equal(o[:1], t.float())
        assert o[1].sum() > 0, f"max-downsampled tube vanished at level {level}"
    assert ours[1][2].sum() == 0  # nearest loses the line at half resolution
    assert [tuple(o.shape) for o in ours] == [(3, 8, 16, 16), (3, 4, 8, 8), (3, 2, 4, 4)]


def test_split_accepts_unpacked_targets_and_rejects_unknown_layouts():
    layout = TargetLayout(3, 2, (AuxiliaryTarget("a", 2, as_float),))
    assert layout.n_channels == 7 and layout.slices() == {"a": slice(3, 7)}
    target = torch.zeros(2, 3, 4, 4)
    assert layout.split(target) == (target, {})
    with pytest.raises(ValueError, match="expects 3 .* or 7"):
        layout.split(torch.zeros(2, 5, 4, 4))


def test_invalid_auxiliary_definitions():
    with pytest.raises(ValueError, match="downsampling"):
        AuxiliaryTarget("x", 1, as_float, "bilinear")
    with pytest.raises(ValueError, match="channels_per_class"):
        AuxiliaryTarget("x", 0, as_float)


def test_compound_loss_hands_auxiliary_targets_to_their_terms_and_skips_them_when_absent():
    from nnunet_ext.losses import CompoundLoss, LossTerm

    class RecallOnAux(torch.nn.Module):
        def forward(self, probabilities, target, valid, auxiliary):
            return 1 - (probabilities * auxiliary).sum() / auxiliary.sum().clamp_min(1)

    class Zero(torch.nn.Module):
        def forward(self, logits, target):
            assert target.shape[1] == 1  # the base loss never sees auxiliary channels
            return logits.sum() * 0

    layout = TargetLayout(1, 1, (AuxiliaryTarget("tube", 1, as_float, "max"),))
    loss = CompoundLoss(Zero(), [LossTerm("recall", 1.0, RecallOnAux(), auxiliary="tube")], "softmax",
                        target_layout=layout)
    logits = torch.zeros(1, 2, 4, 4, requires_grad=True)
    seg = torch.zeros(1, 1, 4, 4)
    seg[0, 0, 1] = 1
    packed = torch.cat([seg, seg], dim=1)
    assert loss(logits, packed).item() == pytest.approx(0.5)  # softmax of zeros: p = 0.5 on the tube
    assert set(loss.last_values) == {"base", "recall"}
    assert loss(logits, seg).item() == 0  # validation batch without auxiliary channels: term skipped
    assert set(loss.last_values) == {"base"}
