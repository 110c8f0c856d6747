"""`compare`: loading per-case CSVs, statistics with known answers, the report, plots and the
nnU-Net results-folder route."""
import argparse
import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_ext.commands import evaluate as evaluate_command
from nnunet_ext.evaluation.compare import (
    compare_results, load_result, read_metrics_csv, result_names, size_terciles,
    write_comparison,
)

N_CASES = 12
COLUMNS = ["case", "class", "labels", "status", "dice", "cldice", "hd95", "volume_ref"]


def _rows(dice_offset, hd95_offset, rng_seed=0, classes=("vessel",)):
    rng = np.random.default_rng(rng_seed)
    base = rng.uniform(0.5, 0.8, N_CASES)
    rows = []
    for i in range(N_CASES):
        for c in classes:
            rows.append({"case": f"case_{i:02d}", "class": c, "labels": "1", "status": "ok",
                         "dice": base[i] + dice_offset, "cldice": base[i] + dice_offset / 2,
                         "hd95": 5.0 - base[i] + hd95_offset, "volume_ref": float(100 * (i + 1))})
    return rows


def _write_csv(path, rows, columns=COLUMNS):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in columns})
    return path


@pytest.fixture
def three_results(tmp_path):
    # A better than B by exactly 0.1 Dice and 1.0 HD95 on every case; C identical to B
    paths = {
        "A": _write_csv(tmp_path / "TrainerA" / "metrics_per_case.csv", _rows(0.1, -1.0)),
        "B": _write_csv(tmp_path / "TrainerB" / "metrics_per_case.csv", _rows(0.0, 0.0)),
        "C": _write_csv(tmp_path / "TrainerC" / "metrics_per_case.csv", _rows(0.0, 0.0)),
    }
    return tmp_path, paths


def test_known_ranking_and_paired_differences(three_results):
    _, paths = three_results
    results = {n: read_metrics_csv(str(p)) for n, p in paths.items()}
    cmp = compare_results(results, n_resamples=2000)
    assert cmp["metrics"] == ["dice", "cldice", "hd95"]  # volumes are not compared
    assert cmp["n_cases"] == {"vessel": N_CASES}
    rank = cmp["ranking"]["vessel"]
    assert rank["dice"] == {"A": 1.0, "B": 2.5, "C": 2.5}  # tie shares the average rank
    assert rank["hd95"] == {"A": 1.0, "B": 2.5, "C": 2.5}  # lower is better
    assert cmp["mean_rank"]["vessel"]["A"] == 1.0
    assert cmp["overall_mean_rank"] == {"A": 1.0, "B": 2.5, "C": 2.5}
    tests = {(t["a"], t["b"]): t for t in cmp["paired"]["vessel"]["dice"]}
    ab = tests[("A", "B")]
    assert ab["mean_diff"] == pytest.approx(0.1)
    assert ab["ci_low"] == pytest.approx(0.1) and ab["ci_high"] == pytest.approx(0.1)
    assert ab["better"] == "A" and ab["p_value"] == 0.0
    bc = tests[("B", "C")]
    assert bc["mean_diff"] == 0.0 and bc["better"] is None and bc["p_value"] == 1.0
    hd = {(t["a"], t["b"]): t for t in cmp["paired"]["vessel"]["hd95"]}
    assert hd[("A", "B")]["mean_diff"] == pytest.approx(-1.0)
    assert hd[("A", "B")]["better"] == "A"  # lower HD95 wins
    s = cmp["summary"]["vessel"]["dice"]
    assert s["A"]["mean"] == pytest.approx(s["B"]["mean"] + 0.1)
    assert s["A"]["ci_low"] <= s["A"]["mean"] <= s["A"]["ci_high"]


def test_noisy_difference_detected_and_direction(tmp_path):
    # per-case differences ~ N(0.05, 0.02): A significantly better; reversed order gives B
    rng = np.random.default_rng(1)
    b = _rows(0.0, 0.0)
    a = [dict(r, dice=r["dice"] + rng.normal(0.05, 0.02)) for r in b]
    cmp = compare_results({"B": b, "A": a}, metrics=["dice"], n_resamples=2000)
    t = cmp["paired"]["vessel"]["dice"][0]
    assert (t["a"], t["b"]) == ("B", "A")
    assert t["ci_high"] < 0 and t["better"] == "A" and t["p_value"] < 0.01


