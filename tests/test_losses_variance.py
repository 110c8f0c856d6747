"""Variance regularisation: hand-computed, torch.var reference, empty regions, invariants."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from nnunet_ext.losses.variance import RegionVarianceLoss


def test_matches_population_variance_of_the_masked_values():
    rng = np.random.default_rng(0)
    p = torch.from_numpy(rng.random((2, 3, 5, 6, 7)))
    target = torch.from_numpy((rng.random((2, 3, 5, 6, 7)) > 0.5).astype(np.float64))
    valid = torch.from_numpy(rng.random((2, 1, 5, 6, 7)) > 0.3)
    target[1, 2] = 0  # one empty region
    none = RegionVarianceLoss(reduction="none")(p, target, valid)
    expected = torch.zeros(2, 3, dtype=torch.float64)
    for b in range(2):
        for c in range(3):
            values = p[b, c][(target[b, c] > 0) & valid[b, 0]]
            if values.numel():
                expected[b, c] = values.var(unbiased=False)
    assert torch.allclose(none, expected)
    assert RegionVarianceLoss()(p, target, valid).item() == pytest.approx(expected.sum().item() / 5)


def test_hand_computed_and_no_region_gives_zero():
    t = torch.tensor([1.0, 1.0, 0.0, 1.0]).view(1, 1, 1, 4)
    p = torch.tensor([0.2, 0.6, 0.9, 0.4]).view(1, 1, 1, 4).requires_grad_()
    loss = RegionVarianceLoss()(p, t)
    assert loss.item() == pytest.approx(((0.2 - 0.4) ** 2 + (0.6 - 0.4) ** 2) / 3)
    loss.backward()
    assert p.grad.flatten().tolist() == pytest.approx([2 / 3 * -0.2, 2 / 3 * 0.2, 0.0, 0.0], abs=1e-7)
    empty = RegionVarianceLoss()(p, t * 0)
    assert empty.item() == 0


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0, 1))
def test_bounded_and_zero_for_constant_predictions(seed, constant):
    rng = np.random.default_rng(seed)
    p = torch.from_numpy(rng.random((2, 2, 4, 5, 3)))
    target = torch.from_numpy((rng.random((2, 2, 4, 5, 3)) > 0.5).astype(np.float64))
    loss = RegionVarianceLoss()
    assert 0 <= loss(p, target).item() <= 0.25
    assert loss(torch.full_like(p, constant), target).item() == pytest.approx(0, abs=1e-15)
    assert loss(target, target).item() == 0
    # adding a constant inside the regions changes nothing
    shifted = (p * 0.5 + 0.25 * constant)
    assert loss(shifted, target).item() == pytest.approx(0.25 * loss(p, target).item())
