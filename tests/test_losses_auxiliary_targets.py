"""Auxiliary targets of the loss terms: skeleton tubes and signed distance maps, against scikit-image/scipy."""
from __future__ import annotations

import functools
import pickle

import numpy as np
import pytest
from scipy import ndimage
from skimage.morphology import skeletonize

from nnunet_ext.targets.ground_truth import signed_distance_target, skeleton_tube_target


def _blobs(rng, shape, n_channels=2, threshold=0.45):
    channels = [ndimage.binary_opening(ndimage.gaussian_filter(rng.random(shape), 1.5) > threshold) for _ in range(n_channels)]
    return np.stack(channels)


# ----------------------------------------------------------------------------- skeleton tube

@pytest.mark.parametrize("dims", [2, 3])
def test_radius_zero_is_the_scikit_image_skeleton_of_each_channel_not_of_the_union(dims):
    shape = (24, 26) if dims == 2 else (14, 16, 18)
    labels = np.zeros((2,) + shape, bool)
    lead = (slice(3, 8),) if dims == 3 else ()
    labels[(0,) + lead + (slice(4, 9), slice(2, 20))] = True  # a bar of odd thickness
    labels[(0,) + lead + (slice(4, 20), slice(2, 7))] = True  # ... bent into an L
    labels[(1,) + lead + (slice(9, 12), slice(9, 14))] = True  # a block touching it from below
    if dims == 2:
        labels[1] |= _blobs(np.random.default_rng(1), shape, 1)[0] & ~labels[0]
    assert not any(_vanishing_components(m) for m in labels)
    tube = skeleton_tube_target(labels, tube_radius=0)
    assert tube.dtype == np.float32 and tube.shape == labels.shape
    for c in range(2):
        assert np.array_equal(tube[c].astype(bool), skeletonize(labels[c]).astype(bool))
    union = skeletonize(labels.any(0)).astype(bool)
    assert not np.array_equal(tube.any(0), union)


@pytest.mark.parametrize("dims", [2, 3])
def test_tube_is_the_euclidean_ball_around_the_skeleton_clipped_to_the_mask(dims):
    rng = np.random.default_rng(10 + dims)
    labels = _blobs(rng, (30, 28) if dims == 2 else (16, 18, 20), n_channels=1, threshold=0.4)
    skeleton = skeleton_tube_target(labels, tube_radius=0)[0].astype(bool)
    assert skeleton.any()
    for radius in (1, 2, 3.5):
        expected = (ndimage.distance_transform_edt(~skeleton) <= radius) & labels[0]
        assert np.array_equal(skeleton_tube_target(labels, tube_radius=radius)[0].astype(bool), expected)


def _vanishing_components(mask):
    components, n = ndimage.label(mask, np.ones((3,) * mask.ndim))
    return (ndimage.sum(skeletonize(mask), components, np.arange(1, n + 1)) == 0).sum()


def test_objects_whose_lee_skeleton_vanishes_keep_their_deepest_voxels():
    labels = np.zeros((1, 8, 10, 16), bool)
    labels[0, 2:6, 3:7, 2:14] = True  # a 4×4-voxel tube: scikit-image's Lee thinning deletes it entirely
    labels_other = np.zeros((8, 10, 16), bool)
    labels_other[1:6, 1:2, 1:15] = True  # a second object (5×1) whose skeleton survives
    labels[0] |= labels_other
    assert _vanishing_components(labels[0]) == 1
    skeleton = skeleton_tube_target(labels, tube_radius=0)[0].astype(bool)
    core = np.zeros_like(skeleton)
    core[0 + 3:5, 4:6, 3:13] = True  # the 2×2 central columns (inside distance 2), ends excluded
    assert np.array_equal(skeleton[2:6, 3:7, 2:14], core[2:6, 3:7, 2:14])
    assert np.array_equal(skeleton & labels_other, skeletonize(labels[0]).astype(bool) & labels_other)


def test_tube_radius_is_physical_with_anisotropic_spacing():
    labels = np.zeros((1, 9, 21, 21), bool)
    labels[0, :, 3:18, 3:18] = True  # a thick slab: everything but the skeleton's surroundings is in the mask
    spacing = (3.0, 1.0, 1.0)
    skeleton = skeletonize(labels[0]).astype(bool)
    expected = (ndimage.distance_transform_edt(~skeleton, sampling=(3.0, 1.0, 1.0)) <= 2) & labels[0]
    tube = skeleton_tube_target(labels, None, spacing, tube_radius=2)[0].astype(bool)
    assert np.array_equal(tube, expected)
    isotropic = skeleton_tube_target(labels, None, None, tube_radius=2)[0].astype(bool)
    assert tube.sum() < isotropic.sum()  # 2 mm reach only 0 slices along the 3 mm axis


