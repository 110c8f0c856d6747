"""Boundary loss and one-sided Hausdorff DT loss: hand-computed, MONAI references, minimum at the target."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy import ndimage

from nnunet_ext.losses.boundary import BoundaryLoss
from nnunet_ext.targets.ground_truth import signed_distance_target
from nnunet_ext.losses.hausdorff import HausdorffDTLoss

monai_losses = pytest.importorskip("monai.losses")


def _blobs(seed, shape, n=2):
    rng = np.random.default_rng(seed)
    return np.stack([ndimage.gaussian_filter(rng.random(shape), 1.2) > 0.5 for _ in range(n)])


def _sdm_batch(labels, valid=None, spacing=None, **kw):
    return torch.from_numpy(np.stack([signed_distance_target(l, None if valid is None else valid[b], spacing, **kw)
                                      for b, l in enumerate(labels)])).double()


@pytest.mark.parametrize("dims", [2, 3])
def test_boundary_loss_matches_monai_up_to_its_inside_shift(dims):
    shape = (16, 18) if dims == 2 else (8, 10, 12)
    labels = np.stack([_blobs(s, shape) for s in (1, 2)])  # (B, C, *S)
    assert all(l.any() and not l.all() for l in labels.reshape(-1, *shape))
    rng = np.random.default_rng(0)
    p = torch.from_numpy(rng.random(labels.shape))
    target = torch.from_numpy(labels).double()
    ours = BoundaryLoss()(p, target, None, _sdm_batch(labels))
    # MONAI (Kervadec's code) sets φ = -(d - 1) inside, ours -d: they differ by mean(p·T)
    reference = monai_losses.BoundaryLoss(include_background=True)(p, target)
    assert ours.item() == pytest.approx(reference.item() - (p * target).mean().item(), abs=1e-6)


def test_boundary_loss_hand_computed_with_ignore():
    phi = torch.tensor([2.0, 1.0, -1.0, -2.0, -1.0, 1.0]).view(1, 1, 1, 6).double()
    p = torch.tensor([0.5, 0.0, 1.0, 1.0, 0.5, 1.0]).view(1, 1, 1, 6).double().requires_grad_()
    valid = torch.tensor([True, True, True, True, True, False]).view(1, 1, 1, 6)
    loss = BoundaryLoss()(p, (phi < 0).double(), valid, phi)
    assert loss.item() == pytest.approx((1.0 - 1 - 2 - 0.5) / 5)
    loss.backward()
    assert p.grad.flatten().tolist() == pytest.approx([0.4, 0.2, -0.2, -0.4, -0.2, 0.0])


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([(1.0, 1.0), (0.5, 2.0), (3.0, 0.7)]))
def test_the_ground_truth_minimises_boundary_and_hausdorff_losses(seed, spacing):
    rng = np.random.default_rng(seed)
    labels = _blobs(seed % 1000, (10, 12))[None]
    valid = rng.random((1, 10, 12)) > 0.2
    labels = labels & valid[:, None]
    sdm = _sdm_batch(labels, valid, spacing)
    target = torch.from_numpy(labels).double()
    v = torch.from_numpy(valid)[:, None]
    p = torch.from_numpy(rng.random(labels.shape))
    boundary, hd = BoundaryLoss(), HausdorffDTLoss()
    assert boundary(target, target, v, sdm).item() <= boundary(p, target, v, sdm).item() + 1e-12
    assert hd(target, target, v, sdm).item() == 0
    assert hd(p, target, v, sdm).item() >= 0


@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_hausdorff_equals_monai_when_the_prediction_has_no_foreground(alpha):
    """MONAI's HD_DT adds the prediction's distance map, which is 0 for a prediction below 0.5 everywhere."""
    labels = np.stack([_blobs(s, (8, 9, 10)) for s in (3, 4)])
    rng = np.random.default_rng(1)
    p = torch.from_numpy(rng.uniform(0, 0.49, labels.shape))
    target = torch.from_numpy(labels).double()
    ours = HausdorffDTLoss(alpha=alpha)(p, target, None, _sdm_batch(labels))
    reference = monai_losses.HausdorffDTLoss(alpha=alpha, include_background=True)(p, target)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-5)


def test_hausdorff_weighs_far_errors_more_and_uses_physical_distances():
    labels = np.zeros((1, 1, 1, 9), bool)
    labels[..., 0:3] = True
    target = torch.from_numpy(labels).double()
    near, far = torch.zeros_like(target), torch.zeros_like(target)
    near[..., 3] = 1  # false positive next to the object
    far[..., 8] = 1   # false positive 6 voxels away
    for p in (near, far):
        p[..., 0:3] = 1
    sdm = _sdm_batch(labels)
    hd = HausdorffDTLoss(alpha=2.0)
    assert hd(near, target, None, sdm).item() == pytest.approx(1 / 9)
    assert hd(far, target, None, sdm).item() == pytest.approx(36 / 9)
    assert hd(far, target, None, _sdm_batch(labels, spacing=(1.0, 0.5))).item() == pytest.approx(9 / 9)


def test_empty_class_behaviour_follows_the_auxiliary_target():
    labels = np.zeros((1, 1, 6, 6), bool)
    target = torch.zeros(1, 1, 6, 6, dtype=torch.float64)
    p = torch.full_like(target, 0.5)
    assert BoundaryLoss()(p, target, None, _sdm_batch(labels)).item() == 0
    assert HausdorffDTLoss()(p, target, None, _sdm_batch(labels)).item() == 0
    diagonal = np.hypot(6, 6)
    assert BoundaryLoss()(p, target, None, _sdm_batch(labels, empty="diagonal")).item() == pytest.approx(0.5 * diagonal)
    assert HausdorffDTLoss(alpha=1.0)(p, target, None, _sdm_batch(labels, empty="diagonal")).item() == pytest.approx(
        0.25 * diagonal)


def test_arguments():
    with pytest.raises(ValueError, match="alpha"):
        HausdorffDTLoss(alpha=0)
    with pytest.raises(ValueError, match="reduction"):
        BoundaryLoss(reduction="sum")
    with pytest.raises(ValueError, match="signed_distance"):
        BoundaryLoss()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), None, torch.zeros(1, 2, 4, 5))
