"""Weighted ensembles of probability folders: equal weights are nnUNetv2_ensemble; weights and their fit."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2.ensembling.ensemble import ensemble_folders

from nnunet_ext.inference.ensemble import (
    common_cases,
    ensemble_folders_weighted,
    weighted_average_probabilities,
)
from nnunet_ext.inference.fit_weights import collect_cv_files, fit_ensemble_weights, simplex_grid
from nnunet_ext.inference.untrained import shrink_configuration

PLANS = shrink_configuration(json.loads((Path(__file__).parent / "data" / "plans_tubes.json").read_text()),
                             "3d_fullres", (8, 16, 16), (4, 8))
LABELS = {"channel_names": {"0": "x"}, "labels": {"background": 0, "a": 1, "b": 2}, "numTraining": 0,
          "file_ending": ".nii.gz"}
REGIONS = {"channel_names": {"0": "x"}, "labels": {"background": 0, "whole": [1, 2], "core": 2},
           "regions_class_order": [1, 2], "numTraining": 0, "file_ending": ".nii.gz"}
SHAPE = (6, 7, 8)
PROPS = {"spacing": [2.0, 1.0, 0.5], "sitk_stuff": {"spacing": (0.5, 1.0, 2.0), "origin": (1.0, 2.0, 3.0),
                                                   "direction": (1, 0, 0, 0, 1, 0, 0, 0, 1)}}


def write_member(folder: Path, probabilities: dict, dataset_json=LABELS):
    """A prediction folder as nnUNetv2_predict --save_probabilities leaves it."""
    folder.mkdir(parents=True, exist_ok=True)
    for case, p in probabilities.items():
        np.savez_compressed(folder / f"{case}.npz", probabilities=p.astype(np.float32))
        with open(folder / f"{case}.pkl", "wb") as f:
            pickle.dump(PROPS, f)
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    (folder / "plans.json").write_text(json.dumps(PLANS))
    return str(folder)


def random_probabilities(rng, cases, channels=3, regions=False):
    if regions:
        return {c: rng.uniform(size=(channels, *SHAPE)) for c in cases}
    return {c: rng.dirichlet(np.ones(channels), size=SHAPE).transpose(3, 0, 1, 2) for c in cases}


def _seg(path):
    img = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(img), (img.GetSpacing(), img.GetOrigin(), img.GetDirection())


@pytest.mark.parametrize("dataset_json", [LABELS, REGIONS], ids=["labels", "regions"])
def test_equal_weights_equal_nnunet_ensemble(tmp_path, dataset_json):
    rng = np.random.default_rng(0)
    cases = ["c0", "c1", "c2"]
    regions = dataset_json is REGIONS
    folders = [write_member(tmp_path / f"m{i}", random_probabilities(rng, cases, 3 if not regions else 2, regions),
                            dataset_json) for i in range(3)]
    ensemble_folders(folders, str(tmp_path / "nnunet"), save_merged_probabilities=True, num_processes=1)
    for name, weights in (("none", None), ("ones", [1, 1, 1]), ("thirds", [1 / 3] * 3)):
        out = tmp_path / name
        assert ensemble_folders_weighted(folders, str(out), weights, save_probabilities=True) == cases
        for c in cases:
            ref, ref_geo = _seg(tmp_path / "nnunet" / f"{c}.nii.gz")
            got, geo = _seg(out / f"{c}.nii.gz")
            assert np.array_equal(ref, got) and ref_geo == geo
            np.testing.assert_array_equal(np.load(tmp_path / "nnunet" / f"{c}.npz")["probabilities"],
                                          np.load(out / f"{c}.npz")["probabilities"])
    assert json.loads((tmp_path / "none" / "ensemble_weights.json").read_text())["weights"] == [1 / 3] * 3


def test_weights_are_applied(tmp_path):
    rng = np.random.default_rng(1)
    probs = [random_probabilities(rng, ["c0"]) for _ in range(3)]
    folders = [write_member(tmp_path / f"m{i}", p) for i, p in enumerate(probs)]
    files = [f"{f}/c0.npz" for f in folders]
    expected = (2 * probs[0]["c0"] + probs[1]["c0"] + probs[2]["c0"]) / 4
    np.testing.assert_allclose(weighted_average_probabilities(files, [2, 1, 1]), expected, rtol=1e-6, atol=1e-7)
    ensemble_folders_weighted(folders, str(tmp_path / "only_first"), [1, 0, 0])
    got, _ = _seg(tmp_path / "only_first" / "c0.nii.gz")
    assert np.array_equal(got, probs[0]["c0"].argmax(0))
    ensemble_folders_weighted(folders, str(tmp_path / "w"), [2, 1, 1], num_processes=2)
    got, _ = _seg(tmp_path / "w" / "c0.nii.gz")
    assert np.array_equal(got, expected.astype(np.float32).argmax(0))


def test_bad_input_is_named(tmp_path):
    rng = np.random.default_rng(2)
    a = write_member(tmp_path / "a", random_probabilities(rng, ["c0", "c1"]))
    b = write_member(tmp_path / "b", random_probabilities(rng, ["c0"]))
    with pytest.raises(ValueError, match=r"b lacks c1"):
        common_cases([a, b])
    with pytest.raises(ValueError, match="3 weights given for 2"):
        ensemble_folders_weighted([a, a], str(tmp_path / "o"), [1, 1, 1])
    with pytest.raises(ValueError, match="non-negative"):
        ensemble_folders_weighted([a, a], str(tmp_path / "o"), [1, -1])
    ensemble_folders_weighted([a, a], str(tmp_path / "o"))
    with pytest.raises(FileExistsError, match="--overwrite"):
        ensemble_folders_weighted([a, a], str(tmp_path / "o"))
    ensemble_folders_weighted([a, a], str(tmp_path / "o"), overwrite=True)
    np.savez(tmp_path / "a" / "c1.npz", softmax=np.zeros(3))
    with pytest.raises(ValueError, match=r"c1.npz has no 'probabilities'"):
        weighted_average_probabilities([str(tmp_path / "a" / "c1.npz")])
    c = write_member(tmp_path / "c", {"c0": rng.dirichlet(np.ones(3), size=(5, 5, 5)).transpose(3, 0, 1, 2)})
    with pytest.raises(ValueError, match="shape"):
        weighted_average_probabilities([f"{a}/c0.npz", f"{c}/c0.npz"])


def test_simplex_grid():
    g = simplex_grid(3, 0.25)
    assert g.shape == (15, 3)
    np.testing.assert_allclose(g.sum(1), 1)
    assert len({tuple(r) for r in g}) == 15 and g.min() == 0
    assert simplex_grid(1, 0.5).tolist() == [[1.0]]
    with pytest.raises(ValueError, match="does not divide 1"):
        simplex_grid(2, 0.3)
    with pytest.raises(ValueError, match="coarser step"):
        simplex_grid(8, 0.01)


def _cv_setup(tmp_path, rng, n_cases=4):
    """Reference label maps; member 'good' is peaked on them, member 'bad' is random."""
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    cases = [f"c{i}" for i in range(n_cases)]
    good, bad = {}, {}
    for c in cases:
        ref = rng.integers(0, 3, size=SHAPE).astype(np.uint8)
        img = sitk.GetImageFromArray(ref)
        sitk.WriteImage(img, str(gt_dir / f"{c}.nii.gz"))
        onehot = np.eye(3)[ref].transpose(3, 0, 1, 2)
        good[c] = 0.55 * onehot + 0.45 * rng.dirichlet(np.ones(3), size=SHAPE).transpose(3, 0, 1, 2)
        bad[c] = rng.dirichlet(np.ones(3), size=SHAPE).transpose(3, 0, 1, 2)
    return str(gt_dir), cases, good, bad


def test_fit_prefers_the_better_member_and_ties_go_to_equal_weights(tmp_path):
    rng = np.random.default_rng(3)
    gt, cases, good, bad = _cv_setup(tmp_path, rng)
    # the good member's CV predictions live in a model folder's fold_*/validation, split over two folds
    model = tmp_path / "model"
    write_member(model / "fold_0" / "validation", {c: good[c] for c in cases[:2]})
    write_member(model / "fold_1" / "validation", {c: good[c] for c in cases[2:]})
    (model / "dataset.json").write_text(json.dumps(LABELS))
    (model / "plans.json").write_text(json.dumps(PLANS))
    assert sorted(collect_cv_files(str(model))) == cases
    noisy = write_member(tmp_path / "bad", bad)
    res = fit_ensemble_weights([str(model), noisy], gt, LABELS, PLANS, step=0.25)
    assert res.n_cases == 4 and res.weights[0] >= 0.75
    assert res.score == pytest.approx(1.0) and res.score > res.equal_weights_score
    assert set(res.per_class) == {"1", "2"}
    same = fit_ensemble_weights([noisy, noisy], gt, LABELS, PLANS, step=0.5)
    assert same.weights == [0.5, 0.5]
    res.save(str(tmp_path / "fit.json"))
    assert json.loads((tmp_path / "fit.json").read_text())["weights"] == res.weights


def test_fit_errors(tmp_path):
    rng = np.random.default_rng(4)
    gt, cases, good, bad = _cv_setup(tmp_path, rng, n_cases=2)
    a = write_member(tmp_path / "a", good)
    b = write_member(tmp_path / "b", {cases[0]: bad[cases[0]]})
    with pytest.raises(ValueError, match=r"does not cover the same cases.*missing \['c1'\]"):
        fit_ensemble_weights([a, b], gt, LABELS, PLANS)
    (Path(gt) / "c1.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"c1.nii.gz does not exist"):
        fit_ensemble_weights([a, a], gt, LABELS, PLANS)
    dup = tmp_path / "dup"
    write_member(dup / "fold_0" / "validation", {"c0": good["c0"]})
    write_member(dup / "fold_1" / "validation", {"c0": good["c0"]})
    with pytest.raises(ValueError, match="c0 is predicted in two folds"):
        collect_cv_files(str(dup))
    with pytest.raises(FileNotFoundError, match="no .npz predictions"):
        collect_cv_files(str(tmp_path / "dup" / "fold_0"))