def test_ignored_voxels_are_never_foreground_and_never_tube():
    labels = np.zeros((2, 12, 20), bool)
    labels[0, 3:9, 2:18] = True
    labels[1, 0:2, :] = True
    valid = np.ones((12, 20), bool)
    valid[:, 10:] = False
    valid[0:2, :] = False  # region 1 entirely ignored
    tube = skeleton_tube_target(labels, valid)
    assert not tube[:, ~valid].any()
    assert not tube[1].any()
    expected = skeleton_tube_target((labels & valid)[:1])
    assert np.array_equal(tube[0], expected[0])
    # valid may also come as (1, *S)
    assert np.array_equal(skeleton_tube_target(labels, valid[None]), tube)


def test_empty_channels_give_zeros():
    assert not skeleton_tube_target(np.zeros((3, 8, 8, 8), bool)).any()


def test_overlapping_regions_are_skeletonised_independently():
    labels = np.zeros((2, 15, 15), bool)
    labels[0, 2:13, 2:13] = True  # whole tumour
    labels[1, 5:10, 5:10] = True  # core inside it
    tube = skeleton_tube_target(labels, tube_radius=0)
    assert np.array_equal(tube[1].astype(bool), skeletonize(labels[1]).astype(bool))
    assert np.array_equal(tube[0].astype(bool), skeletonize(labels[0]).astype(bool))


def test_fits_the_auxiliary_target_contract_and_pickles():
    compute = functools.partial(skeleton_tube_target, tube_radius=1)
    compute = pickle.loads(pickle.dumps(compute))
    labels = np.zeros((1, 6, 10, 10), bool)
    labels[0, 1:5, 2:8, 2:8] = True
    out = compute(labels, np.ones((6, 10, 10), bool), (2.0, 1.0, 1.0))
    assert out.shape == labels.shape and out.dtype == np.float32 and out.any()


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="tube_radius"):
        skeleton_tube_target(np.zeros((1, 4, 4), bool), tube_radius=-1)
    with pytest.raises(ValueError, match="spacing"):
        skeleton_tube_target(np.zeros((1, 4, 4), bool), None, (1.0,))
    with pytest.raises(ValueError, match="valid"):
        skeleton_tube_target(np.zeros((1, 4, 4), bool), np.ones((4, 5), bool))
    with pytest.raises(ValueError, match="labels_onehot"):
        skeleton_tube_target(np.zeros((4, 4), bool))


# ----------------------------------------------------------------------------- signed distance

@pytest.mark.parametrize("dims", [2, 3])
def test_signed_distance_matches_scipy_with_spacing(dims):
    rng = np.random.default_rng(20 + dims)
    shape = (20, 22) if dims == 2 else (10, 12, 14)
    spacing = (0.7, 1.3) if dims == 2 else (2.5, 0.8, 1.1)
    labels = _blobs(rng, shape)
    sdm = signed_distance_target(labels, None, spacing)
    assert sdm.dtype == np.float32 and sdm.shape == labels.shape
    for c in range(2):
        outside = ndimage.distance_transform_edt(~labels[c], sampling=spacing)
        inside = ndimage.distance_transform_edt(labels[c], sampling=spacing)
        expected = np.where(labels[c], -inside, outside)
        assert np.allclose(sdm[c], expected, atol=1e-5)
        assert (sdm[c][labels[c]] < 0).all() and (sdm[c][~labels[c]] > 0).all()


def test_signed_distance_hand_computed_row():
    row = np.zeros((1, 1, 7), bool)
    row[0, 0, 2:5] = True
    assert signed_distance_target(row, spacing=(1.0, 0.5))[0, 0].tolist() == [1.0, 0.5, -0.5, -1.0, -0.5, 0.5, 1.0]


def test_signed_distance_measures_to_valid_voxels_only_and_is_zero_on_ignored():
    labels = np.zeros((1, 1, 9), bool)
    labels[0, 0, 0:3] = True
    valid = np.ones((1, 9), bool)
    valid[0, 3:5] = False  # the voxels right after the object are unknown
    sdm = signed_distance_target(labels, valid)[0, 0]
    assert sdm.tolist() == [-5.0, -4.0, -3.0, 0.0, 0.0, 3.0, 4.0, 5.0, 6.0]


def test_empty_and_full_channels():
    labels = np.zeros((2, 4, 5), bool)
    labels[1] = True
    assert not signed_distance_target(labels).any()  # default: no boundary → no signal
    sdm = signed_distance_target(labels, empty="diagonal")
    diagonal = np.hypot(4, 5)
    assert np.allclose(sdm[0], diagonal) and np.allclose(sdm[1], -diagonal)
    valid = np.zeros((4, 5), bool)  # everything ignored
    assert not signed_distance_target(labels, valid, empty="diagonal").any()
    with pytest.raises(ValueError, match="empty"):
        signed_distance_target(labels, empty="nan")