def test_worst_cases_and_terciles(three_results):
    _, paths = three_results
    results = {n: read_metrics_csv(str(p)) for n, p in paths.items()}
    cmp = compare_results(results, n_worst=3, n_resamples=200)
    base = np.random.default_rng(0).uniform(0.5, 0.8, N_CASES)
    lowest = [f"case_{i:02d}" for i in np.argsort(base)[:3]]
    assert [k for k, _ in cmp["worst"]["vessel"]["dice"]["B"]] == lowest
    # HD95 = 5 - base: the worst (largest) HD95 belong to the same cases
    assert [k for k, _ in cmp["worst"]["vessel"]["hd95"]["B"]] == lowest
    terc = cmp["terciles"]["vessel"]
    assert [e["tercile"] for e in terc] == ["small", "medium", "large"]
    assert [e["n"] for e in terc] == [4, 4, 4]
    assert terc[0]["volume_min"] == 100.0 and terc[0]["volume_max"] == 400.0
    small_cases = range(4)  # volumes 100..400
    assert terc[0]["mean"]["dice"]["A"] == pytest.approx(np.mean(base[list(small_cases)]) + 0.1)


def test_size_terciles_split():
    assert size_terciles([3.0, 1.0, 2.0]).tolist() == [2, 0, 1]
    assert sorted(np.bincount(size_terciles(np.arange(10.0))).tolist()) == [3, 3, 4]


def test_only_common_cases_are_compared(tmp_path):
    a = _rows(0.1, 0.0)
    b = [r for r in _rows(0.0, 0.0) if r["case"] != "case_00"]
    cmp = compare_results({"A": a, "B": b}, metrics=["dice"], n_resamples=200)
    assert cmp["n_cases"]["vessel"] == N_CASES - 1
    assert cmp["dropped_rows"] == {"A": 1, "B": 0}
    with pytest.raises(ValueError, match="share no"):
        compare_results({"A": a, "B": [dict(r, case="other" + r["case"]) for r in b]})


