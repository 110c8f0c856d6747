"""Folder evaluation, summary statistics and the `evaluate` command."""
import argparse
import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ext.commands import evaluate as evaluate_command
from nnunet_ext.evaluation import (
    bootstrap_ci, case_metrics, cldice_score, dice_score, paired_bootstrap, summarize,
)
from nnunet_ext.evaluation.folder import (
    TOPOLOGY_METRICS, classes_from_dataset_json, evaluate_folders, write_topology_summary,
)

SPACING_XYZ = (0.8, 0.5, 2.0)  # SimpleITK order; arrays are z, y, x


def _write(path, arr):
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.SetSpacing(SPACING_XYZ)
    sitk.WriteImage(img, str(path))


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    pred_dir.mkdir()
    ref_dir.mkdir()
    arrays = {}
    for i in range(4):
        ref = np.zeros((6, 16, 14), np.uint8)
        ref[1:5, 3:12, 2:9] = 1
        ref[2:4, 5:9, 4:7] = 2
        ref[0, 0, :] = 3  # ignore label
        pred = ref.copy()
        pred[pred == 3] = 0
        pred[1:5, 3:12, 8 + i % 2] = 0  # shave a slab off class 1
        if i == 3:
            pred[pred == 2] = 1  # class 2 missing in the prediction
        pred[0, 0, :3] = 2  # predicted voxels under the ignore label do not count
        _write(ref_dir / f"case_{i}.nii.gz", ref)
        _write(pred_dir / f"case_{i}.nii.gz", pred)
        arrays[f"case_{i}"] = (pred, ref)
    dj = {"labels": {"background": 0, "liver": 1, "tumour": 2, "ignore": 3},
          "file_ending": ".nii.gz", "channel_names": {"0": "CT"}, "numTraining": 4}
    (tmp_path / "dataset.json").write_text(json.dumps(dj))
    return tmp_path, arrays


