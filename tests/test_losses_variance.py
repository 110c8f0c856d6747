"""Region term (second moment about 1 inside the ground truth): the sign of its gradient, its minimiser,
homogeneity, hand-computed values, an independent reference, gradcheck, ignore label, empty regions."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from nnunet_ext.losses.variance import RegionVarianceLoss


def _row(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).view(1, 1, 1, -1)


def _partly_detected_object():
    """A 1×10 strip: 8 interior voxels (detected part at 0.95 and 1, missed part at 0.2) and 2 outside."""
    t = _row([0, 1, 1, 1, 1, 1, 1, 1, 1, 0])
    p = _row([0.3, 0.95, 0.95, 1.0, 0.95, 0.2, 0.2, 0.2, 0.95, 0.7]).requires_grad_()
    return p, t


def test_partly_detected_object_no_interior_voxel_is_pushed_down():
    """Issue 11, item 4: the population variance pushed the 0.95 voxels of a partly detected object
    down towards the mean (d Var / d p_v = 2 (p_v − μ) / |R| > 0 above the mean)."""
    p, t = _partly_detected_object()
    RegionVarianceLoss()(p, t).backward()
    grad = p.grad.flatten()
    interior = t.flatten() > 0
    values = p.detach().flatten()
    assert (grad[interior] <= 0).all()
    assert (grad[interior & (values < 1)] < 0).all()  # the 0.95 voxels are pulled up, not down
    assert grad[interior & (values == 1)].abs().max() == 0  # a voxel already at 1 is left alone
    assert grad[~interior].abs().max() == 0  # the term says nothing outside the reference
    # hand-computed: d/dp_v Σ_R (1 − p)² / |R| = −2 (1 − p_v) / |R|, |R| = 8
    assert grad[interior].tolist() == pytest.approx([-2 * (1 - v) / 8 for v in values[interior].tolist()])
    # one descent step raises every interior voxel below 1 and moves nothing else
    step = values - 0.5 * grad
    assert (step[interior & (values < 1)] > values[interior & (values < 1)]).all()
    assert torch.equal(step[~interior | (values == 1)], values[~interior | (values == 1)])


def test_predicting_zero_inside_the_reference_is_not_a_minimum():
    """The population variance was 0 (its minimum) for p = 0 everywhere inside the reference."""
    p, t = _partly_detected_object()
    loss = RegionVarianceLoss()
    zeros = torch.zeros_like(t, requires_grad=True)
    at_zero = loss(zeros, t)
    assert at_zero.item() == 1.0  # the maximum: every interior voxel is as far from 1 as it can be
    assert at_zero.item() > loss(t, t).item() == 0
    assert at_zero.item() > loss(p.detach(), t).item()  # worse than a partial detection, too
    at_zero.backward()
    assert (zeros.grad[t > 0] < 0).all()  # and descent leaves it at once


def test_speckled_interior_scores_worse_than_a_uniform_one_with_the_same_mean():
    t = _row([1, 1, 1, 1, 1, 1, 0])
    uniform = _row([0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.0])
    speckled = _row([0.2, 1.0, 0.2, 1.0, 0.2, 1.0, 0.0])  # mean 0.6, variance 0.16
    loss = RegionVarianceLoss()
    assert loss(uniform, t).item() == pytest.approx(0.4 ** 2)  # confidence part only
    assert loss(speckled, t).item() == pytest.approx(0.16 + 0.4 ** 2)  # variance + confidence
    assert loss(speckled, t).item() > loss(uniform, t).item()


def test_hand_computed_values_and_gradient():
    t = _row([1, 1, 0, 1])
    p = _row([0.2, 0.6, 0.9, 0.4]).requires_grad_()
    loss = RegionVarianceLoss()(p, t)
    # R = {0.2, 0.6, 0.4}: Σ (1 − p)² / 3 = (0.64 + 0.16 + 0.36) / 3; = Var (0.08/3) + (1 − 0.4)²
    assert loss.item() == pytest.approx(1.16 / 3)
    assert loss.item() == pytest.approx(0.08 / 3 + 0.36)
    loss.backward()
    assert p.grad.flatten().tolist() == pytest.approx([-2 * 0.8 / 3, -2 * 0.4 / 3, 0.0, -2 * 0.6 / 3])
    # two samples, one with an empty region: "mean" averages the non-empty (b, c) only
    p2 = torch.cat([p.detach(), _row([0.5, 0.5, 0.5, 0.5])])
    t2 = torch.cat([t, t * 0])
    assert RegionVarianceLoss(reduction="none")(p2, t2).flatten().tolist() == pytest.approx([1.16 / 3, 0.0])
    assert RegionVarianceLoss()(p2, t2).item() == pytest.approx(1.16 / 3)


def test_matches_an_independent_reference_and_the_variance_plus_confidence_decomposition():
    rng = np.random.default_rng(0)
    p = torch.from_numpy(rng.random((2, 3, 5, 6, 7)))
    target = torch.from_numpy((rng.random((2, 3, 5, 6, 7)) > 0.5).astype(np.float64))  # overlapping channels
    valid = torch.from_numpy(rng.random((2, 1, 5, 6, 7)) > 0.3)
    target[1, 2] = 0  # one empty region
    none = RegionVarianceLoss(reduction="none")(p, target, valid)
    expected = torch.zeros(2, 3, dtype=torch.float64)
    decomposed = torch.zeros(2, 3, dtype=torch.float64)
    for b in range(2):
        for c in range(3):
            values = p[b, c][(target[b, c] > 0) & valid[b, 0]]
            if values.numel():
                expected[b, c] = torch.nn.functional.mse_loss(values, torch.ones_like(values))
                decomposed[b, c] = values.var(unbiased=False) + (1 - values.mean()) ** 2
    assert none.shape == (2, 3) and none[1, 2] == 0
    assert torch.allclose(none, expected) and torch.allclose(none, decomposed)
    assert RegionVarianceLoss()(p, target, valid).item() == pytest.approx(expected.sum().item() / 5)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0, 1, exclude_max=True))
def test_bounded_and_zero_exactly_when_the_interior_is_one(seed, below_one):
    rng = np.random.default_rng(seed)
    p = torch.from_numpy(rng.random((2, 2, 4, 5, 3)))
    target = torch.from_numpy((rng.random((2, 2, 4, 5, 3)) > 0.5).astype(np.float64))
    target[0, 0, 0, 0, 0] = 1
    loss = RegionVarianceLoss()
    assert 0 <= loss(p, target).item() <= 1
    # 0 for p = 1 on every region, whatever p is outside the regions
    interior_one = torch.where(target > 0, torch.ones_like(p), p)
    assert loss(interior_one, target).item() == 0 and loss(target, target).item() == 0
    # one interior voxel below 1 is enough to make it positive
    interior_one[0, 0, 0, 0, 0] = below_one
    assert loss(interior_one, target).item() > 0
    # the gradient never points down anywhere inside a region
    q = p.clone().requires_grad_()
    loss(q, target).backward()
    assert (q.grad[target > 0] < 0).all() and q.grad[target == 0].abs().max() == 0


def test_ignored_voxels_enter_no_sum_and_get_no_gradient():
    t = _row([1, 1, 1, 1, 0])
    valid = torch.tensor([True, True, False, True, False]).view(1, 1, 1, -1)
    p = _row([0.5, 1.0, 0.0, 0.8, 0.1]).requires_grad_()
    loss = RegionVarianceLoss()(p, t, valid)
    assert loss.item() == pytest.approx((0.25 + 0 + 0.04) / 3)
    loss.backward()
    assert p.grad.flatten().tolist() == pytest.approx([-2 * 0.5 / 3, 0.0, 0.0, -2 * 0.2 / 3, 0.0])
    # what the target or the prediction says on ignored voxels never matters
    flipped_t = torch.where(valid, t, 1 - t)
    other_p = torch.where(valid, p.detach(), torch.full_like(p, 0.7))
    assert RegionVarianceLoss()(other_p, flipped_t, valid).item() == pytest.approx(loss.item())
    # an all-ignored region is an empty region
    nothing = torch.zeros_like(valid)
    q = p.detach().clone().requires_grad_()
    empty = RegionVarianceLoss()(q, t, nothing)
    empty.backward()
    assert empty.item() == 0 and q.grad.abs().max() == 0


def test_empty_regions_give_zero_with_zero_gradient():
    p = torch.rand(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    t = torch.zeros_like(p)
    mean = RegionVarianceLoss()(p, t)
    none = RegionVarianceLoss(reduction="none")(p, t)
    (mean + none.sum()).backward()
    assert mean.item() == 0 and none.shape == (2, 3) and none.abs().max() == 0
    assert torch.isfinite(p.grad).all() and p.grad.abs().max() == 0


def test_gradcheck_float64_with_and_without_ignored_voxels():
    rng = np.random.default_rng(1)
    p = torch.from_numpy(rng.uniform(0.05, 0.95, (2, 2, 5, 6))).requires_grad_()
    t = torch.from_numpy((rng.random((2, 2, 5, 6)) > 0.4).astype(np.float64))
    t[1, 1] = 0  # an empty region
    valid = torch.from_numpy(rng.random((2, 1, 5, 6)) > 0.25)
    outside = torch.from_numpy(rng.uniform(0.05, 0.95, (2, 2, 5, 6)))
    for reduction in ("mean", "none"):
        loss = RegionVarianceLoss(reduction=reduction)
        assert torch.autograd.gradcheck(lambda x: loss(x, t), (p,), eps=1e-6, atol=1e-7)
        # ignored voxels are detached by design: hold them fixed so the numerical gradient agrees
        assert torch.autograd.gradcheck(lambda x: loss(torch.where(valid, x, outside), t, valid), (p,),
                                        eps=1e-6, atol=1e-7)


def test_half_precision_input_is_accumulated_in_float32():
    p = torch.zeros(1, 1, 300, 300, dtype=torch.float16, requires_grad=True)  # Σ (1 − p)² = 90000 > fp16 max
    t = torch.ones(1, 1, 300, 300, dtype=torch.float16)
    loss = RegionVarianceLoss()(p, t)
    loss.backward()
    assert loss.dtype == torch.float32 and loss.item() == 1.0 and torch.isfinite(p.grad.float()).all()


def test_bad_reduction_is_refused():
    with pytest.raises(ValueError, match="reduction"):
        RegionVarianceLoss(reduction="sum")