def test_report_plots_and_cli(three_results, capsys):
    root, paths = three_results
    out = root / "report"
    parser = argparse.ArgumentParser()
    evaluate_command.register(parser.add_subparsers())
    args = parser.parse_args(["compare", str(paths["A"].parent), str(paths["B"].parent),
                              str(paths["C"]), "-o", str(out), "--bootstrap", "300",
                              "--worst", "2"])
    assert args.func(args) == 0
    assert "vessel: mean rank TrainerA 1.00" in capsys.readouterr().out
    report = (out / "report.md").read_text()
    assert "## Class `vessel` (12 cases)" in report
    assert "| dice ↑ | **" in report  # the best mean is bold
    assert "Paired bootstrap" in report and "| dice | TrainerA | TrainerB |" in report
    assert "By reference size" in report and "small (n=4" in report
    assert "Mean rank over all classes and metrics (1 = best): TrainerA 1.00" in report
    assert "| < 0.0067 | TrainerA |" in report  # p = 0 with 300 resamples
    for png in ("distributions_vessel.png", "dice_vs_cldice_vessel.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in report
    data = json.loads((out / "comparison.json").read_text())
    assert data["methods"] == ["TrainerA", "TrainerB", "TrainerC"]


def test_bad_inputs_name_the_problem(tmp_path, capsys):
    good = _rows(0.0, 0.0)
    bad = [dict(r) for r in good]
    bad[3]["dice"] = "abc"
    p = _write_csv(tmp_path / "bad.csv", bad)
    with pytest.raises(ValueError, match=r"bad.csv, line 5, column 'dice': 'abc'"):
        read_metrics_csv(str(p))
    bad[3]["dice"] = "nan"
    _write_csv(p, bad)
    with pytest.raises(ValueError, match="not finite"):
        read_metrics_csv(str(p))
    p2 = _write_csv(tmp_path / "nocase.csv", good, columns=["class", "dice"])
    with pytest.raises(ValueError, match="missing column"):
        read_metrics_csv(str(p2))
    dup = _write_csv(tmp_path / "dup.csv", good + good[:1])
    with pytest.raises(ValueError, match="appears twice"):
        read_metrics_csv(str(dup))
    with pytest.raises(FileNotFoundError, match="neither"):
        load_result(str(tmp_path / "does_not_exist"))
    ok = _write_csv(tmp_path / "ok" / "metrics_per_case.csv", good)
    with pytest.raises(ValueError, match="not in every result"):
        write_comparison([str(ok), str(ok.parent)], str(tmp_path / "o"), names=["x", "y"],
                         metrics=["nsd"])
    parser = argparse.ArgumentParser()
    evaluate_command.register(parser.add_subparsers())
    args = parser.parse_args(["compare", str(p), "-o", str(tmp_path / "o2")])
    assert args.func(args) == 1
    assert "not finite" in capsys.readouterr().err


def test_result_names_are_unique():
    assert result_names(["x/A/metrics_per_case.csv", "x/B"]) == ["A", "B"]
    assert result_names(["r/A/fold_0/validation", "r/B/fold_0/validation"]) == [
        "A/fold_0/validation", "B/fold_0/validation"]


def _write_image(path, arr, spacing_xyz=(0.8, 0.8, 2.0)):
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.SetSpacing(spacing_xyz)
    sitk.WriteImage(img, str(path))


def test_nnunet_results_folder(tmp_path, monkeypatch):
    """Two trainers with two folds each, evaluated against gt_segmentations."""
    dataset = "Dataset901_Toy"
    gt = tmp_path / "preprocessed" / dataset / "gt_segmentations"
    gt.mkdir(parents=True)
    dj = {"labels": {"background": 0, "vessel": 1}, "file_ending": ".nii.gz",
          "channel_names": {"0": "CT"}, "numTraining": 4}
    refs = {}
    for i in range(4):
        ref = np.zeros((5, 12, 12), np.uint8)
        ref[1:4, 2:10, 3 + i % 2:8] = 1
        refs[i] = ref
        _write_image(gt / f"case_{i}.nii.gz", ref)
    folders = []
    for trainer, shave in (("GoodTrainer", 0), ("BadTrainer", 2)):
        res = tmp_path / "results" / dataset / f"{trainer}__nnUNetPlans__3d_fullres"
        for fold, cases in ((0, (0, 1)), (1, (2, 3))):
            val = res / f"fold_{fold}" / "validation"
            val.mkdir(parents=True)
            for i in cases:
                pred = refs[i].copy()
                if shave:
                    pred[:, :, 3:3 + shave] = 0
                _write_image(val / f"case_{i}.nii.gz", pred)
        (res / "dataset.json").write_text(json.dumps(dj))
        folders.append(res)
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    with pytest.raises(KeyError, match="nnUNet_preprocessed"):
        load_result(str(folders[0]))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    fast = dict(progress=False, n_resamples=100, metrics=["dice", "hd95", "volume_ref"])
    rows = load_result(str(folders[0]), **fast)
    assert sorted((r["fold"], r["case"]) for r in rows) == [
        ("0", "case_0"), ("0", "case_1"), ("1", "case_2"), ("1", "case_3")]
    assert all(r["dice"] == 1.0 for r in rows)
    assert (folders[0] / "fold_1" / "validation" / "metrics_per_case.csv").is_file()
    load_result(str(folders[1]), **fast)  # evaluated once here, reused by the comparison
    out = tmp_path / "cmp"
    cmp = write_comparison([str(f) for f in folders], str(out), metrics=["dice", "hd95"],
                           n_resamples=200, plots=False, progress=False)
    assert cmp["methods"] == ["GoodTrainer__nnUNetPlans__3d_fullres",
                              "BadTrainer__nnUNetPlans__3d_fullres"]
    assert cmp["ranking"]["vessel"]["dice"]["GoodTrainer__nnUNetPlans__3d_fullres"] == 1.0
    t = cmp["paired"]["vessel"]["dice"][0]
    assert t["mean_diff"] > 0 and t["better"] == "GoodTrainer__nnUNetPlans__3d_fullres"
    assert (out / "report.md").is_file()
    # a prediction without a reference is named
    (folders[1] / "fold_1" / "validation" / "case_9.nii.gz").write_bytes(
        (folders[1] / "fold_1" / "validation" / "case_2.nii.gz").read_bytes())
    with pytest.raises(FileNotFoundError, match="case_9.nii.gz"):
        load_result(str(folders[1]), recompute=True, **fast)