def test_evaluate_folders_values_and_outputs(dataset):
    root, arrays = dataset
    rows, summary = evaluate_folders(str(root / "pred"), str(root / "ref"),
                                     str(root / "dataset.json"), output_folder=str(root / "out"),
                                     n_resamples=500, progress=False)
    assert [(r["case"], r["class"]) for r in rows[:2]] == [("case_0", "liver"), ("case_0", "tumour")]
    spacing_zyx = SPACING_XYZ[::-1]
    for r in rows:
        pred, ref = arrays[r["case"]]
        valid = ref != 3
        lab = {"liver": 1, "tumour": 2}[r["class"]]
        p, g = (pred == lab) & valid, (ref == lab) & valid
        assert r["dice"] == pytest.approx(dice_score(p, g))
        direct = case_metrics(p, g, spacing_zyx, metrics=["hd95", "nsd", "volume_ref"])
        assert r["hd95"] == pytest.approx(direct["hd95"])
        assert r["volume_ref"] == pytest.approx(g.sum() * np.prod(SPACING_XYZ))
    worst = [r for r in rows if r["case"] == "case_3" and r["class"] == "tumour"][0]
    assert worst["status"] == "pred_empty" and worst["dice"] == 0.0
    with open(root / "out" / "metrics_per_case.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == 8 and float(csv_rows[0]["dice"]) == pytest.approx(rows[0]["dice"])
    saved = json.loads((root / "out" / "metrics_summary.json").read_text())
    tum = saved["classes"]["tumour"]
    assert tum["empty"]["pred_empty"] == 1 and tum["dice"]["n"] == 4
    assert tum["dice"]["mean"] == pytest.approx(np.mean([r["dice"] for r in rows if r["class"] == "tumour"]))
    assert tum["dice"]["ci_low"] <= tum["dice"]["mean"] <= tum["dice"]["ci_high"]
    assert set(saved["mean_over_classes"]) == set(saved["settings"]["metrics"])


def test_evaluate_folders_parallel_equals_serial(dataset):
    root, _ = dataset
    kw = dict(metrics=["dice", "cldice", "hd95"], n_resamples=200, progress=False)
    serial, _ = evaluate_folders(str(root / "pred"), str(root / "ref"), str(root / "dataset.json"),
                                 output_folder=str(root / "o1"), num_processes=1, **kw)
    parallel, _ = evaluate_folders(str(root / "pred"), str(root / "ref"), str(root / "dataset.json"),
                                   output_folder=str(root / "o2"), num_processes=2, **kw)
    assert serial == parallel


def test_evaluate_folders_skeleton_status_and_robust_option(tmp_path):
    # case a: the predicted vessel is 4 voxels thick, its scikit-image skeleton vanishes
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    arrays = {}
    for case, width in (("a", 4), ("b", 3)):
        ref = np.zeros((10, 10, 24), np.uint8)
        ref[3:6, 3:6, 2:22] = 1
        pred = np.zeros_like(ref)
        pred[3:3 + width, 3:3 + width, 4:20] = 1
        _write(tmp_path / "ref" / f"{case}.nii.gz", ref)
        _write(tmp_path / "pred" / f"{case}.nii.gz", pred)
        arrays[case] = (pred.astype(bool), ref.astype(bool))
    (tmp_path / "dataset.json").write_text(json.dumps(
        {"labels": {"background": 0, "vessel": 1}, "file_ending": ".nii.gz"}))
    args = (str(tmp_path / "pred"), str(tmp_path / "ref"), str(tmp_path / "dataset.json"))
    kw = dict(metrics=["dice", "cldice"], n_resamples=100, progress=False)
    rows, summary = evaluate_folders(*args, output_folder=str(tmp_path / "s"), **kw)
    robust, rsummary = evaluate_folders(*args, output_folder=str(tmp_path / "r"),
                                        skeleton="robust", **kw)
    with open(tmp_path / "s" / "metrics_per_case.csv") as f:
        header = next(csv.reader(f))
    assert "skeleton_status" in header
    assert [r["skeleton_status"] for r in rows] == ["pred_skeleton_empty", "ok"]
    assert summary["classes"]["vessel"]["skeleton_empty"]["pred_skeleton_empty"] == 1
    assert [r["skeleton_status"] for r in robust] == ["ok", "ok"]
    assert rsummary["settings"]["skeleton"] == "robust"
    for r, rr in zip(rows, robust):
        p, g = arrays[r["case"]]
        assert r["cldice"] == pytest.approx(cldice_score(p, g))
        assert rr["cldice"] == pytest.approx(cldice_score(p, g, skeleton="robust"))
    assert robust[0]["cldice"] != rows[0]["cldice"] and robust[1]["cldice"] == rows[1]["cldice"]
    with pytest.raises(ValueError, match="skeleton"):
        evaluate_folders(*args, skeleton="nope", **kw)


def test_evaluate_errors_name_the_problem(dataset):
    root, _ = dataset
    (root / "pred" / "case_2.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="case_2.nii.gz"):
        evaluate_folders(str(root / "pred"), str(root / "ref"), str(root / "dataset.json"),
                         progress=False)
    (root / "bad.json").write_text(json.dumps({"labels": {"background": 0, "a": 1}}))
    with pytest.raises(KeyError, match="file_ending"):
        evaluate_folders(str(root / "pred"), str(root / "ref"), str(root / "bad.json"))


def test_regions_from_dataset_json():
    dj = {"labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3],
                     "enhancing tumor": 3}, "regions_class_order": [1, 2, 3]}
    assert classes_from_dataset_json(dj) == [("whole tumor", (1, 2, 3)),
                                             ("tumor core", (2, 3)), ("enhancing tumor", (3,))]


def test_cli_registration_and_run(dataset, capsys):
    root, _ = dataset
    parser = argparse.ArgumentParser()
    evaluate_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["evaluate", str(root / "pred"), str(root / "ref"), "-dj",
                              str(root / "dataset.json"), "--metrics", "dice", "nsd",
                              "-o", str(root / "cli"), "--bootstrap", "100"])
    assert args.func(args) == 0
    assert (root / "cli" / "metrics_summary.json").is_file()
    assert "liver" in capsys.readouterr().out
    args = parser.parse_args(["evaluate", str(root / "pred"), str(root / "ref"), "-dj",
                              str(root / "dataset.json"), "--metrics", "cldice", "--skeleton", "robust",
                              "-o", str(root / "cli_robust"), "--bootstrap", "100"])
    assert args.func(args) == 0
    summary = json.loads((root / "cli_robust" / "metrics_summary.json").read_text())
    assert summary["settings"]["skeleton"] == "robust"
    capsys.readouterr()
    args = parser.parse_args(["evaluate", str(root / "nope"), str(root / "ref"), "-dj",
                              str(root / "dataset.json")])
    assert args.func(args) == 1
    assert "nope" in capsys.readouterr().err


