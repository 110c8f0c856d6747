"""Auxiliary targets of the loss terms: skeleton tubes, signed distance maps and centreline radii, against
scikit-image/scipy, whole-patch reference computations and the Skeleton Recall authors' transform."""
from __future__ import annotations

import functools
import pickle

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.morphology import skeletonize

from nnunet_ext.targets import ground_truth
from nnunet_ext.targets.ground_truth import centerline_radius_target, signed_distance_target, skeleton_tube_target
from _target_reference import whole_patch_centerline_radius, whole_patch_signed_distance, whole_patch_tube


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


@pytest.mark.parametrize("spacing, expected", [
    ((1.0, 1.0, 1.0), 33),  # the voxel ball of radius 2: 1 + 6 + 12 + 8 + 6
    ((3.0, 1.0, 1.0), 13),  # 2 mm reach no other slice along the 3 mm axis: the disc dy² + dx² <= 4
    ((1.0, 1.0, 3.0), 13),  # ... the same disc, standing in the other plane (axis order)
    ((0.5, 1.0, 1.0), 9),   # radius 2 × 0.5 mm = 1 mm: ±2 slices along z, the 4 face neighbours in-plane
])
def test_tube_radius_is_physical_with_anisotropic_spacing(spacing, expected):
    labels = np.zeros((1, 11, 11, 11), bool)
    labels[0, 1:10, 2:9, 1:10] = True  # Lee's skeleton of this box is its single centre voxel
    assert np.argwhere(skeletonize(labels[0])).tolist() == [[5, 5, 5]]
    tube = skeleton_tube_target(labels, None, spacing, tube_radius=2)[0].astype(bool)
    assert tube.sum() == expected
    reach = np.argwhere(tube) - 5
    assert np.abs(reach).max(axis=0).tolist() == [int(2 * min(spacing) // s) for s in spacing]


@pytest.mark.parametrize("spacing", [(2.5, 0.7, 1.1), (0.6, 1.8, 0.9)])
def test_tube_is_the_physical_ball_by_nearest_neighbour_search(spacing):
    """Independent of any distance transform: nearest skeleton voxel in physical coordinates (k-d tree)."""
    labels = _blobs(np.random.default_rng(7), (14, 18, 16), n_channels=1, threshold=0.42)
    skeleton = skeleton_tube_target(labels, None, spacing, tube_radius=0)[0].astype(bool)
    points = np.argwhere(np.ones(labels.shape[1:], bool)) * np.array(spacing)
    distance, _ = cKDTree(np.argwhere(skeleton) * np.array(spacing)).query(points)
    for radius in (1.0, 2.0, 3.0):
        expected = (distance.reshape(labels.shape[1:]) <= radius * min(spacing) + 1e-9) & labels[0]
        tube = skeleton_tube_target(labels, None, spacing, tube_radius=radius)[0].astype(bool)
        assert np.array_equal(tube, expected)
        assert (tube & ~skeleton).any()


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


# ----------------------------------------------------------------------------- cropped = whole patch
# Reference: the straightforward computation, every distance transform on the whole patch.

@st.composite
def _patches(draw):
    """Random 2D/3D patches: blobs, boxes (often touching the border), noise, empty and full channels,
    anisotropic spacing, ignore masks (random speckle, slabs, or ignored rims around the structure)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    dims = draw(st.sampled_from([2, 3]))
    shape = tuple(int(n) for n in rng.integers(3, 18 if dims == 3 else 30, size=dims))
    channels = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["blobs", "box", "noise", "empty", "full"]))
        if kind == "blobs":
            mask = ndimage.gaussian_filter(rng.random(shape), 1.0) > rng.uniform(0.47, 0.53)
        elif kind == "box":
            lo = [int(rng.integers(0, n)) for n in shape]
            mask = np.zeros(shape, bool)
            mask[tuple(slice(a, int(rng.integers(a, n)) + 1) for a, n in zip(lo, shape))] = True
        elif kind == "noise":
            mask = rng.random(shape) < rng.uniform(0.05, 0.9)
        else:
            mask = np.full(shape, kind == "full")
        channels.append(mask)
    labels = np.stack(channels)
    ignore = draw(st.sampled_from(["none", "speckle", "slab", "rim"]))
    valid = np.ones(shape, bool)
    if ignore == "speckle":
        valid = rng.random(shape) < rng.uniform(0.3, 1.0)
    elif ignore == "slab":
        axis, at = int(rng.integers(dims)), int(rng.integers(shape[0]))
        valid[(slice(None),) * axis + (slice(at, at + int(rng.integers(1, 4))),)] = False
    elif ignore == "rim":  # ignored voxels right around channel 0: the nearest background lies beyond them
        grown = ndimage.binary_dilation(labels[0], iterations=int(rng.integers(1, 4)))
        valid = ~(grown & ~labels[0]) | (rng.random(shape) < 0.1)
    spacing = tuple(float(s) for s in rng.choice([0.5, 0.7, 1.0, 1.3, 2.5, 3.0], size=dims))
    return labels, (None if ignore == "none" else valid), spacing


@settings(max_examples=60, deadline=None)
@given(_patches())
def test_cropped_targets_equal_the_whole_patch_computation(patch):
    labels, valid, spacing = patch
    masked = labels & (True if valid is None else valid)
    full_valid = np.ones(labels.shape[1:], bool) if valid is None else valid
    np.testing.assert_allclose(signed_distance_target(labels, valid, spacing),
                               whole_patch_signed_distance(masked, full_valid, spacing), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(centerline_radius_target(labels, valid, spacing),
                               whole_patch_centerline_radius(masked, full_valid, spacing), rtol=1e-6, atol=1e-6)
    for radius in (0, 1.5, 2.0, 3.0):
        assert np.array_equal(skeleton_tube_target(labels, valid, spacing, tube_radius=radius),
                              whole_patch_tube(masked, None, spacing, radius))


def test_inside_distance_looks_beyond_the_box_when_ignored_voxels_surround_the_structure():
    labels = np.zeros((1, 5, 12), bool)
    labels[0, 1:4, 2:7] = True
    valid = np.ones((5, 12), bool)
    valid[0:5, 7:9] = False  # right of the object: two ignored columns, then valid background
    valid[0, :] = valid[4, :] = False
    valid[:, 0:2] = False
    # valid background only at columns 9-11 of rows 1-3: the inside distance of (2, 2) is 7, to (2, 9)
    assert signed_distance_target(labels, valid)[0, 2].tolist() == [0, 0, -7, -6, -5, -4, -3, 0, 0, 3, 4, 5]
    depth = centerline_radius_target(labels, valid)[0]
    expected = whole_patch_centerline_radius(labels & valid, valid, (1.0, 1.0))[0]
    assert np.array_equal(depth, expected)


def test_distance_transforms_run_on_the_structure_box(monkeypatch):
    """Only the outside distance of the signed distance map needs the whole patch."""
    shapes = []
    transform = ndimage.distance_transform_edt

    def recording(image, *args, **kwargs):
        shapes.append(np.shape(image))
        return transform(image, *args, **kwargs)

    monkeypatch.setattr(ground_truth.ndimage, "distance_transform_edt", recording)
    labels = np.zeros((2, 40, 48, 56), bool)
    labels[0, 10:14, 5:30, 20:24] = True
    labels[1, 30:33, 40:44, 3:50] = True
    centerline_radius_target(labels, None, (2.0, 1.0, 1.0))
    assert shapes and all(np.prod(s) < 0.05 * labels[0].size for s in shapes)
    shapes.clear()
    signed_distance_target(labels, None, (2.0, 1.0, 1.0))
    assert sorted(np.prod(s) == labels[0].size for s in shapes) == [False, False, True, True]
    shapes.clear()
    skeleton_tube_target(labels, None, (2.0, 1.0, 1.0), tube_radius=6)
    assert all(np.prod(s) < 0.05 * labels[0].size for s in shapes)


# ----------------------------------------------------------------------------- the authors' tube
# Expected values recorded by running Kirchhoff et al.'s published SkeletonTransform(do_tube=True)
# (MIC-DKFZ/Skeleton-Recall, nnunetv2/training/data_augmentation/custom_transforms/skeletonization.py)
# on the label maps below (scikit-image 0.26), followed by their loss's torch.where(mask, skel, 0) and
# one-hot encoding.

def _label_map_2d():
    seg = np.zeros((16, 20), np.int16)
    seg[2:7, 1:18] = 1  # a 5-pixel-wide bar ...
    seg[7:14, 3:8] = 1  # ... bent down
    seg[9:15, 10:19] = 2  # a second class
    seg[3:5, 17:20] = 2  # ... also touching the end of the bar and the border
    return seg


_AUTHORS_2D = [
    "....................",
    "....................",
    "...111111111111111..",
    "..111111111111111222",
    ".1111111111111111222",
    "..1111111111111111..",
    "...111111111111.....",
    "...11111............",
    "...11111............",
    "...11111.....2222...",
    "...11111...2222222..",
    "...1111...222222222.",
    "...1111...22222222..",
    "...111....2222222...",
    "...........22.......",
    "....................",
]


def test_authors_tube_reproduces_their_transform_in_2d():
    seg = _label_map_2d()
    labels = np.stack([seg == 1, seg == 2])
    tube = skeleton_tube_target(labels, shape="authors")
    expected = np.array([[".12".index(ch) for ch in row] for row in _AUTHORS_2D])
    assert np.array_equal(tube[0].astype(bool), expected == 1)
    assert np.array_equal(tube[1].astype(bool), expected == 2)
    # their tube is spacing-blind: the same on any grid
    assert np.array_equal(skeleton_tube_target(labels, None, (3.0, 0.5), shape="authors"), tube)
    # the ball (ours) differs: per-class skeletons, Euclidean ball
    assert not np.array_equal(skeleton_tube_target(labels), tube)


def _label_map_3d():
    seg = np.zeros((10, 14, 18), np.int16)
    seg[2:7, 3:8, 1:17] = 1  # a 5×5 rod
    seg[2:9, 8:11, 6:9] = 2  # a 7×3 rod of class 2 touching it
    seg[0:3, 11:14, 0:18] = 3  # the ignore label on a band
    return seg


@pytest.mark.parametrize("blobs", [False, True])
def test_authors_tube_reproduces_their_transform_in_3d_with_an_ignore_label(blobs):
    seg = _label_map_3d()
    if blobs:  # plus random blobs of both classes
        rng = np.random.default_rng(5)
        seg[(ndimage.gaussian_filter(rng.random(seg.shape), 1.5) > 0.53) & (seg == 0)] = 1
        seg[(ndimage.gaussian_filter(rng.random(seg.shape), 1.5) > 0.55) & (seg == 0)] = 2
    labels = np.stack([seg == 1, seg == 2])
    tube = skeleton_tube_target(labels, seg != 3, shape="authors")
    counts = {False: [173, 57], True: [388, 129]}[blobs]
    assert tube.sum(axis=(1, 2, 3)).tolist() == counts
    assert not tube[:, seg == 3].any() and (tube <= labels).all()


def test_authors_tube_options_are_checked():
    labels = np.ones((1, 5, 5), bool)
    with pytest.raises(ValueError, match="shape"):
        skeleton_tube_target(labels, shape="round")
    with pytest.raises(ValueError, match="whole number"):
        skeleton_tube_target(labels, tube_radius=1.5, shape="authors")
    assert np.array_equal(skeleton_tube_target(labels, tube_radius=0, shape="authors")[0].astype(bool),
                          skeletonize(labels[0]))
