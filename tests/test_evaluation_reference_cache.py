"""A reference prepared once (PreparedReference) gives bit-identical metrics for every
prediction, and can never hand one reference's, spacing's or skeleton definition's data to
another."""
import multiprocessing

import numpy as np
import pytest
from scipy import ndimage

import _evaluation_reference as reference
from nnunet_ext.evaluation import METRICS, PreparedReference, case_metrics, prepare_reference

ALL = list(METRICS)


def _pair_family(rng, shape, n=3):
    ref = reference.random_blobs(rng, shape, 0.15, 1.5)
    preds = [np.roll(ref, k, axis=-1) | reference.random_blobs(rng, shape, 0.03, 0.8)
             for k in range(n)]
    return ref, preds + [np.zeros_like(ref), ref.copy()]


@pytest.mark.parametrize("shape, spacing", [((14, 40, 36), (1.5, 0.7, 0.8)),
                                            ((70, 64), (0.6, 0.9))])
@pytest.mark.parametrize("workers", [1, 2])
def test_prepared_reference_is_bit_identical_for_every_prediction(shape, spacing, workers):
    rng = np.random.default_rng(len(shape) * 10 + workers)
    ref, preds = _pair_family(rng, shape)
    prepared = prepare_reference(ref, spacing)
    for pred in preds:
        plain = case_metrics(pred, ref, spacing, metrics=ALL, tolerance=1.3, workers=workers)
        cached = case_metrics(pred, prepared, spacing, metrics=ALL, tolerance=1.3,
                              workers=workers)
        assert cached == plain
    assert multiprocessing.active_children() == []


def test_prepared_reference_with_other_options_and_an_empty_reference():
    rng = np.random.default_rng(3)
    ref, preds = _pair_family(rng, (12, 30, 30))
    prepared = prepare_reference(ref, (1.0, 2.0, 1.0))
    kw = dict(metrics=["cldice", "betti_0_error", "betti_1_error", "voi", "hd95", "nsd"],
              connectivity=6, percentile=90.0, tolerance=2.5)
    for pred in preds:
        for skeleton in ("skimage", "robust"):
            assert (case_metrics(pred, prepared, (1.0, 2.0, 1.0), skeleton=skeleton, **kw)
                    == case_metrics(pred, ref, (1.0, 2.0, 1.0), skeleton=skeleton, **kw))
    empty = prepare_reference(np.zeros_like(ref))
    for pred in preds:
        assert case_metrics(pred, empty, metrics=ALL) == \
            case_metrics(pred, np.zeros_like(ref), metrics=ALL)


def test_reference_is_copied_so_later_changes_do_not_reach_the_cache():
    rng = np.random.default_rng(5)
    ref, preds = _pair_family(rng, (12, 32, 30))
    original = ref.copy()
    prepared = prepare_reference(ref, None)
    first = case_metrics(preds[0], prepared, metrics=ALL)
    ref[:, :, :15] = ~ref[:, :, :15]      # the caller reuses its buffer for the next case
    assert case_metrics(preds[1], prepared, metrics=ALL) == \
        case_metrics(preds[1], original, metrics=ALL)
    assert first == case_metrics(preds[0], original, metrics=ALL)
    assert not prepared.mask.flags.writeable


def test_two_references_of_one_shape_never_share_data():
    # interleaved use of two prepared references of the same shape and spacing: a cache keyed
    # by shape, spacing or a global slot would give one the other's skeleton or border tree
    rng = np.random.default_rng(9)
    shape, sp = (12, 36, 32), (1.2, 0.8, 0.8)
    a, preds = _pair_family(rng, shape)
    b = ndimage.binary_dilation(np.roll(a, 5, axis=1), iterations=1)
    pa, pb = prepare_reference(a, sp), prepare_reference(b, sp)
    for pred in preds:
        for ref, prepared in ((a, pa), (b, pb), (a, pa)):
            assert case_metrics(pred, prepared, sp, metrics=ALL) == \
                case_metrics(pred, ref, sp, metrics=ALL)


def test_skeleton_definitions_are_cached_apart():
    # an even-thickness bar vanishes under scikit-image's thinning and is kept by the robust
    # skeleton: clDice differs, and each definition must get its own cached skeleton
    ref = np.zeros((10, 24, 24), bool)
    ref[3:7, 3:7, 2:20] = True
    pred = ref.copy()
    pred[3:7, 3:7, 12:20] = False
    prepared = prepare_reference(ref)
    got = {s: case_metrics(pred, prepared, metrics=["cldice"], skeleton=s) for s in
           ("skimage", "robust", "skimage")}
    for s, value in got.items():
        assert value == case_metrics(pred, ref, metrics=["cldice"], skeleton=s)
    assert case_metrics(pred, prepared, metrics=["cldice"], skeleton="robust") != \
        case_metrics(pred, prepared, metrics=["cldice"], skeleton="skimage")


