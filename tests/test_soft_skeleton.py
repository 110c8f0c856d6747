"""Soft skeleton: hand-computed cases, binary → binary, per-channel independence, gradients."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy import ndimage

from nnunet_ext.losses.soft_skeleton import soft_dilate, soft_erode, soft_open, soft_skeleton


def test_line_2d_is_thinned_to_its_centre_row():
    bar = torch.zeros(1, 1, 5, 7)
    bar[0, 0, 1:4, 1:6] = 1
    skeleton = soft_skeleton(bar, iterations=2)[0, 0]
    expected = torch.zeros(5, 7)
    expected[2, 2:5] = 1
    assert torch.equal(skeleton, expected)


def test_one_voxel_thick_line_3d_is_its_own_skeleton():
    line = torch.zeros(1, 1, 5, 5, 9)
    line[0, 0, 2, 2, 1:8] = 1
    assert torch.equal(soft_skeleton(line, iterations=3), line)


@pytest.mark.parametrize("dims", [2, 3])
def test_erosion_and_dilation_match_scipy_on_binary_masks(dims):
    rng = np.random.default_rng(0)
    mask = rng.random((9,) * dims) > 0.4
    x = torch.from_numpy(mask.astype(np.float32))[None, None]
    cross = ndimage.generate_binary_structure(dims, 1)
    full = np.ones((3,) * dims, dtype=bool)
    # outside the array counts as 1 for erosion (padding of a min-pool is neutral) and 0 for dilation
    eroded = ndimage.binary_erosion(mask, cross, border_value=1)
    dilated = ndimage.binary_dilation(mask, full)
    assert np.array_equal(soft_erode(x)[0, 0].numpy().astype(bool), eroded)
    assert np.array_equal(soft_dilate(x)[0, 0].numpy().astype(bool), dilated)
    assert np.array_equal(soft_open(x)[0, 0].numpy().astype(bool), ndimage.binary_dilation(eroded, full))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(0, 4), st.sampled_from([2, 3]))
def test_binary_input_gives_binary_skeleton_inside_the_mask(seed, iterations, dims):
    rng = np.random.default_rng(seed)
    mask = torch.from_numpy((rng.random((2, 2) + (7,) * dims) > 0.5).astype(np.float32))
    skeleton = soft_skeleton(mask, iterations)
    assert set(torch.unique(skeleton).tolist()) <= {0.0, 1.0}
    assert bool((skeleton <= mask).all())


def test_channels_are_skeletonised_independently():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.random((1, 3, 6, 8, 8)).astype(np.float32))
    together = soft_skeleton(x, 3)
    for c in range(3):
        assert torch.allclose(together[:, c:c + 1], soft_skeleton(x[:, c:c + 1], 3))


def test_gradcheck_float64():
    x = torch.rand(1, 2, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: soft_skeleton(t, 2), (x,), eps=1e-6, atol=1e-5, fast_mode=True)


def test_rejects_wrong_rank_and_negative_iterations():
    with pytest.raises(ValueError, match="expected a"):
        soft_skeleton(torch.zeros(4, 4), 1)
    with pytest.raises(ValueError, match="iterations"):
        soft_skeleton(torch.zeros(1, 1, 4, 4), -1)
