"""The fast paths give exactly the straightforward results: grouped, merged and parallel
thinning, tiny components left out of the thinning, the robust skeleton per job, overlapping
skeleton work with the other metrics, the k-d tree distances on noisy anisotropic pairs."""
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
from nnunet_ext.evaluation._prepared import prepare_mask


def _tubes_and_blobs(rng, shape):
    """A few thick tubes spanning the array (large boxes) plus many small blobs, some of them
    two voxels away from a tube (neighbourhoods overlap, components do not touch)."""
    m = np.zeros(shape, bool)
    zz, yy, xx = np.indices(shape)
    for k in range(3):
        cy, cx = rng.uniform(0.2, 0.8, 2) * np.array(shape[1:])
        wobble = 4 * np.sin(zz / 5.0 + k)
        m |= (yy - cy - wobble) ** 2 + (xx - cx) ** 2 <= rng.uniform(4, 12)
    blobs = reference.random_blobs(rng, shape, 0.04, 0.8)
    near_tube = ndimage.binary_dilation(m, iterations=2)
    return m | (blobs & ~near_tube)


@pytest.mark.parametrize("seed", range(2))
def test_grouped_thinning_equals_whole_volume_3d(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    m = _tubes_and_blobs(rng, (30, 70, 64))
    whole = skeletonize(m).astype(bool)
    assert np.array_equal(skeletonize_mask(m), whole)
    # small cells, a small size limit and no merging: many groups, group boxes overlapping
    # other components
    monkeypatch.setattr(skeleton_module, "_CELL", 8)
    monkeypatch.setattr(skeleton_module, "_SMALL_BOX", 7 ** 3)
    monkeypatch.setattr(skeleton_module, "_CALL_COST", -10 ** 9)
    prep = prepare_mask(m)
    jobs, fixed = skeleton_module._plan(prep, 0)
    assert len(jobs) > 10 and any(len(job.ks) > 1 for job in jobs)
    assert any(np.count_nonzero(skeleton_module._job_mask(prep, job.box, job.ks)) < 50
               for job in jobs)
    assert np.array_equal(skeletonize_mask(m), whole)
    assert np.array_equal(skeletonize_mask(m, workers=2), whole)
    # merging everything that saves scanned volume: fewer, larger jobs, the same skeleton
    monkeypatch.setattr(skeleton_module, "_CALL_COST", 10 ** 6)
    merged, _ = skeleton_module._plan(prep, 0)
    assert len(merged) < len(jobs)
    assert np.array_equal(skeletonize_mask(m), whole)
    assert np.array_equal(skeletonize_mask(m, workers=3), whole)


def test_grouped_thinning_equals_whole_image_2d(monkeypatch):
    rng = np.random.default_rng(5)
    m = reference.random_blobs(rng, (90, 110), 0.25, 1.5)
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
    pred = np.roll(ref, 1, axis=2) | reference.random_blobs(rng, shape, 0.03, 1.0)
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
    ref = reference.random_blobs(rng, shape, 0.1, 2.0)
    pred = reference.random_blobs(rng, shape, 0.25, 0.7)
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


def test_tiny_components_are_their_own_skeleton():
    # every single voxel and every 26-/8-connected pair, beside larger components: the ones
    # left out of the thinning keep exactly scikit-image's result
    offsets3 = [(a, b, c) for a in (0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)
                if (a, b, c) > (0, 0, 0)]
    m = np.zeros((8, 40, 40), bool)
    for i, off in enumerate(offsets3):
        y, x = 3 + 4 * (i // 8), 3 + 4 * (i % 8)
        m[2, y, x] = m[2 + off[0], y + off[1], x + off[2]] = True
    m[6, 2, 2] = True
    m[5:8, 30:37, 30:37] = True
    prep = prepare_mask(m)
    jobs, fixed = skeleton_module._plan(prep, 0)
    assert len(fixed) == 2 * len(offsets3) + 1
    assert np.array_equal(skeletonize_mask(m), skeletonize(m).astype(bool))
    m2 = np.zeros((30, 30), bool)
    for i, off in enumerate([(0, 1), (1, -1), (1, 0), (1, 1)]):
        m2[3 + 5 * i, 3] = m2[3 + 5 * i + off[0], 3 + off[1]] = True
    m2[3, 20] = True
    m2[10:20, 15:25] = True
    assert np.array_equal(skeletonize_mask(m2), skeletonize(m2).astype(bool))


@pytest.mark.parametrize("workers", [1, 2])
def test_robust_skeleton_per_job_equals_whole_volume(workers):
    from nnunet_ext.targets.ground_truth import _skeleton

    rng = np.random.default_rng(21)
    m = _tubes_and_blobs(rng, (24, 48, 44))
    m[:4, :4, 10:30] = True     # an even-thickness tube on the array's edge (vanishes)
    m[10:14, 20:24, -12:] = True  # another one reaching the last plane
    whole = _skeleton(m)
    assert np.array_equal(skeletonize_mask(m, workers=workers, skeleton="robust"), whole)
    m2 = reference.random_blobs(rng, (60, 70), 0.3, 1.5)
    m2[:2, :2] = True
    assert np.array_equal(skeletonize_mask(m2, workers=workers, skeleton="robust"), _skeleton(m2))


def _failing_thin(mask, method):
    raise ValueError("thinning failed on purpose")


def test_worker_errors_propagate_and_leave_no_processes(monkeypatch):
    rng = np.random.default_rng(4)
    a = _tubes_and_blobs(rng, (16, 40, 36))
    monkeypatch.setattr(skeleton_module, "_thin", _failing_thin)
    with pytest.raises((ValueError, RuntimeError), match="on purpose"):
        skeletonize_masks([a, a], workers=2)
    with pytest.raises((ValueError, RuntimeError), match="on purpose"):
        case_metrics(a, a, metrics=["cldice", "hd95"], workers=2)
    assert multiprocessing.active_children() == []


def test_voi_pair_counts_without_a_dense_table():
    from nnunet_ext.evaluation.voi import _pair_counts

    a = np.array([1, 5_000_000, 5_000_000, 7], np.int64)
    b = np.array([3, 9_000, 9_000, 1], np.int64)
    assert sorted(_pair_counts(a, b, 10_000).tolist()) == [1, 1, 2]


def test_case_metrics_2d_parallel_equals_reference():
    rng = np.random.default_rng(12)
    ref = reference.random_blobs(rng, (90, 100), 0.25, 1.5)
    pred = np.roll(ref, 2, axis=1) | reference.random_blobs(rng, (90, 100), 0.05, 1.0)
    sp = (0.8, 0.6)
    names = ["assd", "hd", "hd95", "nsd", "cldice", "betti_0_error", "betti_1_error", "voi"]
    serial = case_metrics(pred, ref, sp, metrics=names, tolerance=0.9)
    assert case_metrics(pred, ref, sp, metrics=names, tolerance=0.9, workers=2) == serial
    expected = reference.surface(pred, ref, sp, tolerance=0.9)
    for k in ("assd", "hd", "hd95", "nsd"):
        assert serial[k] == pytest.approx(expected[k], rel=1e-12, abs=1e-12), k
    assert serial["cldice"] == pytest.approx(reference.cldice(pred, ref), rel=1e-12)
    bp, br = reference.betti(pred), reference.betti(ref)
    assert serial["betti_0_error"] == abs(bp[0] - br[0])
    assert serial["betti_1_error"] == abs(bp[1] - br[1])
    assert multiprocessing.active_children() == []


def test_distance_transform_on_the_box_of_both_borders_is_exact():
    # the argument for restricting a distance transform (not used: the k-d tree is faster when
    # the prediction is spread over the volume): every border voxel of the other mask lies in
    # the bounding box of both borders, so the transform over that box, without a margin, gives
    # the whole-volume distances
    rng = np.random.default_rng(31)
    shape = (20, 50, 46)
    a = np.zeros(shape, bool)
    b = np.zeros(shape, bool)
    a[3:9, 5:20, 30:40] = reference.random_blobs(rng, (6, 15, 10), 0.5, 1.0)
    b[12:18, 25:45, 4:16] = reference.random_blobs(rng, (6, 20, 12), 0.5, 1.0)
    sp = (1.5, 0.7, 0.9)
    ba, bb = reference.border(a), reference.border(b)
    box = tuple(slice(min(x.min(), y.min()), max(x.max(), y.max()) + 1)
                for x, y in zip(np.nonzero(ba), np.nonzero(bb)))
    whole = ndimage.distance_transform_edt(~bb, sampling=sp)[ba]
    cropped = ndimage.distance_transform_edt(~bb[box], sampling=sp)[ba[box]]
    assert np.array_equal(whole, cropped)
    ours = surface_metrics(a, b, sp)
    assert ours.hd == pytest.approx(max(whole.max(), reference.directed_distances(b, a, sp).max()))


def _tree_with_noise(rng, shape=(24, 40, 40)):
    """One 26-connected branching tube spanning the array, plus small blobs all over it."""
    tree = np.zeros(shape, bool)
    tree[12, 2:38, 20] = True
    for x in (8, 16, 24, 32):
        tree[4:20, x, 20] = True
        tree[12, x, 4:36] = True
    tree = ndimage.binary_dilation(tree, iterations=1)
    blobs = ndimage.gaussian_filter(rng.random(shape), 1.0) > 0.62
    return tree, tree | blobs


def test_single_large_component_thinned_in_one_call_with_identical_skeleton():
    from skimage.morphology import skeletonize

    from nnunet_ext.evaluation import skeletonize_mask
    from nnunet_ext.evaluation._prepared import prepare_mask
    from nnunet_ext.evaluation.skeleton import _plan

    tree, noisy = _tree_with_noise(np.random.default_rng(0))
    prep = prepare_mask(noisy)
    assert prep.n_components > 10
    jobs, fixed = _plan(prep, 0)
    # the tree's box spans the crop: one job over the whole crop, never more scanning than the
    # whole-array call (per-component boxes overlapping the tree's would scan more)
    assert len(jobs) == 1 and jobs[0].scan == prep.crop.size
    assert set(jobs[0].ks) | {int(prep.labels[tuple(c - np.asarray(prep.origin))]) for c in fixed} \
        == set(range(1, prep.n_components + 1))
    for m in (tree, noisy):
        for workers in (1, 2):
            assert np.array_equal(skeletonize_mask(m, workers=workers), skeletonize(m).astype(bool))
    # two large components far apart keep their own jobs
    sparse = np.zeros((40, 90, 90), bool)
    sparse[2:36, 2:36, 2:36] = sparse[4:38, 50:86, 50:86] = True
    assert len(_plan(prepare_mask(sparse), 0)[0]) == 2


def _recording_thin(calls):
    original = skeleton_module._thin

    def thin(mask, method):
        calls.append(mask.shape)
        return original(mask, method)

    return thin


@pytest.mark.parametrize("ndim", [2, 3])
def test_thinning_never_scans_more_than_the_whole_array_call(ndim, monkeypatch):
    # a mask spanning the array (one component, and the same with blobs): scikit-image pads its
    # input by one layer, so the box handed to it must be the mask's tight box, never the crop
    # that already carries our padding layer (that would scan two extra layers per pass)
    rng = np.random.default_rng(7)
    shape = (12, 30, 28)[-ndim:]
    m = np.zeros(shape, bool)
    m[(slice(None),) + (slice(4, 9),) * (ndim - 1)] = True
    m[(slice(3, 8),) * (ndim - 1) + (slice(None),)] = True
    noisy = m | reference.random_blobs(rng, shape, 0.02, 0.8)
    for mask in (m, noisy):
        calls = []
        monkeypatch.setattr(skeleton_module, "_thin", _recording_thin(calls))
        ours = skeletonize_mask(mask)
        assert np.array_equal(ours, skeletonize(mask).astype(bool))
        scanned = sum(int(np.prod([n + 2 for n in s])) for s in calls)
        assert calls and scanned <= int(np.prod([n + 2 for n in shape])), calls
        monkeypatch.undo()


def _thick_tree_and_thin_blobs(rng, shape=(20, 72, 72)):
    """A thick branching tube (one component, radius 3) spanning a third of the array, and thin
    blobs all over the array: what the single-component benchmark pair looks like."""
    tree = np.zeros(shape, bool)
    tree[10, 4:44, 20] = True
    tree[4:16, 24, 20] = True
    tree[10, 24, 8:40] = True
    tree = ndimage.distance_transform_edt(~tree) <= 3
    blobs = ndimage.gaussian_filter(rng.random(shape), 0.8) > 0.64
    return tree | (blobs & ~ndimage.binary_dilation(tree, iterations=2))


def test_thick_component_is_thinned_apart_from_thin_blobs_with_identical_skeleton():
    # Lee's thinning scans its whole box in every pass until its thickest component is thin:
    # the thick tree alone in its box, the thin blobs in theirs, costs fewer voxel visits than
    # one call over everything, although the boxes overlap
    rng = np.random.default_rng(2)
    m = _thick_tree_and_thin_blobs(rng)
    prep = prepare_mask(m)
    jobs, _ = skeleton_module._plan(prep, 0)
    assert len(jobs) > 1
    whole = skeletonize(m).astype(bool)
    for workers in (1, 2):
        assert np.array_equal(skeletonize_mask(m, workers=workers), whole)
    # components equally thick everywhere, boxes covering the crop: one call
    thick = ndimage.binary_dilation(reference.random_blobs(rng, (20, 72, 72), 0.03, 0.8),
                                    iterations=3)
    assert len(skeleton_module._plan(prepare_mask(thick), 0)[0]) == 1


@pytest.mark.parametrize("seed", range(4))
def test_planned_jobs_give_whole_array_skeleton_on_random_masks(seed):
    # tiny components at the array's corners and edges, blobs of every size, 2D and 3D
    rng = np.random.default_rng(100 + seed)
    shape = [(18, 40, 44), (30, 26, 20), (90, 80), (7, 50, 50)][seed]
    m = reference.random_blobs(rng, shape, rng.uniform(0.05, 0.4), rng.uniform(0.6, 2.0))
    m[(0,) * len(shape)] = True
    m[tuple(n - 1 for n in shape)] = True
    whole = skeletonize(m).astype(bool)
    assert np.array_equal(skeletonize_mask(m), whole)
    assert np.array_equal(skeletonize_mask(m, workers=2), whole)
    coords = skeleton_module.start_skeleton_coordinates([prepare_mask(m)])()[0]
    assert sorted(map(tuple, coords.tolist())) == sorted(map(tuple, np.argwhere(whole).tolist()))


def _recording_find_objects(calls):
    original = skeleton_module.ndimage.find_objects

    def find_objects(labels, *args, **kwargs):
        calls.append(labels.shape)
        return original(labels, *args, **kwargs)

    return find_objects


def test_preview_skips_the_full_box_pass_when_one_call_is_cheaper(monkeypatch):
    # a tree spanning the array with blobs: thinned in one call. With the preview on (forced for
    # this small mask) the labels are read once on the stride grid, not in a full pass: what
    # made the plan slower than the whole-array call on a mask it does not split
    calls = []
    monkeypatch.setattr(skeleton_module, "_PREVIEW_MIN_VOXELS", 0)
    monkeypatch.setattr(skeleton_module.ndimage, "find_objects", _recording_find_objects(calls))
    _, noisy = _tree_with_noise(np.random.default_rng(0))
    prep = prepare_mask(noisy)
    jobs, _ = skeleton_module._plan(prep, 0)
    stride = skeleton_module._PREVIEW_STRIDE
    assert len(jobs) == 1 and jobs[0].scan == prep.crop.size
    assert calls == [tuple(-(-n // stride) for n in prep.labels.shape)]
    # a mask that is split: preview, then the full pass, and the same jobs as without preview
    m = _thick_tree_and_thin_blobs(np.random.default_rng(2))
    prep = prepare_mask(m)
    calls.clear()
    jobs, fixed = skeleton_module._plan(prep, 0)
    assert len(jobs) > 1 and calls[-1] == prep.labels.shape and len(calls) == 2
    monkeypatch.setattr(skeleton_module, "_PREVIEW_MIN_VOXELS", 1 << 62)
    assert skeleton_module._plan(prep, 0)[0] == jobs


@pytest.mark.parametrize("seed", range(3))
def test_skeletons_with_the_preview_equal_the_whole_array_call(seed, monkeypatch):
    monkeypatch.setattr(skeleton_module, "_PREVIEW_MIN_VOXELS", 0)
    rng = np.random.default_rng(200 + seed)
    shape = [(18, 40, 44), (90, 80), (24, 40, 40)][seed]
    m = reference.random_blobs(rng, shape, rng.uniform(0.05, 0.4), rng.uniform(0.6, 2.0))
    if seed == 2:
        m |= _tree_with_noise(rng)[0]
    whole = skeletonize(m).astype(bool)
    assert np.array_equal(skeletonize_mask(m), whole)
    assert np.array_equal(skeletonize_mask(m, workers=2), whole)
