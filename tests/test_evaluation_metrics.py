"""Metric functions: hand-computed cases, agreement with the straightforward whole-volume
implementations, empty-mask conventions and properties."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

import _evaluation_reference as reference
from nnunet_ext.evaluation import (
    betti_errors, betti_numbers, border_mask, case_metrics, cldice, cldice_score, dice_score,
    empty_status, euler_characteristic, iou_score, max_distance, precision_score, recall_score,
    skeletonize_mask, surface_distances, surface_metrics, variation_of_information,
    vesuvius_score,
)


TEXT_KEYS = ("status", "skeleton_status")


def ball(shape, centre, radius, spacing=(1, 1, 1)):
    grid = np.indices(shape, dtype=float)
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing))
    return d2 <= radius ** 2


random_blobs = reference.random_blobs


# --- hand-computed cases -------------------------------------------------------------------

def test_overlap_hand_computed():
    p = np.array([[1, 1, 1, 0, 0]], bool)
    r = np.array([[0, 1, 1, 1, 1]], bool)
    assert dice_score(p, r) == pytest.approx(2 * 2 / 7)
    assert iou_score(p, r) == pytest.approx(2 / 5)
    assert precision_score(p, r) == pytest.approx(2 / 3)
    assert recall_score(p, r) == pytest.approx(2 / 4)


def test_single_voxels_anisotropic_distances():
    a = np.zeros((4, 5, 6), bool)
    b = np.zeros_like(a)
    a[0, 0, 0] = True
    b[3, 4, 5] = True
    sp = (2.0, 0.5, 3.0)
    expected = math.sqrt((3 * 2.0) ** 2 + (4 * 0.5) ** 2 + (5 * 3.0) ** 2)
    m = surface_metrics(a, b, spacing=sp, tolerance=expected)
    assert m.hd == pytest.approx(expected)
    assert m.hd95 == pytest.approx(expected)
    assert m.assd == pytest.approx(expected)
    assert m.masd == pytest.approx(expected)
    assert m.nsd == 1.0  # distance exactly at the tolerance counts as within
    assert surface_metrics(a, b, spacing=sp, tolerance=expected * 0.999).nsd == 0.0


def test_lines_directed_distances():
    # a line of 5 voxels and a line of 3 voxels shifted by 2 rows (spacing 1.5 along rows)
    a = np.zeros((6, 8), bool)
    b = np.zeros_like(a)
    a[1, 1:6] = True
    b[3, 1:4] = True
    dp, dr = surface_distances(a, b, spacing=(1.5, 1.0))
    expect_p = [math.hypot(3.0, max(0, c - 3)) for c in range(1, 6)]
    assert sorted(dp) == pytest.approx(sorted(expect_p))
    assert dr == pytest.approx([3.0, 3.0, 3.0])
    m = surface_metrics(a, b, spacing=(1.5, 1.0))
    assert m.hd == pytest.approx(math.hypot(3, 2))
    assert m.assd == pytest.approx((sum(expect_p) + 9.0) / 8)
    assert m.masd == pytest.approx((np.mean(expect_p) + 3.0) / 2)
    assert m.hd95 == pytest.approx(max(np.percentile(expect_p, 95), 3.0))
    assert m.nsd == 0.0


def test_concentric_spheres_known_distance():
    # two concentric balls: every border voxel of the small one lies ~ (R - r) from the big one
    shape = (31, 31, 31)
    big, small = ball(shape, (15, 15, 15), 10), ball(shape, (15, 15, 15), 6)
    m = surface_metrics(small, big)
    assert 3.0 <= m.hd <= 5.0 and 3.0 <= m.assd <= 4.5
    assert m.hd >= m.hd95 >= 0 and m.hd >= m.assd


def test_border_mask_definition():
    m = np.ones((3, 4, 5), bool)
    b = border_mask(m)
    # array-edge voxels are border voxels; only the interior 1x2x3 block is not
    assert b.sum() == m.sum() - 1 * 2 * 3
    assert not b[1, 1:3, 1:4].any()


def test_skeleton_and_cldice_of_a_tube():
    tube = np.zeros((9, 9, 30), bool)
    tube[3:6, 3:6, 2:28] = True
    skel = skeletonize_mask(tube)
    assert skel.sum() > 0 and (skel <= tube).all()
    assert betti_numbers(skel) == (1, 0, 0)
    shorter = tube.copy()
    shorter[..., 15:] = False
    r = cldice(shorter, tube)
    assert r.tprec == 1.0  # the shorter tube's skeleton lies inside the long tube
    assert 0.3 < r.tsens < 0.7
    assert r.value == pytest.approx(2 * r.tprec * r.tsens / (r.tprec + r.tsens))


def test_betti_hand_computed():
    shell = ball((13, 13, 13), (6, 6, 6), 5) & ~ball((13, 13, 13), (6, 6, 6), 3)
    assert betti_numbers(shell) == (1, 0, 1)
    torus = np.zeros((12, 12, 5), bool)
    torus[2:10, 2:10, 1:4] = True
    torus[4:8, 4:8, :] = False
    assert betti_numbers(torus) == (1, 1, 0)
    assert euler_characteristic(torus) == 0
    # two voxels touching at a corner: one component at 26, two at 6
    diag = np.zeros((3, 3, 3), bool)
    diag[0, 0, 0] = diag[1, 1, 1] = True
    assert betti_numbers(diag, 26)[0] == 1
    assert betti_numbers(diag, 6)[0] == 2
    ring = np.ones((3, 3), bool)
    ring[1, 1] = False
    assert betti_numbers(ring) == (1, 1)
    assert betti_errors(ring, np.zeros_like(ring)) == {"betti_0_error": 1, "betti_1_error": 1}
    with pytest.raises(ValueError, match="connectivity"):
        betti_numbers(diag, 8)


def test_voi_hand_computed():
    a = np.array([[1, 1, 0, 0]], bool)
    b = np.array([[1, 0, 0, 0]], bool)
    r = variation_of_information(a, b)
    # H(a|b) = 3/4 * H(1/3, 2/3); H(b|a) = 1/2 * 1 bit
    h = -(1 / 3 * math.log2(1 / 3) + 2 / 3 * math.log2(2 / 3))
    assert r["voi_split"] == pytest.approx(0.75 * h)
    assert r["voi_merge"] == pytest.approx(0.5)
    # a gap splitting one component in two: d's component holds three equally likely labels of
    # c (3 of 4 voxels), c's background holds two equally likely labels of d (2 of 4 voxels)
    c = np.array([[1, 0, 1, 0]], bool)
    d = np.array([[1, 1, 1, 0]], bool)
    r = variation_of_information(c, d)
    assert r["voi_split"] == pytest.approx(0.75 * math.log2(3))
    assert r["voi_merge"] == pytest.approx(0.5)
    assert r["voi"] == pytest.approx(r["voi_split"] + r["voi_merge"])


def test_vesuvius_components():
    m = np.zeros((10, 10, 10), bool)
    m[2:8, 2:8, 5] = True
    r = vesuvius_score(m, m)
    assert r["vesuvius_score"] == pytest.approx(1.0)
    two = m.copy()
    two[2:8, 5, 5] = False  # cut the sheet in two
    r = vesuvius_score(two, m)
    assert r["topo_score"] == pytest.approx(2 * 1 / 3)  # only β0 active: 2*min(2,1)/3
    assert r["voi"] > 0
    w = (0.30, 0.35, 0.35)
    assert r["vesuvius_score"] == pytest.approx(
        w[0] * r["topo_score"] + w[1] * r["surface_dice"] + w[2] * r["voi_score"])


# --- empty masks: defined values and flags ------------------------------------------------

@pytest.mark.parametrize("ndim", [2, 3])
def test_empty_conventions(ndim):
    shape = (6,) * ndim
    empty = np.zeros(shape, bool)
    full = np.zeros(shape, bool)
    full[(slice(1, 4),) * ndim] = True
    sp = (1.0, 2.0, 3.0)[:ndim]
    assert empty_status(empty, empty) == "both_empty"
    assert empty_status(empty, full) == "pred_empty"
    assert empty_status(full, empty) == "ref_empty"
    assert dice_score(empty, empty) == 1.0 and cldice_score(empty, empty) == 1.0
    assert dice_score(empty, full) == 0.0 and cldice_score(full, empty) == 0.0
    both = surface_metrics(empty, empty, sp)
    assert (both.hd, both.hd95, both.assd, both.masd, both.nsd) == (0, 0, 0, 0, 1)
    one = surface_metrics(full, empty, sp)
    diag = max_distance(shape, sp)
    assert (one.hd, one.hd95, one.assd, one.masd, one.nsd) == (diag, diag, diag, diag, 0)
    assert one.status == "ref_empty"
    assert surface_metrics(empty, full, sp, empty_distance=373.13).hd95 == 373.13
    # a mask touching the array corner with an empty partner: NSD is 0, not a spurious value
    corner = np.zeros(shape, bool)
    corner[(0,) * ndim] = True
    assert surface_metrics(corner, empty, sp).nsd == 0.0
    res = case_metrics(empty, full, sp)
    assert res["status"] == "pred_empty"
    assert all(np.isfinite(v) for k, v in res.items() if k not in TEXT_KEYS)
    assert res["skeleton_status"] == "ok"


def test_cldice_disjoint_masks_is_zero():
    a = np.zeros((5, 12), bool)
    b = np.zeros_like(a)
    a[1, 1:5] = True
    b[3, 6:11] = True
    assert cldice_score(a, b) == 0.0


def test_bad_input_errors():
    with pytest.raises(ValueError, match="same shape"):
        dice_score(np.zeros((3, 3), bool), np.zeros((3, 4), bool))
    with pytest.raises(ValueError, match="2D or 3D"):
        dice_score(np.zeros(3, bool), np.zeros(3, bool))
    with pytest.raises(ValueError, match="spacing"):
        surface_metrics(np.ones((3, 3), bool), np.ones((3, 3), bool), spacing=(1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        surface_metrics(np.ones((3, 3), bool), np.ones((3, 3), bool), spacing=(1, -1))
    with pytest.raises(ValueError, match="unknown metric"):
        case_metrics(np.ones((3, 3), bool), np.ones((3, 3), bool), metrics=["dice", "nope"])


# --- agreement with the straightforward whole-volume implementations ---------------------

@pytest.mark.parametrize("seed", range(4))
def test_surface_matches_scipy_reference(seed):
    rng = np.random.default_rng(seed)
    shape = (18, 22, 15)
    p, r = random_blobs(rng, shape, 0.2), random_blobs(rng, shape, 0.25)
    sp = tuple(rng.uniform(0.4, 2.5, 3))
    tol = float(rng.uniform(0.5, 3))
    ours = surface_metrics(p, r, sp, tolerance=tol)
    ref = reference.surface(p, r, sp, tolerance=tol)
    for k, v in ref.items():
        assert getattr(ours, k) == pytest.approx(v, rel=1e-9, abs=1e-9), k


@pytest.mark.parametrize("seed", range(3))
def test_surface_matches_reference_2d(seed):
    rng = np.random.default_rng(100 + seed)
    p, r = random_blobs(rng, (40, 33), 0.3, 2), random_blobs(rng, (40, 33), 0.3, 2)
    sp = (0.7, 1.3)
    ours = surface_metrics(p, r, sp, tolerance=1.3)
    ref = reference.surface(p, r, sp, tolerance=1.3)
    for k, v in ref.items():
        assert getattr(ours, k) == pytest.approx(v, rel=1e-9, abs=1e-9), k


@pytest.mark.parametrize("seed", range(3))
def test_skeleton_and_cldice_match_whole_volume(seed):
    rng = np.random.default_rng(seed)
    p, r = random_blobs(rng, (20, 24, 18), 0.15, 1.0), random_blobs(rng, (20, 24, 18), 0.15, 1.0)
    from skimage.morphology import skeletonize
    assert np.array_equal(skeletonize_mask(p), skeletonize(p).astype(bool))
    assert cldice_score(p, r) == pytest.approx(reference.cldice(p, r), rel=1e-12)
    p2, r2 = random_blobs(rng, (50, 60), 0.2, 1.0), random_blobs(rng, (50, 60), 0.2, 1.0)
    assert np.array_equal(skeletonize_mask(p2), skeletonize(p2).astype(bool))
    assert cldice_score(p2, r2) == pytest.approx(reference.cldice(p2, r2), rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_betti_matches_reference(seed):
    rng = np.random.default_rng(seed)
    m = random_blobs(rng, (16, 14, 12), 0.5, 0.8)
    assert betti_numbers(m) == reference.betti(m)
    m2 = random_blobs(rng, (30, 25), 0.5, 0.8)
    assert betti_numbers(m2) == reference.betti(m2)


def test_dice_matches_reference():
    rng = np.random.default_rng(7)
    p, r = rng.random((10, 11, 12)) < 0.3, rng.random((10, 11, 12)) < 0.4
    assert dice_score(p, r) == pytest.approx(reference.dice(p, r))


# --- properties ---------------------------------------------------------------------------

masks_3d = arrays(np.bool_, st.tuples(st.integers(1, 7), st.integers(1, 7), st.integers(1, 7)))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_properties_symmetry_bounds_identity(data):
    p = data.draw(masks_3d)
    r = data.draw(arrays(np.bool_, st.just(p.shape)))
    sp = data.draw(st.tuples(*[st.floats(0.25, 4.0)] * 3))
    ab = case_metrics(p, r, sp, metrics=["dice", "iou", "cldice", "assd", "masd", "hd", "hd95",
                                         "nsd", "betti_0_error", "betti_1_error",
                                         "betti_2_error", "voi"])
    ba = case_metrics(r, p, sp, metrics=list(k for k in ab if k not in TEXT_KEYS))
    for k, v in ab.items():
        if k in TEXT_KEYS:
            continue
        assert np.isfinite(v), k
        assert v == pytest.approx(ba[k], rel=1e-9, abs=1e-12), k  # all of these are symmetric
    for k in ("dice", "iou", "cldice", "nsd"):
        assert 0.0 <= ab[k] <= 1.0
    assert ab["hd"] >= ab["hd95"] - 1e-12 and ab["hd"] >= ab["assd"] - 1e-12
    assert ab["iou"] <= ab["dice"] + 1e-12
    same = case_metrics(p, p, sp)
    for k in ("dice", "iou", "precision", "recall", "cldice", "nsd"):
        assert same[k] == 1.0
    for k in ("assd", "masd", "hd", "hd95", "betti_0_error", "betti_1_error", "betti_2_error"):
        assert same[k] == 0.0
    assert same["voi"] == pytest.approx(0.0, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 8), st.integers(1, 8), st.integers(1, 8))))
def test_property_betti_euler_consistency(m):
    b = betti_numbers(m)
    assert min(b) >= 0
    assert b[0] - b[1] + b[2] == euler_characteristic(m)
    assert b == reference.betti(m)


# --- clDice skeleton conventions ----------------------------------------------------------

def _even_tube():
    # scikit-image's Lee thinning deletes even-thickness boxes and tubes completely (#3757)
    m = np.zeros((12, 12, 30), bool)
    m[2:6, 2:6, 3:27] = True
    return m


def test_vanished_skeleton_is_flagged_and_defined():
    from skimage.morphology import skeletonize

    tube = _even_tube()
    assert not skeletonize(tube).any()
    shorter = tube.copy()
    shorter[..., 15:] = False
    res = cldice(shorter, tube)
    # both skeletons vanished: each mask stands in for its skeleton
    assert res.skeleton_status == "both_skeletons_empty"
    assert res.tprec == 1.0 and res.tsens == pytest.approx(shorter.sum() / tube.sum())
    assert np.isfinite(res.value)
    thin = np.zeros_like(tube)
    thin[3:6, 3:6, 3:27] = True  # odd thickness: a skeleton exists
    res = cldice(thin, tube)
    assert res.skeleton_status == "ref_skeleton_empty"
    assert res.tsens == pytest.approx((thin & tube).sum() / tube.sum())
    assert cldice(tube, thin).skeleton_status == "pred_skeleton_empty"
    assert case_metrics(tube, thin, metrics=["cldice"])["skeleton_status"] == "pred_skeleton_empty"
    assert case_metrics(tube, tube, metrics=["cldice"])["skeleton_status"] == "both_skeletons_empty"
    assert case_metrics(thin, thin, metrics=["cldice"])["skeleton_status"] == "ok"


def test_robust_skeleton_uses_deepest_voxels_of_vanished_components():
    from nnunet_ext.targets.ground_truth import _skeleton

    tube = _even_tube()
    other = np.zeros_like(tube)
    other[8:11, 8:11, 3:27] = True  # an odd-thickness tube with a normal skeleton
    both = tube | other
    robust = skeletonize_mask(both, skeleton="robust")
    assert np.array_equal(robust, _skeleton(both))
    assert robust[tube].any() and (robust <= both).all()
    from skimage.morphology import skeletonize
    assert np.array_equal(robust & other, skeletonize(both).astype(bool) & other)
    res = cldice(tube, both, skeleton="robust")
    assert res.skeleton_status == "ok"
    assert res.tprec == 1.0 and res.value == pytest.approx(reference.cldice(tube, both, robust=True))
    assert case_metrics(tube, both, metrics=["cldice"], skeleton="robust")["cldice"] == res.value
    assert cldice_score(tube, both, skeleton="robust") == res.value
    with pytest.raises(ValueError, match="skeleton"):
        cldice(tube, both, skeleton="lee")
    with pytest.raises(ValueError, match="skeleton"):
        case_metrics(tube, both, skeleton="zhang")


@pytest.mark.parametrize("seed", range(3))
def test_robust_cldice_matches_whole_volume_reference(seed):
    rng = np.random.default_rng(300 + seed)
    p, r = random_blobs(rng, (18, 26, 22), 0.2, 1.0), random_blobs(rng, (18, 26, 22), 0.2, 1.0)
    # add even-thickness boxes, whose skimage skeleton vanishes
    p[2:6, 2:6, 2:12] = True
    r[12:16, 18:22, 4:8] = True
    expected = reference.cldice(p, r, robust=True)
    assert cldice_score(p, r, skeleton="robust") == pytest.approx(expected, rel=1e-12)
    ours = case_metrics(p, r, metrics=["cldice"], skeleton="robust", workers=2)
    assert ours["cldice"] == pytest.approx(expected, rel=1e-12)


# --- VOI and the Vesuvius score through the shared intermediates --------------------------

@pytest.mark.parametrize("seed", range(3))
def test_voi_matches_scikit_image(seed):
    import cc3d
    from skimage.metrics import variation_of_information as sk_voi

    rng = np.random.default_rng(200 + seed)
    shape = (14, 30, 26)
    p = random_blobs(rng, shape, 0.15, 0.8)
    r = random_blobs(rng, shape, 0.2, 1.2)
    for conn in (26, 6):
        # scikit-image returns (H(Y|X), H(X|Y)) for the labelings X, Y in this order
        merge, split = sk_voi(cc3d.connected_components(p, connectivity=conn),
                              cc3d.connected_components(r, connectivity=conn))
        ours = variation_of_information(p, r, conn)
        assert ours["voi_split"] == pytest.approx(split, abs=1e-12)
        assert ours["voi_merge"] == pytest.approx(merge, abs=1e-12)
    # masks in opposite corners: the crops do not overlap
    a = np.zeros(shape, bool)
    b = np.zeros(shape, bool)
    a[:3, :4, :4] = True
    b[-3:, -4:, -5:] = True
    b[-1, 0, 0] = True
    expected = sk_voi(cc3d.connected_components(a), cc3d.connected_components(b)).sum()
    assert variation_of_information(a, b)["voi"] == pytest.approx(expected, abs=1e-12)
    p2, r2 = random_blobs(rng, (40, 36), 0.3, 1.0), random_blobs(rng, (40, 36), 0.3, 1.0)
    expected = sk_voi(cc3d.connected_components(p2, connectivity=8),
                      cc3d.connected_components(r2, connectivity=8)).sum()
    assert variation_of_information(p2, r2)["voi"] == pytest.approx(expected, abs=1e-12)


def test_case_metrics_vesuvius_equals_direct_score():
    rng = np.random.default_rng(17)
    p, r = random_blobs(rng, (12, 20, 18), 0.2, 1.0), random_blobs(rng, (12, 20, 18), 0.2, 1.0)
    sp = (1.2, 0.8, 0.8)
    res = case_metrics(p, r, sp, metrics=["vesuvius_score", "nsd"], connectivity=6)
    assert res["vesuvius_score"] == pytest.approx(vesuvius_score(p, r, sp, connectivity=6)["vesuvius_score"],
                                                  rel=1e-12)
    empty = np.zeros_like(p)
    assert case_metrics(empty, empty, metrics=["vesuvius_score"])["vesuvius_score"] == \
        pytest.approx(vesuvius_score(empty, empty)["vesuvius_score"])
    assert case_metrics(p, empty, metrics=["vesuvius_score"])["vesuvius_score"] == \
        pytest.approx(vesuvius_score(p, empty)["vesuvius_score"])
