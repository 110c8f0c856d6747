"""The fast paths give exactly the straightforward results: grouped and parallel thinning,
overlapping skeleton work with the other metrics, the k-d tree distances on noisy anisotropic
pairs."""
import multiprocessing

import numpy as np
import pytest
from scipy import ndimage
from skimage.morphology import skeletonize

import _evaluation_reference as reference
from nnunet_ext.evaluation import (
    case_metrics, skeletonize_mask, skeletonize_masks, start_skeletons, surface_metrics,
)
from nnunet_ext.evaluation import skeleton as skeleton_module


def _blobs(rng, shape, fraction, sigma):
    noise = ndimage.gaussian_filter(rng.random(shape), sigma)
    return noise > np.quantile(noise, 1 - fraction)


def _tubes_and_blobs(rng, shape):
    """A few thick tubes spanning the array (large boxes) plus many small blobs, some of them
    two voxels away from a tube (neighbourhoods overlap, components do not touch)."""
    m = np.zeros(shape, bool)
    zz, yy, xx = np.indices(shape)
    for k in range(3):
        cy, cx = rng.uniform(0.2, 0.8, 2) * np.array(shape[1:])
        wobble = 4 * np.sin(zz / 5.0 + k)
        m |= (yy - cy - wobble) ** 2 + (xx - cx) ** 2 <= rng.uniform(4, 12)
    blobs = _blobs(rng, shape, 0.04, 0.8)
    near_tube = ndimage.binary_dilation(m, iterations=2)
    return m | (blobs & ~near_tube)


@pytest.mark.parametrize("seed", range(2))
def test_grouped_thinning_equals_whole_volume_3d(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    m = _tubes_and_blobs(rng, (30, 70, 64))
    whole = skeletonize(m).astype(bool)
    assert np.array_equal(skeletonize_mask(m), whole)
    # small cells and a small size limit: many groups, group boxes overlapping other components
    monkeypatch.setattr(skeleton_module, "_CELL", 8)
    monkeypatch.setattr(skeleton_module, "_SMALL_BOX", 7 ** 3)
    labels, jobs = skeleton_module._thinning_jobs(m)
    assert len(jobs) > 10 and any(len(ks) > 1 for _, ks, _ in jobs)
    assert any(np.count_nonzero(skeleton_module._job_mask(labels, box, ks)) < 50
               for box, ks, _ in jobs)
    assert np.array_equal(skeletonize_mask(m), whole)
    assert np.array_equal(skeletonize_mask(m, workers=2), whole)


def test_grouped_thinning_equals_whole_image_2d(monkeypatch):
    rng = np.random.default_rng(5)
    m = _blobs(rng, (90, 110), 0.25, 1.5)
    whole = skeletonize(m).astype(bool)
    monkeypatch.setattr(skeleton_module, "_CELL", 16)
    monkeypatch.setattr(skeleton_module, "_SMALL_BOX", 10 ** 2)
    assert np.array_equal(skeletonize_mask(m), whole)
    assert np.array_equal(skeletonize_mask(m, workers=2), whole)


def test_parallel_skeletons_of_several_masks_and_no_leftover_processes():
    rng = np.random.default_rng(3)
    a, b = _tubes_and_blobs(rng, (20, 48, 40)), _tubes_and_blobs(rng, (20, 48, 40))
    empty = np.zeros_like(a)
    sa, sb, se = skeletonize_masks([a, b, empty], workers=2)
    assert np.array_equal(sa, skeletonize(a).astype(bool))
    assert np.array_equal(sb, skeletonize(b).astype(bool))
    assert not se.any()
    finish = start_skeletons([a, b], workers=2)
    assert finish(cancel=True) is None
    assert multiprocessing.active_children() == []
    with pytest.raises(ValueError, match="workers"):
        skeletonize_masks([a], workers=0)


def test_case_metrics_parallel_equals_serial_and_reference():
    rng = np.random.default_rng(11)
    shape = (24, 56, 52)
    ref = _tubes_and_blobs(rng, shape)
    pred = np.roll(ref, 1, axis=2) | _blobs(rng, shape, 0.03, 1.0)
    sp = (1.5, 0.7, 0.7)
    names = ["dice", "assd", "masd", "hd", "hd95", "nsd", "cldice", "betti_0_error", "voi"]
    serial = case_metrics(pred, ref, sp, metrics=names, tolerance=1.1)
    parallel = case_metrics(pred, ref, sp, metrics=names, tolerance=1.1, workers=2)
    assert serial == parallel
    expected = reference.surface(pred, ref, sp, tolerance=1.1)
    for k, v in expected.items():
        assert serial[k] == pytest.approx(v, rel=1e-12, abs=1e-12), k
    assert serial["cldice"] == pytest.approx(reference.cldice(pred, ref), rel=1e-12)
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize("seed", range(3))
def test_kdtree_distances_on_noisy_anisotropic_pairs(seed):
    # many far border voxels, lattice ties and both masks touching the array edge
    rng = np.random.default_rng(40 + seed)
    shape = (16, 48, 44)
    ref = _blobs(rng, shape, 0.1, 2.0)
    pred = _blobs(rng, shape, 0.25, 0.7)
    sp = tuple(rng.uniform(0.3, 2.0, 3))
    ours = surface_metrics(pred, ref, sp, tolerance=2.3, percentile=90.0)
    expected = reference.surface(pred, ref, sp, tolerance=2.3, percentile=90.0)
    for k, v in expected.items():
        assert getattr(ours, k) == pytest.approx(v, rel=1e-12, abs=1e-12), k


def _skeleton_in_pool_worker(mask):
    # a pool worker is daemonic and may not start processes: the thinning stays in it
    return multiprocessing.current_process().daemon, skeletonize_masks([mask], workers=2)[0]


def test_workers_inside_a_pool_worker_run_in_that_process():
    rng = np.random.default_rng(8)
    m = _tubes_and_blobs(rng, (16, 40, 36))
    with multiprocessing.get_context("fork").Pool(1) as pool:
        daemon, skel = pool.apply(_skeleton_in_pool_worker, (m,))
    assert daemon
    assert np.array_equal(skel, skeletonize(m).astype(bool))
