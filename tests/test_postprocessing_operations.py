"""Mask operations against independent implementations (scipy, nnU-Net's acvl_utils) and their
invariants (idempotence, nothing added outside the input except by hole filling)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from nnunet_ext.postprocessing.operations import (
    check_connectivity, component_sizes, fill_holes, hole_mask, keep_largest_components,
    label_components, remove_small_components, threshold_probability, voxel_volume,
)

masks3d = arrays(bool, st.tuples(st.integers(1, 6), st.integers(1, 7), st.integers(1, 7)))
masks2d = arrays(bool, st.tuples(st.integers(1, 9), st.integers(1, 9)))
HYP = settings(max_examples=60, deadline=None)
_STRUCT = {26: np.ones((3, 3, 3)), 18: ndimage.generate_binary_structure(3, 2),
           6: ndimage.generate_binary_structure(3, 1), 8: np.ones((3, 3)),
           4: ndimage.generate_binary_structure(2, 1)}


def _scipy_sizes(mask, conn):
    lab, n = ndimage.label(mask, structure=_STRUCT[conn])
    return lab, np.bincount(lab.ravel(), minlength=n + 1)[1:]


@HYP
@given(masks3d, st.sampled_from([6, 18, 26]))
def test_component_sizes_match_scipy(mask, conn):
    assert sorted(component_sizes(mask, conn)) == sorted(_scipy_sizes(mask, conn)[1])
    labels, sizes = label_components(mask, conn)
    assert (labels > 0).sum() == mask.sum() and sizes.sum() == mask.sum()


@HYP
@given(masks3d, st.integers(1, 12), st.sampled_from([6, 26]))
def test_remove_small_matches_scipy_and_is_idempotent(mask, n, conn):
    out = remove_small_components(mask, min_voxels=n, connectivity=conn)
    lab, sizes = _scipy_sizes(mask, conn)
    expected = np.isin(lab, 1 + np.flatnonzero(sizes >= n))
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(remove_small_components(out, min_voxels=n, connectivity=conn), out)
    assert not (out & ~mask).any()


@HYP
@given(masks3d)
def test_keep_largest_k1_equals_nnunet(mask):
    from acvl_utils.morphology.morphology_helper import remove_all_but_largest_component

    np.testing.assert_array_equal(keep_largest_components(mask, 1),
                                  remove_all_but_largest_component(mask))


@HYP
@given(masks3d, st.integers(1, 4))
def test_keep_largest_k_invariants(mask, k):
    out = keep_largest_components(mask, k)
    assert not (out & ~mask).any()
    sizes_in, sizes_out = np.sort(component_sizes(mask))[::-1], np.sort(component_sizes(out))[::-1]
    # the k largest sizes survive; anything beyond k survives only as a tie with the k-th
    assert list(sizes_out[:k]) == list(sizes_in[:k])
    if len(sizes_out) > k:
        assert set(sizes_out[k - 1:]) == {sizes_in[k - 1]}
    np.testing.assert_array_equal(keep_largest_components(out, k), out)


@HYP
@given(masks3d)
def test_fill_holes_matches_scipy_3d(mask):
    np.testing.assert_array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))
    np.testing.assert_array_equal(fill_holes(mask, connectivity=6),
                                  ndimage.binary_fill_holes(mask, structure=np.ones((3, 3, 3))))
    out = fill_holes(mask)
    assert not (mask & ~out).any()
    np.testing.assert_array_equal(fill_holes(out), out)
    np.testing.assert_array_equal(out & ~mask, hole_mask(mask))


@HYP
@given(masks2d)
def test_fill_holes_matches_scipy_2d(mask):
    np.testing.assert_array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))
    np.testing.assert_array_equal(fill_holes(mask, 4), ndimage.binary_fill_holes(mask, np.ones((3, 3))))


def test_physical_volume_uses_spacing():
    m = np.zeros((4, 10, 10), bool)
    m[0, 0, :4] = True  # 4 voxels
    m[2:4, 5:9, 5:9] = True  # 32 voxels
    spacing = (2.0, 0.5, 0.5)  # 0.5 per voxel
    # 4 voxels are 2.0 units of volume, 32 voxels 16.0
    assert remove_small_components(m, min_volume=2.5, spacing=spacing).sum() == 32
    assert remove_small_components(m, min_volume=2.0, spacing=spacing).sum() == 36
    assert remove_small_components(m, min_voxels=5).sum() == 32
    assert voxel_volume(spacing, 3) == 0.5
    with pytest.raises(ValueError, match="exactly one"):
        remove_small_components(m, min_voxels=2, min_volume=1.0)
    with pytest.raises(ValueError, match="one entry per array axis"):
        remove_small_components(m, min_volume=1.0, spacing=(1.0, 1.0))


def test_connectivity_matters_and_is_checked():
    m = np.zeros((3, 3, 3), bool)
    m[0, 0, 0] = m[1, 1, 1] = True  # corner neighbours
    assert len(component_sizes(m, 26)) == 1 and len(component_sizes(m, 6)) == 2
    assert check_connectivity(2, None) == 8 and check_connectivity(3, None) == 26
    with pytest.raises(ValueError, match="not valid for 2D"):
        keep_largest_components(np.ones((3, 3), bool), connectivity=26)
    with pytest.raises(ValueError, match="at least 1"):
        keep_largest_components(m, 0)


def test_empty_masks_and_threshold():
    e = np.zeros((2, 3, 4), bool)
    for out in (remove_small_components(e, min_voxels=3), keep_largest_components(e),
                fill_holes(e), hole_mask(e)):
        assert out.shape == e.shape and not out.any()
    p = np.array([[0.2, 0.5, 0.51]])
    np.testing.assert_array_equal(threshold_probability(p, 0.5), [[False, False, True]])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        threshold_probability(p, 1.5)


@pytest.mark.parametrize("shape", [(1, 1, 5), (1, 4, 1), (3, 1, 1), (1, 1, 1)])
def test_thin_volumes(shape):
    # an axis of length 1 (a one-slice structure) under 26-connectivity
    m = np.zeros(shape, bool)
    m.flat[::2] = True
    assert sorted(component_sizes(m)) == sorted(_scipy_sizes(m, 26)[1])
    assert keep_largest_components(m).sum() >= 1
