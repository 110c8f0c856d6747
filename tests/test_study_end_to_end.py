"""`nnunet-ext study run --executor local` end to end on a tiny synthetic dataset: 2 trainers × 1 fold at a
smoke budget (each nnUNetv2_train costs about a minute of start-up and final validation on 2 cores) → find_best_configuration → post-processing → test prediction → evaluate → report; then a
second run after losing some outputs redoes only those, never a training."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_study_runs_end_to_end_and_resumes_without_retraining(nnunet_env, preprocessed_dataset, tmp_path):
    dataset = preprocessed_dataset("labels")
    study = tmp_path / "tiny.json"
    study.write_text(json.dumps({
        "dataset": int(dataset.name[len("Dataset"):len("Dataset") + 3]),
        "trainers": ["nnUNetTrainer", "TopoTrainer"], "folds": [0], "device": "cpu",
        "postprocessing": {"objective": "dice"},
        "test": {"images": str(dataset / "imagesTs"), "labels": str(dataset / "labelsTs"), "tta": False},
        "report": {"baseline": "nnUNetTrainer", "metrics": ["dice", "cldice", "betti_0_error"], "bootstrap": 200},
        "resources": {"default": {"cpus": 1}},
    }))
    command = [sys.executable, "-m", "nnunet_ext.cli", "study", "run", str(study), "--budget", "1x3",
               "--workdir", str(tmp_path / "work"), "--cpus", "1"]
    started = time.perf_counter()
    first = subprocess.run(command, env=nnunet_env, capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - started
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    print(f"study run: {elapsed:.0f} s")
    results = Path(nnunet_env["nnUNet_results"]) / dataset.name
    finals = sorted(results.glob("*_1epoch_3iters__nnUNetPlans__3d_fullres/fold_*/checkpoint_final.pth"))
    assert len(finals) == 2
    info = json.loads((results / "inference_information.json").read_text())
    assert {"nnUNetTrainer_1epoch_3iters__nnUNetPlans__3d_fullres",
            "TopoTrainer_1epoch_3iters__nnUNetPlans__3d_fullres"} <= set(info["all_results"])
    work = tmp_path / "work"
    report = (work / "report" / "report.md").read_text()
    assert "TopoTrainer_1epoch_3iters @ final" in report and "nnUNetTrainer_1epoch_3iters @ final (baseline)" in report
    assert "Paired bootstrap tests against" in report and "## Test set" in report
    table = json.loads((work / "report" / "study_report.json").read_text())
    rows = table["validation"]["table"]["vessel"] if "vessel" in table["validation"]["table"] else \
        next(iter(table["validation"]["table"].values()))
    assert {r["method"] for r in rows} == {"nnUNetTrainer_1epoch_3iters @ final", "TopoTrainer_1epoch_3iters @ final"}
    assert rows[0]["n"] == 1  # fold 0's validation case (5 training cases in 5 splits)
    assert list((work / "report" / "validation").glob("*.png"))
    for name in ("nnUNetTrainer_1epoch_3iters__3d_fullres", "TopoTrainer_1epoch_3iters__3d_fullres"):
        assert len(list((work / "test" / name / "postprocessed").glob("*.nii.gz"))) == 2
        assert (work / "test" / name / "evaluation" / "metrics_summary.json").is_file()

    # lose the post-processing of one model and the report: the next run redoes those, no training
    stamps = {p: p.stat().st_mtime for p in finals}
    (work / "postprocessing" / "TopoTrainer_1epoch_3iters__3d_fullres" / "pipeline.json").unlink()
    (work / "report" / "report.md").unlink()
    second = subprocess.run(command, env=nnunet_env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "start    train/" not in second.stdout + second.stderr
    assert "postprocess/TopoTrainer_1epoch_3iters/3d_fullres" in second.stdout + second.stderr
    assert {p: p.stat().st_mtime for p in finals} == stamps
    assert (work / "report" / "report.md").is_file()
    status = subprocess.run(command[:4] + ["status"] + command[5:-2], env=nnunet_env, capture_output=True, text=True)
    assert status.returncode == 0 and "failed" not in status.stdout.splitlines()[-1]
    assert status.stdout.splitlines()[-1].endswith("done") or "unavailable" in status.stdout.splitlines()[-1]
