"""Packed auxiliary targets: layout, computation in the augmentation pipeline, per deep-supervision level."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from scipy import ndimage

from nnunet_ext.targets import (AppendAuxiliaryTargets, AuxiliaryTarget, DownsampleSegAndAppendAuxiliaryForDS,
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
    layout = TargetLayout(1, 1, (AuxiliaryTarget("dist", 1, distance_inside),))
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


def spacing_probe(foreground, valid, spacing):
    """Test auxiliary target (3 channels per class): the spacing it was called with, on every voxel."""
    return np.stack([np.full(foreground.shape[1:], s, np.float32) for s in spacing for _ in foreground])


@pytest.mark.parametrize("mode", ["labels", "regions"])
def test_ds_levels_are_nnunets_segmentation_with_targets_computed_from_each_level(mode):
    rng = np.random.default_rng(0)
    labels = torch.from_numpy(rng.integers(0, 4, (1, 8, 16, 12)).astype(np.int16))  # 3 = ignore
    if mode == "labels":
        seg, layout = labels, TargetLayout(1, 2, (AuxiliaryTarget("dist", 1, distance_inside),
                                                  AuxiliaryTarget("spacing", 3, spacing_probe)))
    else:  # two regions + the ignore mask, as nnU-Net's region conversion hands them over
        seg = torch.cat([(labels == 1) | (labels == 2), labels == 2, labels == 3])
        layout = TargetLayout(3, 2, (AuxiliaryTarget("dist", 1, distance_inside),
                                     AuxiliaryTarget("spacing", 3, spacing_probe)))
    scales = [[1, 1, 1], [0.5, 0.5, 0.5], [0.5, 0.25, 0.25], [0.25, 0.125, 0.25]]
    spacing = (3.0, 1.0, 2.0)
    ours = DownsampleSegAndAppendAuxiliaryForDS(scales, layout, mode == "regions", 3, spacing)(
        segmentation=seg.clone())["segmentation"]
    theirs = DownsampleSegForDSTransform(scales)(segmentation=seg.clone())["segmentation"]
    n_seg = layout.n_segmentation_channels
    assert [tuple(o.shape) for o in ours] == [(n_seg + 8,) + tuple(t.shape[1:]) for t in theirs]
    assert [tuple(t.shape[1:]) for t in theirs] == [(8, 16, 12), (4, 8, 6), (4, 4, 3), (2, 2, 3)]
    for level, (o, t, scale) in enumerate(zip(ours, theirs, scales)):
        assert o.dtype == torch.float32 and torch.equal(o[:n_seg], t.float()), f"segmentation, level {level}"
        foreground, valid = foreground_view(t.numpy(), mode == "regions", 2, 3)
        level_spacing = [s / f for s, f in zip(spacing, scale)]
        assert np.allclose(o[n_seg:n_seg + 2].numpy(), distance_inside(foreground, valid, level_spacing))
        probe = o[n_seg + 2:].reshape((3, 2) + tuple(t.shape[1:]))
        assert all(bool((probe[a] == s).all()) for a, s in enumerate(level_spacing)), f"spacing, level {level}"
        seg_part, aux = layout.split(o[None])
        assert torch.equal(seg_part[0], o[:n_seg]) and set(aux) == {"dist", "spacing"}


def test_ds_targets_by_hand():
    # 2D, spacing (2, 0.5): a 4×4 block at full resolution; nearest-exact at 1/2 keeps rows/columns 1, 3, 5, 7
    seg = torch.zeros(1, 8, 8, dtype=torch.int16)
    seg[0, 2:6, 2:6] = 1
    layout = TargetLayout(1, 1, (AuxiliaryTarget("dist", 1, distance_inside),))
    full, half = DownsampleSegAndAppendAuxiliaryForDS([[1, 1], [0.5, 0.5]], layout, False, None, (2.0, 0.5))(
        segmentation=seg)["segmentation"]
    assert full[1, 2].tolist() == [0, 0, 0.5, 1.0, 1.0, 0.5, 0, 0]  # distance to the background along x
    assert half[0].tolist() == [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    # the 2×2 block at spacing (4, 1): 1 mm to the background along x; mean-pooling the full-resolution
    # map would give 0.25–0.75, on a grid where the target is a different block
    assert half[1].tolist() == [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]


def test_ds_tubes_lie_on_the_level_foreground_of_their_class():
    from nnunet_ext.targets import skeleton_tube_target

    seg = torch.zeros(1, 8, 16, 16, dtype=torch.int16)
    seg[0, 2, 4, :] = 1  # a one-voxel line on even indices: nearest-exact at 1/2 samples odd ones
    seg[0, 3:5, 5:9, 2:14] = 2  # a thicker class-2 vessel touching it
    layout = TargetLayout(1, 2, (AuxiliaryTarget("tube", 1, skeleton_tube_target),))
    levels = DownsampleSegAndAppendAuxiliaryForDS([[1, 1, 1], [0.5, 0.5, 0.5]], layout, False, None,
                                                 (1.0, 1.0, 1.0))(segmentation=seg)["segmentation"]
    assert levels[0][1].sum() > 0 and levels[0][2].sum() > 0
    half = levels[1]
    assert not (half[0] == 1).any()  # nnU-Net's half-resolution target has lost the line ...
    assert half[1].sum() == 0  # ... so it has no tube there
    assert half[2].sum() > 0 and torch.equal(half[2] > 0, (half[2] > 0) & (half[0] == 2))


def test_without_ds_scales_of_one_the_targets_are_the_full_resolution_ones():
    layout = TargetLayout(1, 1, (AuxiliaryTarget("dist", 1, distance_inside),))
    seg = torch.zeros(1, 5, 9, 9, dtype=torch.int16)
    seg[0, :, 2:7, 2:7] = 1
    full = AppendAuxiliaryTargets(layout, False, None, (3.0, 1.0, 2.0))(segmentation=seg.clone())["segmentation"]
    (level,) = DownsampleSegAndAppendAuxiliaryForDS([1], layout, False, None, (3.0, 1.0, 2.0))(
        segmentation=seg.clone())["segmentation"]
    assert torch.equal(level, full)


def test_split_accepts_unpacked_targets_and_rejects_unknown_layouts():
    layout = TargetLayout(3, 2, (AuxiliaryTarget("a", 2, as_float),))
    assert layout.n_channels == 7 and layout.slices() == {"a": slice(3, 7)}
    target = torch.zeros(2, 3, 4, 4)
    assert layout.split(target) == (target, {})
    with pytest.raises(ValueError, match="expects 3 .* or 7"):
        layout.split(torch.zeros(2, 5, 4, 4))


def test_invalid_auxiliary_definitions():
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

    layout = TargetLayout(1, 1, (AuxiliaryTarget("tube", 1, as_float),))
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
