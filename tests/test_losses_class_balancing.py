"""Focal loss, class-weighted CE and class-weighted soft Dice against MONAI / PyTorch and by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from nnunet_ext.losses.focal import FocalLoss
from nnunet_ext.losses.weighted_ce import WeightedCrossEntropyLoss
from nnunet_ext.losses.weighted_dice import WeightedSoftDiceLoss

monai_losses = pytest.importorskip("monai.losses")


def _labels(rng, n_classes, shape):
    labels = torch.from_numpy(rng.integers(0, n_classes, shape))
    onehot = F.one_hot(labels, n_classes).movedim(-1, 1).double()
    return labels, onehot


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("alpha", [None, 0.3, [0.2, 1.0, 3.0]])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_softmax_focal_matches_monai(dims, alpha, gamma):
    rng = np.random.default_rng(dims)
    shape = (2,) + (5,) * dims
    logits = torch.from_numpy(rng.normal(0, 1.5, (2, 3) + shape[1:]))
    labels, onehot = _labels(rng, 3, shape)
    reference = monai_losses.FocalLoss(gamma=gamma, alpha=alpha, use_softmax=True, reduction="none")(logits, onehot)
    ours = FocalLoss("softmax", gamma=gamma, alpha=alpha, reduction="none")(logits, onehot[:, 1:])
    assert torch.allclose(ours, reference.sum(1, keepdim=True).double(), atol=1e-6)  # MONAI works in float32
    mean = FocalLoss("softmax", gamma=gamma, alpha=alpha)(logits, onehot[:, 1:])
    assert mean.item() == pytest.approx(reference.sum(1).mean().item(), rel=1e-6)


@pytest.mark.parametrize("alpha", [None, 0.25])
@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_sigmoid_focal_matches_monai(alpha, gamma):
    rng = np.random.default_rng(7)
    logits = torch.from_numpy(rng.normal(0, 2, (2, 3, 6, 5, 4)))
    target = torch.from_numpy((rng.random((2, 3, 6, 5, 4)) > 0.6).astype(np.float64))
    reference = monai_losses.FocalLoss(gamma=gamma, alpha=alpha, reduction="mean")(logits, target)
    ours = FocalLoss("sigmoid", gamma=gamma, alpha=alpha)(logits, target)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-6)


def test_sigmoid_focal_per_region_alpha_weighs_positives_and_negatives():
    p = torch.tensor([0.9, 0.2]).view(1, 2, 1, 1).double()
    t = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1).double()
    loss = FocalLoss("sigmoid", gamma=1.0, alpha=[0.25, 0.75], reduction="none")(torch.logit(p), t)
    expected = [-0.25 * 0.1 * np.log(0.9), -(1 - 0.75) * 0.2 * np.log(0.8)]
    assert loss.flatten().tolist() == pytest.approx(expected)


def test_focal_ignore_mask_matches_monai_ignore_index():
    rng = np.random.default_rng(3)
    logits = torch.from_numpy(rng.normal(0, 1.5, (2, 3, 6, 7)))
    labels = torch.from_numpy(rng.integers(0, 4, (2, 1, 6, 7)))  # 3 = ignore
    reference = monai_losses.FocalLoss(gamma=2.0, use_softmax=True, to_onehot_y=True, ignore_index=3,
                                       reduction="none")(logits, labels)
    valid = labels != 3
    onehot = F.one_hot(torch.where(valid, labels, 0)[:, 0], 3).movedim(-1, 1).double() * valid
    ours = FocalLoss("softmax", gamma=2.0, reduction="none")(logits, onehot[:, 1:], valid)
    assert torch.allclose(ours, reference.sum(1, keepdim=True).double(), atol=1e-6)  # MONAI works in float32
    mean = FocalLoss("softmax", gamma=2.0)(logits, onehot[:, 1:], valid)
    assert mean.item() == pytest.approx((ours.sum() / valid.sum()).item())


def test_focal_arguments():
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=-1)
    with pytest.raises(ValueError, match="mode"):
        FocalLoss("regions")
    with pytest.raises(ValueError, match="alpha"):
        FocalLoss("sigmoid", alpha=[0.5, 2.0])
    with pytest.raises(ValueError, match="alpha"):
        FocalLoss("softmax", alpha=[1, 1])(torch.randn(1, 3, 3, 3), torch.zeros(1, 2, 3, 3))
    with pytest.raises(ValueError, match="C \\+ 1 channels"):  # probabilities instead of logits
        FocalLoss("softmax")(torch.rand(1, 2, 3, 3) / 2, torch.zeros(1, 2, 3, 3))


@pytest.mark.parametrize("weights", [None, [0.5, 2.0, 1.0, 4.0]])
def test_softmax_weighted_ce_matches_pytorch_cross_entropy(weights):
    rng = np.random.default_rng(1)
    logits = torch.from_numpy(rng.normal(0, 2, (2, 4, 5, 6, 7))).requires_grad_()
    labels = torch.from_numpy(rng.integers(0, 5, (2, 5, 6, 7)))  # 4 = ignore
    w = None if weights is None else torch.tensor(weights, dtype=torch.float64)
    reference = F.cross_entropy(logits, labels, weight=w, ignore_index=4)
    valid = (labels != 4)[:, None]
    onehot = F.one_hot(torch.where(valid[:, 0], labels, 0), 4).movedim(-1, 1).double() * valid
    ours = WeightedCrossEntropyLoss("softmax", weights)(logits, onehot[:, 1:], valid)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-9)
    g_ref, = torch.autograd.grad(reference, logits)
    g_ours, = torch.autograd.grad(ours, logits)
    assert torch.allclose(g_ours, g_ref, atol=1e-9)


def test_sigmoid_weighted_ce_matches_pytorch_bce():
    rng = np.random.default_rng(2)
    logits = torch.from_numpy(rng.normal(0, 2, (2, 3, 6, 7)))
    target = torch.from_numpy((rng.random((2, 3, 6, 7)) > 0.5).astype(np.float64))
    weights = [1.0, 3.0, 0.5]
    reference = F.binary_cross_entropy_with_logits(logits, target, weight=torch.tensor(weights).view(1, 3, 1, 1))
    ours = WeightedCrossEntropyLoss("sigmoid", weights)(logits, target)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-9)


def test_focal_with_gamma_zero_is_unweighted_cross_entropy():
    rng = np.random.default_rng(5)
    logits = torch.from_numpy(rng.normal(0, 1, (2, 3, 6, 6)))
    _, onehot = _labels(rng, 3, (2, 6, 6))
    assert FocalLoss("softmax", gamma=0.0)(logits, onehot[:, 1:]).item() == pytest.approx(
        WeightedCrossEntropyLoss("softmax")(logits, onehot[:, 1:]).item())


def test_weighted_ce_arguments():
    with pytest.raises(ValueError, match="class_weights"):
        WeightedCrossEntropyLoss("softmax", [0.0, 0.0])
    with pytest.raises(ValueError, match="class_weights"):
        WeightedCrossEntropyLoss("softmax", [1.0, -1.0])
    with pytest.raises(ValueError, match="class_weights"):
        WeightedCrossEntropyLoss("softmax", [1.0, 1.0])(torch.randn(1, 3, 3, 3), torch.zeros(1, 2, 3, 3))


@pytest.mark.parametrize("batch_dice", [False, True])
def test_weighted_dice_per_class_values_match_monai(batch_dice):
    rng = np.random.default_rng(4)
    p = torch.from_numpy(rng.random((2, 3, 6, 7, 5)))
    target = torch.from_numpy((rng.random((2, 3, 6, 7, 5)) > 0.6).astype(np.float64))
    reference = monai_losses.DiceLoss(smooth_nr=1e-5, smooth_dr=1e-5, batch=batch_dice, reduction="none")(p, target)
    reference = reference.reshape(-1, 3)[0] if batch_dice else reference.reshape(2, 3)
    ours = WeightedSoftDiceLoss(batch_dice=batch_dice, reduction="none")(p, target)
    assert torch.allclose(ours, reference, atol=1e-9)
    weights = [1.0, 2.0, 5.0]
    weighted = WeightedSoftDiceLoss(weights, batch_dice=batch_dice)(p, target)
    w = torch.tensor(weights, dtype=torch.float64)
    assert weighted.item() == pytest.approx(((reference * w).sum(-1) / w.sum()).mean().item())


def test_weighted_dice_with_ignore_equals_dice_on_the_valid_voxels_only():
    rng = np.random.default_rng(6)
    p = torch.from_numpy(rng.random((1, 2, 10, 8)))
    target = torch.from_numpy((rng.random((1, 2, 10, 8)) > 0.5).astype(np.float64))
    valid = torch.zeros(1, 1, 10, 8, dtype=torch.bool)
    valid[..., :6, :] = True
    loss = WeightedSoftDiceLoss([1.0, 3.0], reduction="none")
    assert torch.allclose(loss(p, target, valid), loss(p[..., :6, :], target[..., :6, :]))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.lists(st.floats(0.1, 10), min_size=2, max_size=2), st.booleans())
def test_weighted_dice_bounds_and_perfect_prediction(seed, weights, batch_dice):
    rng = np.random.default_rng(seed)
    p = torch.from_numpy(rng.random((2, 2, 5, 6)))
    target = torch.from_numpy((rng.random((2, 2, 5, 6)) > 0.5).astype(np.float64))
    loss = WeightedSoftDiceLoss(weights, batch_dice=batch_dice, smooth=1e-5)
    assert 0 <= loss(p, target).item() <= 1
    assert loss(target, target).item() == pytest.approx(0, abs=1e-9)
    # uniform weights of any scale are plain soft Dice
    assert WeightedSoftDiceLoss([weights[0]] * 2)(p, target).item() == pytest.approx(WeightedSoftDiceLoss()(p, target).item())


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0, 4), st.sampled_from(["softmax", "sigmoid"]))
def test_focal_is_non_negative_and_minimal_for_the_target(seed, gamma, mode):
    rng = np.random.default_rng(seed)
    if mode == "softmax":
        _, onehot = _labels(rng, 3, (1, 4, 5))
        target = onehot[:, 1:]
        logits = torch.from_numpy(rng.normal(0, 2, (1, 3, 4, 5)))
        confident = 30.0 * onehot - 15.0  # the target's class 30 logits ahead of every other
    else:
        target = torch.from_numpy((rng.random((1, 2, 4, 5)) > 0.5).astype(np.float64))
        logits = torch.from_numpy(rng.normal(0, 2, (1, 2, 4, 5)))
        confident = 30.0 * (2 * target - 1)
    loss = FocalLoss(mode, gamma=gamma)
    value = loss(logits, target).item()
    assert value >= 0
    assert loss(confident, target).item() <= value + 1e-12 and loss(confident, target).item() < 1e-5


def _confidently_wrong(mode: str, dtype: torch.dtype):
    """One voxel of class/region 1 whose logits say, by a margin of 20, that it is not (softmax: background
    20 above class 1; sigmoid: logit -20), and one confidently right voxel; float16 as under autocast."""
    if mode == "softmax":
        logits = torch.tensor([[20.0, 0.0], [0.0, 20.0]]).T.reshape(1, 2, 1, 2)  # voxel 0 wrong, voxel 1 right
        target = torch.ones(1, 1, 1, 2)
    else:
        logits = torch.tensor([-20.0, 20.0]).reshape(1, 1, 1, 2)
        target = torch.ones(1, 1, 1, 2)
    return logits.to(dtype).requires_grad_(), target.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("mode", ["softmax", "sigmoid"])
@pytest.mark.parametrize("make", [lambda m: FocalLoss(m, gamma=2.0), lambda m: FocalLoss(m, gamma=0.5, alpha=0.25),
                                  lambda m: WeightedCrossEntropyLoss(m, [1.0, 2.0] if m == "softmax" else [2.0])],
                         ids=["focal", "focal_alpha", "weighted_ce"])
def test_a_confidently_wrong_voxel_gets_a_gradient_of_the_right_sign(make, mode, dtype):
    """Probabilities clamped to [eps, 1 - eps] (and an fp16 sigmoid, saturated beyond logit ≈ 8) gave these
    voxels exactly zero gradient; from the logits in float32 they get the cross-entropy's."""
    logits, target = _confidently_wrong(mode, dtype)
    loss = make(mode)(logits, target)
    loss.backward()
    grad = logits.grad.float()
    assert torch.isfinite(grad).all()
    if mode == "softmax":
        assert grad[0, 1, 0, 0] < -1e-3  # descent raises the true class's logit of the wrong voxel ...
        assert grad[0, 0, 0, 0] > 1e-3  # ... and lowers the background's
    else:
        assert grad[0, 0, 0, 0] < -1e-3
    assert abs(grad[..., 1]).max() < 1e-6  # the confidently right voxel is left alone
