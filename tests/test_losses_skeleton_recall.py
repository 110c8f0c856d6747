"""Skeleton Recall: hand-computed values, batch pooling, ignore mask, per-class tubes, property tests."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from nnunet_ext.losses.skeleton_recall import SkeletonRecallLoss
from nnunet_ext.targets.ground_truth import skeleton_tube_target


def test_hand_computed_recall_on_the_tube():
    tube = torch.zeros(1, 1, 4, 5, dtype=torch.float64)
    tube[0, 0, 1, :] = 1  # 5 tube voxels
    p = torch.zeros_like(tube)
    p[0, 0, 1, :3] = torch.tensor([1.0, 0.5, 0.25])
    p[0, 0, 3, :] = 1  # foreground off the tube is not rewarded (nor punished: recall only)
    loss = SkeletonRecallLoss(smooth=1e-9)(p, tube, None, tube)
    assert loss.item() == pytest.approx(1 - 1.75 / 5)
    loss = SkeletonRecallLoss(smooth=1.0, reduction="none")(p, tube, None, tube)
    assert loss.shape == (1, 1) and loss.item() == pytest.approx(1 - 2.75 / 6)


def test_perfect_prediction_gives_zero_and_tube_from_labels():
    labels = np.zeros((2, 6, 12, 14), bool)
    labels[0, 1:4, 2:5, 1:13] = True
    labels[1, 2:5, 6:11, 3:10] = True
    tube = torch.from_numpy(skeleton_tube_target(labels))[None].double()
    target = torch.from_numpy(labels)[None].double()
    assert SkeletonRecallLoss(smooth=1e-9)(target, target, None, tube).item() == pytest.approx(0, abs=1e-9)
    # predicting class 0 where class 1 is, and vice versa, misses both tubes
    swapped = target.flip(1)
    assert SkeletonRecallLoss(smooth=1e-9)(swapped, target, None, tube).item() == pytest.approx(1, abs=1e-9)


def test_batch_dice_pools_the_sums_over_the_batch():
    rng = np.random.default_rng(0)
    p = torch.from_numpy(rng.random((3, 2, 8, 8)))
    tube = torch.from_numpy((rng.random((3, 2, 8, 8)) > 0.7).astype(np.float64))
    pooled = SkeletonRecallLoss(batch_dice=True, smooth=1.0, reduction="none")(p, tube, None, tube)
    expected = 1 - ((p * tube).sum((0, 2, 3)) + 1) / (tube.sum((0, 2, 3)) + 1)
    assert pooled.shape == (2,) and torch.allclose(pooled, expected)


def test_ignored_voxels_do_not_count_even_if_the_tube_says_so():
    p = torch.full((1, 1, 4, 4), 0.2, dtype=torch.float64, requires_grad=True)
    tube = torch.ones(1, 1, 4, 4, dtype=torch.float64)
    valid = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    valid[..., :2] = True
    loss = SkeletonRecallLoss(smooth=1e-9)(p, tube, valid, tube)
    loss.backward()
    assert loss.item() == pytest.approx(0.8)
    assert p.grad[..., 2:].abs().max() == 0 and (p.grad[..., :2] < 0).all()


def test_empty_tube_gives_zero():
    p = torch.rand(2, 3, 5, 5, 5)
    assert SkeletonRecallLoss()(p, p * 0, None, p * 0).item() == 0


def test_invalid_arguments():
    with pytest.raises(ValueError, match="smooth"):
        SkeletonRecallLoss(smooth=0)
    with pytest.raises(ValueError, match="reduction"):
        SkeletonRecallLoss(reduction="sum")
    with pytest.raises(ValueError, match="tube"):
        SkeletonRecallLoss()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), None, torch.zeros(1, 1, 4, 4))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.01, 10.0), st.booleans())
def test_bounded_and_monotone_in_the_prediction_on_the_tube(seed, smooth, batch_dice):
    rng = np.random.default_rng(seed)
    p = torch.from_numpy(rng.random((2, 2, 6, 7)))
    tube = torch.from_numpy((rng.random((2, 2, 6, 7)) > 0.6).astype(np.float64))
    valid = torch.from_numpy(rng.random((2, 1, 6, 7)) > 0.3)
    loss = SkeletonRecallLoss(smooth=smooth, batch_dice=batch_dice)
    value = loss(p, tube, valid, tube)
    assert 0 <= value.item() < 1
    higher = torch.where(tube > 0, (p + 0.1).clamp(max=1), p)
    assert loss(higher, tube, valid, tube).item() <= value.item() + 1e-12
    assert loss(torch.ones_like(p), tube, valid, tube).item() == pytest.approx(0, abs=1e-12)
