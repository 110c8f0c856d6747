"""cbDice (ground-truth-side variant): auxiliary target by hand, diameter awareness, degenerate cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from nnunet_ext.losses.cbdice import CenterlineBoundaryDiceLoss
from nnunet_ext.targets.ground_truth import centerline_radius_target


def _vessels_2d():
    """A thick (7-pixel) and a thin (3-pixel) horizontal vessel."""
    labels = np.zeros((1, 24, 30), bool)
    labels[0, 3:10, 2:28] = True
    labels[0, 16:19, 2:28] = True
    return labels


def test_radius_target_depth_and_inverse_radius_weights():
    labels = _vessels_2d()
    out = centerline_radius_target(labels)
    assert out.shape == (2, 24, 30) and out.dtype == np.float32
    depth, weight = out[0], out[1]
    assert depth[6, 15] == 1 and depth[17, 15] == 1  # both centrelines are fully central
    assert depth[3, 15] == pytest.approx(1 / 4) and depth[16, 15] == pytest.approx(1 / 2)
    assert not depth[~labels[0]].any() and not weight[~labels[0]].any()
    # inverse normalised radius (2D: power 1): thick radius 4 → 1, thin radius 2 → 2
    assert weight[6, 15] == pytest.approx(1.0) and weight[17, 15] == pytest.approx(2.0)


def test_radius_target_3d_uses_squared_inverse_radius_and_spacing():
    labels = np.zeros((1, 13, 13, 20), bool)
    labels[0, 1:8, 1:8, 1:19] = True  # radius 4
    labels[0, 9:12, 9:12, 1:19] = True  # radius 2
    out = centerline_radius_target(labels)
    assert out[1][4, 4, 10] == pytest.approx(1.0) and out[1][10, 10, 10] == pytest.approx(4.0)
    anisotropic = centerline_radius_target(labels, None, (2.0, 1.0, 1.0))
    assert anisotropic[0][labels[0]].max() == 1 and anisotropic.shape == out.shape


def test_radius_target_ignores_and_empty_channels():
    labels = np.concatenate([_vessels_2d(), np.zeros((1, 24, 30), bool)])
    valid = np.ones((24, 30), bool)
    valid[:, 20:] = False
    out = centerline_radius_target(labels, valid)
    assert out.shape == (4, 24, 30)
    assert not out[:, ~valid].any() and not out[1].any() and not out[3].any()


def _loss(p, labels, **kw):
    aux = torch.from_numpy(centerline_radius_target(labels))[None].double()
    return CenterlineBoundaryDiceLoss(smooth=1e-6, **kw)(p, torch.from_numpy(labels)[None].double(), None, aux)


def test_perfect_prediction_is_near_zero_and_better_than_shifted_ones():
    labels = _vessels_2d()
    target = torch.from_numpy(labels)[None].double()
    perfect = _loss(target, labels).item()
    assert perfect < 0.02
    # the same one-pixel shift costs more on the thin vessel than on the thick one: diameter awareness
    thick_shifted = target.clone()
    thick_shifted[..., 0:12, :] = torch.roll(target[..., 0:12, :], 1, dims=-2)
    thin_shifted = target.clone()
    thin_shifted[..., 12:24, :] = torch.roll(target[..., 12:24, :], 1, dims=-2)
    assert perfect < _loss(thick_shifted, labels).item() < _loss(thin_shifted, labels).item()


def test_missing_the_thin_vessel_costs_more_than_its_volume_share():
    labels = _vessels_2d()
    target = torch.from_numpy(labels)[None].double()
    no_thin = target.clone()
    no_thin[..., 12:, :] = 0
    loss = _loss(no_thin, labels).item()
    weight = centerline_radius_target(labels)[1]
    tsens = weight[:12].sum() / weight.sum()
    plain = (weight[:12] > 0).sum() / (weight > 0).sum()  # unweighted skeleton recall
    assert tsens < plain - 0.15  # the thin vessel's centreline counts twice per voxel
    assert loss == pytest.approx(1 - 2 * tsens / (1 + tsens), abs=0.01)  # Tprec ≈ 1: what is predicted is right


def test_empty_target_penalises_predicted_centrelines_and_is_finite():
    labels = np.zeros((1, 10, 12), bool)
    p = torch.zeros(1, 1, 10, 12, dtype=torch.float64, requires_grad=True)
    assert _loss(p, labels).item() == pytest.approx(0)
    q = torch.zeros(1, 1, 10, 12, dtype=torch.float64)
    q[..., 2:7, 1:11] = 0.6
    q.requires_grad_()
    loss = _loss(q, labels)
    loss.backward()
    assert loss.item() > 0.5 and torch.isfinite(q.grad).all()


def test_arguments():
    with pytest.raises(ValueError, match="smooth"):
        CenterlineBoundaryDiceLoss(smooth=0)
    with pytest.raises(ValueError, match="iterations"):
        CenterlineBoundaryDiceLoss(iterations=-1)
    with pytest.raises(ValueError, match="radius_target"):
        CenterlineBoundaryDiceLoss()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), None, torch.zeros(1, 2, 4, 4))