def test_other_spacing_or_shape_is_refused():
    ref = np.zeros((8, 20, 20), bool)
    ref[2:6, 5:15, 5:15] = True
    prepared = prepare_reference(ref, (2.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        case_metrics(ref, prepared, (1.0, 1.0, 1.0), metrics=["hd95"])
    with pytest.raises(ValueError, match="spacing"):
        case_metrics(ref, prepared, None, metrics=["dice"])
    with pytest.raises(ValueError, match="same shape"):
        case_metrics(ref[:, :10], prepared, (2.0, 1.0, 1.0), metrics=["dice"])
    with pytest.raises(ValueError, match="values other than 0 and 1"):
        prepare_reference(ref.astype(np.uint8) * 2)
    assert isinstance(prepared, PreparedReference)


def test_reference_side_work_is_done_once(monkeypatch):
    # the point of the cache: N predictions, one skeleton / border tree / Betti computation of
    # the reference
    from nnunet_ext.evaluation import reference as reference_module
    from nnunet_ext.evaluation import surface, topology

    calls = {"tree": 0, "betti": 0}
    tree, betti = surface._border_tree, topology.betti_numbers_prepared
    ref_borders = []

    def counting_tree(border, spacing):
        # trees over the reference's border (the prediction's are built per call)
        calls["tree"] += any(np.array_equal(border.coords, c) for c in ref_borders)
        return tree(border, spacing)

    def counting_betti(*a, **k):
        calls["betti"] += 1
        return betti(*a, **k)

    monkeypatch.setattr(surface, "_border_tree", counting_tree)
    monkeypatch.setattr(topology, "betti_numbers_prepared", counting_betti)
    rng = np.random.default_rng(1)
    ref, preds = _pair_family(rng, (10, 30, 30))
    prepared = reference_module.prepare_reference(ref)
    ref_borders.append(surface._border(prepared.prepared).coords)
    for pred in preds[:3]:
        case_metrics(pred, prepared, metrics=ALL)
    assert calls["tree"] == 1
    assert calls["betti"] == 1
    assert sorted(k[0] for k in prepared._memo) == ["band", "betti", "border", "border_tree",
                                                     "components", "skeleton"]


def _write_image(path, arr, spacing_xyz=(0.8, 0.7, 2.0)):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.SetSpacing(spacing_xyz)
    sitk.WriteImage(img, str(path))


def _three_trainers(root):
    """gt_segmentations with two classes and an ignore label; three trainers, two folds."""
    import json

    dataset = "Dataset902_Cache"
    gt = root / "preprocessed" / dataset / "gt_segmentations"
    gt.mkdir(parents=True)
    dj = {"labels": {"background": 0, "artery": 1, "vein": 2, "ignore": 3},
          "file_ending": ".nii.gz", "channel_names": {"0": "CT"}, "numTraining": 4}
    rng = np.random.default_rng(0)
    refs = {}
    for i in range(4):
        ref = np.zeros((8, 20, 18), np.uint8)
        ref[reference.random_blobs(rng, ref.shape, 0.2, 1.2)] = 1
        ref[reference.random_blobs(rng, ref.shape, 0.1, 1.0)] = 2
        ref[:, :2, :] = 3
        refs[i] = ref
        _write_image(gt / f"case_{i}.nii.gz", ref)
    folders = []
    for t, trainer in enumerate(("A", "B", "C")):
        res = root / "results" / dataset / f"{trainer}__nnUNetPlans__3d_fullres"
        for fold, cases in ((0, (0, 1)), (1, (2, 3))):
            val = res / f"fold_{fold}" / "validation"
            val.mkdir(parents=True)
            for i in cases:
                if trainer == "C" and i == 3:
                    continue  # a trainer without one case: only the common ones are compared
                pred = np.where(refs[i] == 3, 0, refs[i])
                pred = np.roll(pred, t, axis=2)
                pred[reference.random_blobs(rng, pred.shape, 0.02, 0.7)] = 1 + t % 2
                _write_image(val / f"case_{i}.nii.gz", pred)
        (res / "dataset.json").write_text(json.dumps(dj))
        folders.append(res)
    return folders


def test_compare_of_several_trainers_prepares_each_reference_once(tmp_path, monkeypatch):
    import shutil

    from nnunet_ext.evaluation import folder as folder_module
    from nnunet_ext.evaluation.compare import write_comparison

    _three_trainers(tmp_path / "shared")
    shutil.copytree(tmp_path / "shared", tmp_path / "apart")
    reads = []
    read = folder_module._read

    def counting_read(reader, path, allowed, what):
        reads.append(what)
        return read(reader, path, allowed, what)

    monkeypatch.setattr(folder_module, "_read", counting_read)
    cmps = {}
    for mode in ("shared", "apart"):
        monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / mode / "preprocessed"))
        folders = sorted((tmp_path / mode / "results" / "Dataset902_Cache").iterdir())
        reads.clear()
        cmps[mode] = write_comparison([str(f) for f in folders], str(tmp_path / mode / "cmp"),
                                      n_resamples=100, plots=False, progress=False,
                                      share_reference=mode == "shared")
        # 4 reference cases: once each when shared, once per trainer having the case apart
        assert reads.count("reference") == (4 if mode == "shared" else 11)
        assert reads.count("prediction") == 11
    assert cmps["shared"] == cmps["apart"]
    for trainer in ("A", "B", "C"):
        for fold in (0, 1):
            rel = f"results/Dataset902_Cache/{trainer}__nnUNetPlans__3d_fullres/fold_{fold}/validation"
            for name in ("metrics_per_case.csv", "metrics_summary.json"):
                assert (tmp_path / "shared" / rel / name).read_bytes() == \
                    (tmp_path / "apart" / rel / name).read_bytes(), (rel, name)