def test_bootstrap_statistics():
    rng = np.random.default_rng(0)
    v = rng.normal(0.8, 0.05, 200)
    lo, hi = bootstrap_ci(v, n_resamples=2000)
    se = v.std(ddof=1) / np.sqrt(v.size)
    assert lo < v.mean() < hi
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.15)
    s = summarize([1.0, 2.0, 3.0, 10.0], n_resamples=500)
    assert (s["mean"], s["median"], s["n"]) == (4.0, 2.5, 4)
    assert s["std"] == pytest.approx(np.std([1, 2, 3, 10], ddof=1))
    r = paired_bootstrap(v + 0.01, v, n_resamples=500)
    assert r["mean_diff"] == pytest.approx(0.01) and r["ci_low"] == pytest.approx(0.01)
    assert r["p_value"] == 0.0
    noisy = paired_bootstrap(v + rng.normal(0, 0.05, 200), v, n_resamples=1000)
    assert noisy["ci_low"] < 0 < noisy["ci_high"] and noisy["p_value"] > 0.05
    with pytest.raises(ValueError, match="NaN"):
        summarize([1.0, float("nan")])
    with pytest.raises(ValueError, match="same number"):
        paired_bootstrap([1.0, 2.0], [1.0])


def test_write_topology_summary_for_one_fold(dataset):
    root, arrays = dataset
    val = root / "fold_0" / "validation"
    val.mkdir(parents=True)
    for case in ("case_1", "case_3"):  # this fold's cases; the reference folder holds all four
        (val / f"{case}.nii.gz").write_bytes((root / "pred" / f"{case}.nii.gz").read_bytes())
    (val / "summary.json").write_text("{}")  # written by nnU-Net, left alone
    out = write_topology_summary(str(val), str(root / "ref"), str(root / "dataset.json"),
                                 n_resamples=200)
    saved = json.loads((val / "summary_topology.json").read_text())
    assert saved == json.loads(json.dumps(out))
    assert (val / "summary.json").read_text() == "{}"
    assert not (val / "metrics_per_case.csv").exists()
    cases = [e["prediction_file"].split("/")[-1] for e in saved["metric_per_case"]]
    assert cases == ["case_1.nii.gz", "case_3.nii.gz"]
    assert set(saved["mean"]) == {"liver", "tumour"}
    assert set(saved["foreground_mean"]) == set(TOPOLOGY_METRICS)
    pred, ref = arrays["case_3"]
    valid = ref != 3
    expect = cldice_score((pred == 1) & valid, (ref == 1) & valid)
    liver = saved["metric_per_case"][1]["metrics"]["liver"]
    assert liver["cldice"] == pytest.approx(expect) and liver["status"] == "ok"
    assert saved["metric_per_case"][1]["metrics"]["tumour"]["status"] == "pred_empty"
    mean_dice = np.mean([e["metrics"]["liver"]["dice"] for e in saved["metric_per_case"]])
    assert saved["mean"]["liver"]["dice"] == pytest.approx(mean_dice)
    assert saved["statistics"]["classes"]["liver"]["dice"]["n"] == 2
    # a prediction without a reference is named
    (val / "case_9.nii.gz").write_bytes((val / "case_1.nii.gz").read_bytes())
    with pytest.raises(FileNotFoundError, match="case_9.nii.gz"):
        write_topology_summary(str(val), str(root / "ref"), str(root / "dataset.json"))
