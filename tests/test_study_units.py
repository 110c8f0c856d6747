"""Studies without training: the study file's errors, budgets, the job graph, state from fake nnU-Net
folders, failure isolation with stand-in commands, the status table, and SLURM submissions through
submitit with a stand-in ``sbatch`` (no cluster needed)."""
from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from nnunet_ext.study.graph import Job, dependents, topological_order
from nnunet_ext.study.schema import StudyError, resolve_study

DATASET = "Dataset990_Fake"


def _minimal(**extra):
    return {"dataset": 990, "trainers": ["nnUNetTrainer", "TopoTrainer"], "folds": [0, 1], "device": "cpu", **extra}


def _env(tmp_path: Path, n_splits: int = 3) -> dict:
    env = dict(os.environ)
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / name).mkdir(exist_ok=True)
        env[name] = str(tmp_path / name)
    pre = tmp_path / "nnUNet_preprocessed" / DATASET
    (pre / "nnUNetPlans_3d_fullres").mkdir(parents=True, exist_ok=True)
    (pre / "nnUNetPlans.json").write_text(json.dumps(
        {"configurations": {"3d_fullres": {"data_identifier": "nnUNetPlans_3d_fullres"}, "2d": {"data_identifier": "nnUNetPlans_2d"}}}))
    (pre / "nnUNetPlans_2d").mkdir(exist_ok=True)
    (pre / "dataset.json").write_text(json.dumps({"file_ending": ".nii.gz", "labels": {"background": 0, "vessel": 1}}))
    (pre / "splits_final.json").write_text(json.dumps([{"train": [], "val": []}] * n_splits))
    env.pop("nnunet_ext_recipes", None)
    return env


def _write_study(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "study.json"
    path.write_text(json.dumps(raw))
    return path


# --- the study file ---------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, key", [
    (_minimal(epochs=3), "epochs"),
    ({"trainers": ["TopoTrainer"]}, "dataset"),
    (_minimal(folds=[0, 0]), "folds[1]"),
    (_minimal(folds=[-1]), "folds[0]"),
    (_minimal(checkpoints=["final", "bestest dice"]), "checkpoints[1]"),
    (_minimal(ensembles=[{"name": "e", "members": ["TopoTrainer/3d_fullres", "Other/3d_fullres"]}]), "ensembles[0].members[1]"),
    (_minimal(ensembles=[{"name": "e", "members": ["TopoTrainer/3d_fullres"]}]), "ensembles[0].members"),
    (_minimal(ensembles=[{"name": "e", "members": ["TopoTrainer/3d_fullres", "nnUNetTrainer/3d_fullres"],
                          "weights": [1]}]), "ensembles[0].weights"),
    (_minimal(report={"baseline": "SkelRecallTrainer"}), "report.baseline"),
    (_minimal(report={"metrics": ["dice", "sharpness"]}), "report.metrics[1]"),
    (_minimal(resources={"train": {"gpus": 1}}), "resources.train.gpus"),
    (_minimal(resources={"train": {"cpus": 0}}), "resources.train.cpus"),
    (_minimal(resources={"train": {"time": "soon"}}), "resources.train.time"),
    (_minimal(resources={"trian": {}}), "resources.trian"),
    (_minimal(postprocessing={"objective": "dice=abc"}), "postprocessing.objective"),
    (_minimal(slurm={"additional_parameters": {"dependency": "x"}}), "slurm.additional_parameters.dependency"),
    (_minimal(trainers=["Bad__Name"]), "trainers[0]"),
    (_minimal(trainers=[], recipes=[]), "trainers"),
    (_minimal(test={"labels": "x"}), "test.images"),
    (_minimal(seed=-1), "seed"),
    (_minimal(seed="7"), "seed"),
])
def test_study_file_errors_name_the_key(raw, key):
    with pytest.raises(StudyError) as error:
        resolve_study(raw, "s.json", default_name="s")
    assert error.value.key == key
    assert str(error.value).startswith(f"s.json: {key}: ")


def test_study_defaults_and_recipes_become_trainer_names(tmp_path):
    study = resolve_study({"dataset": 5, "recipes": ["dice_ce"], "trainers": ["TopoTrainer"],
                           "resources": {"train": {"time": "1-02:30:00"}}, "test": {"images": "imgs"}},
                          "s.json", base=tmp_path, default_name="s")
    assert study.trainers == ("TopoTrainer", "Recipe_dice_ce")
    assert study.folds == (0, 1, 2, 3, 4) and study.checkpoints == ("final",) and study.configurations == ("3d_fullres",)
    assert study.resources_of("train") == {"gpus": 1, "cpus": 4, "memory_gb": 16.0, "time": 26 * 60 + 30}
    assert study.resources_of("report")["gpus"] == 0
    assert study.test["images"] == str(tmp_path / "imgs") and study.test["tta"] is True
    assert study.report["baseline"] == "TopoTrainer"
    assert resolve_study({**_minimal(), "report": {"baseline": "dice_ce"}, "recipes": ["dice_ce"]},
                         "s", default_name="s").report["baseline"] == "Recipe_dice_ce"


def test_built_in_studies_are_valid():
    from nnunet_ext.study.runner import EXAMPLES_FOLDER
    from nnunet_ext.study.schema import load_study

    minivess = load_study(EXAMPLES_FOLDER / "minivess_losses.json")
    assert minivess.trainers == ("Recipe_dice_ce", "Recipe_cbdice", "Recipe_dice_ce_cldice", "Recipe_cbdice_cldice")
    assert len(minivess.folds) == 3 and len(minivess.checkpoints) == 6
    brats = load_study(EXAMPLES_FOLDER / "brats_ensemble.json")
    assert len(brats.folds) == 5 and len(brats.configurations) == 2 and len(brats.ensembles) == 2


def test_a_bad_file_is_one_line_naming_the_file(tmp_path):
    from nnunet_ext.study.schema import load_study

    bad = tmp_path / "bad.json"
    bad.write_text("{\"dataset\": 5,}")
    with pytest.raises(StudyError, match=r"bad\.json: not valid JSON"):
        load_study(bad)
    bad.write_bytes("{}".encode("utf-16"))
    with pytest.raises(StudyError, match="UTF-16"):
        load_study(bad)


# --- budgets ----------------------------------------------------------------------------------------

def test_budget_names_and_time_compressed_recipes(tmp_path):
    from nnunet_ext.recipes import load_recipe
    from nnunet_ext.recipes.schema import resolve
    from nnunet_ext.study.budget import budget_trainer_name, parse_budget, scale_recipe, write_budget_recipes

    assert parse_budget("2x10") == (2, 10) and parse_budget("1") == (1, None)
    with pytest.raises(ValueError, match="--budget"):
        parse_budget("2epochs")
    assert budget_trainer_name("TopoTrainer", (1, 5)) == "TopoTrainer_1epoch_5iters"
    assert budget_trainer_name("Recipe_dice_ce", (2, None)) == "Recipe_dice_ce_2epochs"
    for name in ("dice_ce", "cbdice", "dice_ce_cldice", "cbdice_cldice", "brats_boundary", "vesuvius_focal_variance"):
        full = load_recipe(name)[0]
        short = resolve(scale_recipe(full, 2, 10), f"{name}_2epochs_10iters", "test")
        assert short["epochs"] == 2 and short["iterations_per_epoch"] == 10
        assert set(short["terms"]) == set(full["terms"]) and short["checkpoints"]["metrics"] == full["checkpoints"]["metrics"]
    # a ramp over 30–60 % of 1000 epochs stays a ramp over 30–60 % of 10
    boundary = scale_recipe(load_recipe("brats_boundary")[0], 10, None)["terms"]
    ramp = next(t["weight"] for t in boundary.values() if t["weight"]["type"] == "linear")
    assert (ramp["start_epoch"], ramp["end_epoch"]) == (3, 6)
    files = write_budget_recipes(["dice_ce"], (2, 10), tmp_path)
    before = files["dice_ce"].read_text()
    write_budget_recipes(["dice_ce"], (2, 10), tmp_path)  # the same content again: kept
    assert files["dice_ce"].read_text() == before
    files["dice_ce"].write_text("{}")
    with pytest.raises(FileExistsError):  # never overwritten
        write_budget_recipes(["dice_ce"], (2, 10), tmp_path)


# --- the graph --------------------------------------------------------------------------------------

def test_graph_dependencies(tmp_path):
    from nnunet_ext.study.runner import prepare

    env = _env(tmp_path)
    images = tmp_path / "imagesTs"
    labels = tmp_path / "labelsTs"
    images.mkdir(), labels.mkdir()
    for case in ("a", "b"):
        (images / f"{case}_0000.nii.gz").write_text("")
        (labels / f"{case}.nii.gz").write_text("")
    raw = _minimal(configurations=["3d_fullres", "2d"], checkpoints=["final", "best_dice"],
                   ensembles=[{"name": "mix", "members": ["TopoTrainer/3d_fullres", "TopoTrainer/2d"]}],
                   test={"images": "imagesTs", "labels": "labelsTs", "uncertainty": ["entropy"]},
                   slurm={"stagger_minutes": 7})
    prepared = prepare(str(_write_study(tmp_path, raw)), env=env)
    jobs = {j.id: j for j in prepared.jobs}
    assert "plan" not in jobs  # preprocessed already
    trains = [j for j in jobs if j.startswith("train/")]
    assert len(trains) == 2 * 2 * 2
    first, second = jobs["train/TopoTrainer/2d/fold_0"], jobs["train/TopoTrainer/2d/fold_1"]
    assert first.start_after is None and second.start_after == ("train/TopoTrainer/2d/fold_0", 7)
    assert "--npz" in first.argv  # ensembles need the CV probabilities
    assert first.argv[:4] == ("nnUNetv2_train", "990", "2d", "0") and "-device" in first.argv
    assert set(jobs["best"].deps) == set(trains) and "--disable_ensembling" not in jobs["best"].argv
    assert set(jobs["postprocess/TopoTrainer/2d"].deps) == {"train/TopoTrainer/2d/fold_0", "train/TopoTrainer/2d/fold_1"}
    assert jobs["ensemble/mix"].deps == ("train/TopoTrainer/3d_fullres/fold_0", "train/TopoTrainer/3d_fullres/fold_1",
                                         "train/TopoTrainer/2d/fold_0", "train/TopoTrainer/2d/fold_1")
    assert set(jobs["apply/TopoTrainer/2d"].deps) == {"predict/TopoTrainer/2d", "postprocess/TopoTrainer/2d"}
    assert "--save_probabilities" in jobs["predict/TopoTrainer/2d"].argv
    assert "--save_probabilities" not in jobs["predict/nnUNetTrainer/2d"].argv
    assert "entropy" in jobs["predict/TopoTrainer/2d"].argv
    assert set(jobs["ensemble_test/mix"].deps) == {"predict/TopoTrainer/3d_fullres", "predict/TopoTrainer/2d", "ensemble/mix"}
    assert jobs["evaluate/TopoTrainer__2d"].deps == ("apply/TopoTrainer/2d",)
    assert jobs["evaluate/ensemble_mix"].deps == ("ensemble_test/mix",)
    assert len(jobs["predict/TopoTrainer/2d"].outputs) == 2
    assert jobs["report"].after_any and set(jobs["report"].deps) == set(jobs) - {"report"}
    validate = jobs["validate/TopoTrainer/2d/best_dice/fold_1"]
    assert validate.deps == ("train/TopoTrainer/2d/fold_1",)
    assert validate.outputs[0].endswith(os.path.join("fold_1", "validation_checkpoint_best_dice", "summary.json"))
    assert validate.argv[:2] == ("nnunet-ext", "validate") and "checkpoint_best_dice.pth" in validate.argv
    order = [j.id for j in prepared.jobs]
    assert all(order.index(d) < order.index(j.id) for j in prepared.jobs for d in j.deps)
    assert dependents(prepared.jobs, "train/TopoTrainer/2d/fold_0") >= {"best", "ensemble/mix", "predict/TopoTrainer/2d",
                                                                       "evaluate/ensemble_mix"}
    assert "report" not in dependents(prepared.jobs, "train/TopoTrainer/2d/fold_0")


def test_a_seeded_study_trains_through_the_seeded_entry_point_with_the_same_arguments(tmp_path):
    from nnunet_ext.study.runner import prepare

    env = _env(tmp_path)
    plain = {j.id: j for j in prepare(str(_write_study(tmp_path, _minimal())), env=env).jobs}
    seeded = {j.id: j for j in prepare(str(_write_study(tmp_path, _minimal(seed=3))), env=env).jobs}
    assert plain.keys() == seeded.keys()
    for job_id, job in plain.items():
        if job.kind != "train":
            assert seeded[job_id].argv == job.argv
            continue
        assert job.argv[0] == "nnUNetv2_train"
        assert seeded[job_id].argv == ("nnunet-ext", "train", "--seed", "3", *job.argv[1:])
        assert seeded[job_id].continue_if == job.continue_if  # --c / --val are appended the same way


def test_the_train_command_seeds_then_hands_nnunet_its_arguments(monkeypatch):
    import random

    import numpy as np
    import nnunetv2.run.run_training as run_training
    import torch

    from nnunet_ext.cli import main

    seen = {}

    def fake_entry():
        seen["argv"] = list(sys.argv)
        seen["draws"] = (random.random(), float(np.random.rand()), float(torch.rand(1)))

    monkeypatch.setattr(run_training, "run_training_entry", fake_entry)
    assert main(["train", "--seed", "5", "990", "3d_fullres", "0", "-tr", "TopoTrainer", "--c"]) == 0
    first = seen.pop("draws")
    assert seen["argv"] == ["nnUNetv2_train", "990", "3d_fullres", "0", "-tr", "TopoTrainer", "--c"]
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    assert main(["train", "--seed", "5", "990", "3d_fullres", "0"]) == 0
    assert seen["draws"] == first  # the same seed gives the same draws whatever came before
    assert main(["train", "--seed", "6", "990", "3d_fullres", "0"]) == 0
    assert seen["draws"] != first
    assert main(["train", "--seed", "5", "990"]) == 1  # too few arguments: a one-line error


def test_only_training_jobs_get_zero_augmentation_workers():
    from nnunet_ext.study.execution import job_environment

    # nnU-Net's planner calls torch.set_num_threads(nnUNet_n_proc_DA): 0 makes it fail
    plan = Job("plan", "plan", ("nnUNetv2_plan_and_preprocess", "-d", "1"), resources={"cpus": 1, "gpus": 0})
    train = Job("train/T/3d_fullres/fold_0", "train", ("nnUNetv2_train", "1", "3d_fullres", "0"),
                resources={"cpus": 1, "gpus": 0})
    assert job_environment({}, plan)["nnUNet_n_proc_DA"] == "1"
    assert job_environment({}, plan, cpus=6)["nnUNet_n_proc_DA"] == "6"
    assert job_environment({}, train)["nnUNet_n_proc_DA"] == "0"
    assert job_environment({}, train, cpus=6)["nnUNet_n_proc_DA"] == "5"


def test_bad_input_is_refused_before_anything_runs(tmp_path):
    from nnunet_ext.study.runner import prepare

    env = _env(tmp_path)
    cases = [
        (_minimal(folds=[0, 3]), "folds[1]"),                      # outside the 3 splits
        (_minimal(trainers=["NoSuchTrainer"]), "trainers"),
        (_minimal(trainers=[], recipes=["no_such_recipe"]), "recipes"),
        (_minimal(configurations=["3d_lowres"]), "configurations"),
        ({**_minimal(), "dataset": 991}, "dataset"),
    ]
    for raw, key in cases:
        with pytest.raises(StudyError) as error:
            prepare(str(_write_study(tmp_path, raw)), env=env)
        assert error.value.key == key, raw
    # not preprocessed and no raw data
    (Path(env["nnUNet_preprocessed"]) / DATASET / "nnUNetPlans_3d_fullres").rmdir()
    with pytest.raises(StudyError, match="is not preprocessed"):
        prepare(str(_write_study(tmp_path, _minimal())), env=env)
    # with raw data the study plans first
    raw_folder = Path(env["nnUNet_raw"]) / DATASET
    raw_folder.mkdir()
    (raw_folder / "dataset.json").write_text("{}")
    prepared = prepare(str(_write_study(tmp_path, _minimal())), env=env)
    assert prepared.jobs[0].id == "plan" and all(j.deps == ("plan",) for j in prepared.jobs if j.kind == "train")


def test_budget_study_uses_its_own_trainers_folder_and_recipes(tmp_path):
    from nnunet_ext.study.runner import prepare

    env = _env(tmp_path)
    raw = {**_minimal(), "recipes": ["cbdice_cldice"], "report": {"baseline": "TopoTrainer"}}
    prepared = prepare(str(_write_study(tmp_path, raw)), budget=(1, 5), env=env)
    assert prepared.study.trainers == ("nnUNetTrainer_1epoch_5iters", "TopoTrainer_1epoch_5iters",
                                       "Recipe_cbdice_cldice_1epoch_5iters")
    assert prepared.study.report["baseline"] == "TopoTrainer_1epoch_5iters"
    assert prepared.ctx.workdir.endswith(os.path.join("studies", "study_1epoch_5iters"))
    recipe = Path(prepared.ctx.workdir) / "recipes" / "cbdice_cldice_1epoch_5iters.json"
    assert json.loads(recipe.read_text())["epochs"] == 1
    assert str(recipe.parent) in prepared.env["nnunet_ext_recipes"].split(os.pathsep)
    assert "--budget" in prepared.ctx.study_argv and prepared.jobs[-1].argv[:3] == ("nnunet-ext", "study", "report")


# --- state from nnU-Net's own files ------------------------------------------------------------------

def test_resumption_from_nnunet_files(tmp_path):
    from nnunet_ext.study.runner import prepare
    from nnunet_ext.study.state import job_statuses

    env = _env(tmp_path)
    prepared = prepare(str(_write_study(tmp_path, _minimal(trainers=["TopoTrainer"]))), env=env)
    jobs = {j.id: j for j in prepared.jobs}
    model = Path(env["nnUNet_results"]) / DATASET / "TopoTrainer__nnUNetPlans__3d_fullres"
    done, interrupted = model / "fold_0", model / "fold_1"
    (done / "validation").mkdir(parents=True)
    (done / "checkpoint_final.pth").write_text("")
    (done / "validation" / "summary.json").write_text("{}")
    interrupted.mkdir()
    (interrupted / "checkpoint_latest.pth").write_text("")
    statuses = job_statuses(prepared.jobs, prepared.ctx.workdir)
    assert statuses["train/TopoTrainer/3d_fullres/fold_0"].status == "done"
    assert statuses["train/TopoTrainer/3d_fullres/fold_1"].status == "ready"
    assert jobs["train/TopoTrainer/3d_fullres/fold_1"].command_now()[-1] == "--c"
    assert statuses["postprocess/TopoTrainer/3d_fullres"].status == "waiting"
    # training finished but its validation did not: only the validation runs
    (interrupted / "checkpoint_final.pth").write_text("")
    assert jobs["train/TopoTrainer/3d_fullres/fold_1"].command_now()[-1] == "--val"
    (interrupted / "validation").mkdir()
    (interrupted / "validation" / "summary.json").write_text("{}")
    statuses = job_statuses(prepared.jobs, prepared.ctx.workdir)
    assert statuses["postprocess/TopoTrainer/3d_fullres"].status == "ready"
    # post-processing done, then a fold is retrained: it is stale again
    pipeline = Path(jobs["postprocess/TopoTrainer/3d_fullres"].outputs[0])
    pipeline.parent.mkdir(parents=True)
    pipeline.write_text("{}")
    os.utime(pipeline, (1e9, 1e9))
    assert job_statuses(prepared.jobs, prepared.ctx.workdir)["postprocess/TopoTrainer/3d_fullres"].status == "ready"
    os.utime(pipeline, None)
    assert job_statuses(prepared.jobs, prepared.ctx.workdir)["postprocess/TopoTrainer/3d_fullres"].status == "done"
    # nnU-Net's find_best_configuration output of another study does not count
    best = Path(jobs["best"].outputs[0])
    best.write_text(json.dumps({"all_results": {"Other__nnUNetPlans__3d_fullres": 0.5}, "folds": [0, 1]}))
    assert job_statuses(prepared.jobs, prepared.ctx.workdir)["best"].status == "ready"
    best.write_text(json.dumps({"all_results": {"TopoTrainer__nnUNetPlans__3d_fullres": 0.5}, "folds": [0, 1]}))
    assert job_statuses(prepared.jobs, prepared.ctx.workdir)["best"].status == "done"


# --- failure isolation and the status table -------------------------------------------------------------

def _shell_job(job_id, script, tmp_path, deps=(), after_any=False):
    out = tmp_path / "out" / f"{job_id}.txt"
    return Job(job_id, "evaluate", ("sh", "-c", script.format(out=out)), deps=deps, outputs=(str(out),),
               resources={"cpus": 1, "gpus": 0}, after_any=after_any)


def test_a_failed_job_blocks_only_its_dependents(tmp_path, monkeypatch, capsys):
    from nnunet_ext.study import execution
    from nnunet_ext.study.local import LocalExecutor
    from nnunet_ext.study.runner import status_table

    monkeypatch.setattr(execution, "resolve_command", lambda argv: list(argv))
    (tmp_path / "out").mkdir()
    jobs = topological_order([
        _shell_job("a", "echo preparing; echo 'RuntimeError: CUDA out of memory' >&2; exit 3", tmp_path),
        _shell_job("b", "echo b > {out}", tmp_path, deps=("a",)),
        _shell_job("c", "echo c > {out}", tmp_path),
        _shell_job("d", "echo d > {out}", tmp_path, deps=("c",)),
        _shell_job("report", "echo r > {out}", tmp_path, deps=("a", "b", "c", "d"), after_any=True),
    ])
    lines = []
    statuses = LocalExecutor(str(tmp_path / "work"), dict(os.environ), poll_seconds=0.05, echo=lines.append,
                             progress=False).run(jobs)
    assert {k: s.status for k, s in statuses.items()} == {"a": "failed", "b": "blocked", "c": "done", "d": "done",
                                                         "report": "done"}
    assert "CUDA out of memory" in capsys.readouterr().out  # the failure came with its log's last lines
    table = status_table(statuses, tail_lines=3)
    assert "failed" in table and str(tmp_path / "work" / "logs" / "a.log") in table
    assert "needs a (failed)" in table and "CUDA out of memory" in table
    assert table.splitlines()[-1] == "3 done, 1 failed, 1 blocked"
    # a second run retries the failure only; nothing done runs again
    done_time = os.stat(tmp_path / "out" / "c.txt").st_mtime
    from nnunet_ext.study.runner import PreparedStudy, run_study

    fixed = [Job(j.id, j.kind, ("sh", "-c", f"echo a > {tmp_path}/out/a.txt"), j.deps, j.outputs, j.resources)
             if j.id == "a" else j for j in jobs]
    study = resolve_study(_minimal(), "s", default_name="s")
    prepared = PreparedStudy(study, None, dict(os.environ), fixed)
    prepared.ctx = type("Ctx", (), {"workdir": str(tmp_path / "work")})()
    statuses = run_study(prepared, progress=False, echo=lines.append)
    assert all(s.status == "done" for s in statuses.values())
    assert os.stat(tmp_path / "out" / "c.txt").st_mtime == done_time


# --- resources and SLURM -------------------------------------------------------------------------------

def test_worker_rules_and_cluster_limits():
    from nnunet_ext.study.resources import augmentation_workers, check_against_cluster, check_training_resources, parse_sinfo

    assert augmentation_workers(8, 1) == 7 and augmentation_workers(1, 0) == 0 and augmentation_workers(64, 1) == 12
    with pytest.raises(ValueError, match=r"train\.cpus: 1 CPU\(s\) for 1 GPU"):
        check_training_resources({"cpus": 1, "gpus": 1, "memory_gb": 32}, "train")
    with pytest.raises(ValueError, match=r"train\.memory_gb"):
        check_training_resources({"cpus": 16, "gpus": 1, "memory_gb": 8}, "train")
    check_training_resources({"cpus": 8, "gpus": 1, "memory_gb": 16}, "train")
    limits = parse_sinfo("gpu* 32 256000 gpu:a100:4 2-00:00:00\ncpu 64 512000 (null) infinite\n")
    assert limits["gpu"].gpus == 4 and limits["gpu"].time_minutes == 2880 and limits["cpu"].time_minutes is None
    check_against_cluster({"cpus": 8, "gpus": 4, "memory_gb": 200, "time": 60}, "train", limits, "gpu")
    with pytest.raises(ValueError, match=r"train\.gpus: 8 asked for.*has 4"):
        check_against_cluster({"cpus": 8, "gpus": 8, "memory_gb": 10, "time": 60}, "train", limits, "gpu")
    with pytest.raises(ValueError, match=r"train\.time"):
        check_against_cluster({"cpus": 8, "gpus": 1, "memory_gb": 10, "time": 3000}, "train", limits, "gpu")
    with pytest.raises(ValueError, match=r"slurm\.partition"):
        check_against_cluster({"cpus": 8, "gpus": 1, "memory_gb": 10, "time": 60}, "train", limits, "a100")


@pytest.fixture
def fake_sbatch(tmp_path, monkeypatch):
    """An ``sbatch`` that records each submission script and answers like SLURM."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    counter = tmp_path / "counter"
    counter.write_text("100")
    script = bin_dir / "sbatch"
    script.write_text(f"""#!{sys.executable}
import sys, shutil
n = int(open({str(counter)!r}).read()) + 1
open({str(counter)!r}, "w").write(str(n))
shutil.copy(sys.argv[-1], {str(tmp_path)!r} + f"/submitted_{{n}}.sh")
print(f"Submitted batch job {{n}}")
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    srun = bin_dir / "srun"  # submitit looks for it; the stand-in jobs never run
    srun.write_text("#!/bin/sh\nexec \"$@\"\n")
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def test_slurm_submission_through_submitit(tmp_path, fake_sbatch):
    pytest.importorskip("submitit")
    from nnunet_ext.study.runner import prepare, run_study
    from nnunet_ext.study.state import job_statuses, read_record

    env = _env(tmp_path)
    raw = {**_minimal(trainers=["TopoTrainer"]), "device": "cuda", "slurm": {"partition": "gpu", "stagger_minutes": 5},
           "resources": {"train": {"gpus": 2, "cpus": 16, "memory_gb": 64, "time": "12:00:00"}}}
    prepared = prepare(str(_write_study(tmp_path, raw)), env=env)
    fold0 = Path(env["nnUNet_results"]) / DATASET / "TopoTrainer__nnUNetPlans__3d_fullres" / "fold_0"
    fold0.mkdir(parents=True)
    (fold0 / "checkpoint_latest.pth").write_text("")  # an interrupted run: submitted with --c
    run_study(prepared, executor="slurm", echo=lambda line: None, check_cluster=False)
    ids = {j.id: str(read_record(prepared.ctx.workdir, j)["slurm_id"]) for j in prepared.jobs}
    scripts = {j: (fake_sbatch / f"submitted_{i}.sh").read_text() for j, i in ids.items()}
    train0, train1 = scripts["train/TopoTrainer/3d_fullres/fold_0"], scripts["train/TopoTrainer/3d_fullres/fold_1"]
    assert "#SBATCH --cpus-per-task=16" in train0 and "#SBATCH --gpus-per-node=2" in train0
    assert "#SBATCH --partition=gpu" in train0 and "#SBATCH --time=720" in train0 and "#SBATCH --mem=65536MB" in train0
    assert "--dependency" not in train0
    assert f"#SBATCH --dependency=after:{ids['train/TopoTrainer/3d_fullres/fold_0']}+5" in train1
    both = f"{ids['train/TopoTrainer/3d_fullres/fold_0']}:{ids['train/TopoTrainer/3d_fullres/fold_1']}"
    assert f"#SBATCH --dependency=afterok:{both}" in scripts["postprocess/TopoTrainer/3d_fullres"]
    assert "--gpus-per-node" not in scripts["postprocess/TopoTrainer/3d_fullres"]
    assert "#SBATCH --dependency=afterany:" in scripts["report"]
    record = read_record(prepared.ctx.workdir, prepared.jobs[0])
    assert record["command"][-3:] == ["-num_gpus", "2", "--c"] or record["command"][-1] == "--c"
    assert "-num_gpus" in record["command"]
    # the pickled call carries the job and nnU-Net's worker count from the CPUs
    import pickle

    from nnunet_ext.study.state import record_path

    job_folder = Path(prepared.ctx.workdir) / "slurm" / ids["train/TopoTrainer/3d_fullres/fold_1"]
    pickled = next(job_folder.glob("*_submitted.pkl"))
    call = pickle.loads(pickled.read_bytes()).function
    assert call.job.id == "train/TopoTrainer/3d_fullres/fold_1" and call.env["nnUNet_n_proc_DA"] == "7"
    # submitted jobs are "queued" while SLURM lists them; nothing is submitted twice
    statuses = job_statuses(prepared.jobs, prepared.ctx.workdir, slurm_query=lambda ids: {i: "PENDING" for i in ids})
    assert {s.status for s in statuses.values()} == {"queued"}
    assert record_path(prepared.ctx.workdir, prepared.jobs[0]).is_file()


def test_slurm_refuses_settings_that_kill_workers_before_submitting(tmp_path, fake_sbatch):
    pytest.importorskip("submitit")
    from nnunet_ext.study.runner import prepare, run_study

    env = _env(tmp_path)
    raw = {**_minimal(trainers=["TopoTrainer"]), "device": "cuda", "resources": {"train": {"gpus": 1, "cpus": 1}}}
    prepared = prepare(str(_write_study(tmp_path, raw)), env=env)
    with pytest.raises(ValueError, match=r"resources\.train\.cpus"):
        run_study(prepared, executor="slurm", echo=lambda line: None, check_cluster=False)
    assert not list(fake_sbatch.glob("submitted_*.sh"))


def test_requeue_on_timeout_continues_training(tmp_path):
    pytest.importorskip("submitit")
    import submitit

    from nnunet_ext.study.slurm import SlurmJobCall
    from nnunet_ext.study.state import read_record

    job = Job("train/T/3d_fullres/fold_0", "train", ("nnUNetv2_train", "1", "3d_fullres", "0"),
              continue_if=str(tmp_path / "checkpoint_latest.pth"))
    call = SlurmJobCall(job, str(tmp_path), {}, max_requeues=1)
    again = call.checkpoint()
    assert isinstance(again, submitit.helpers.DelayedSubmission)
    assert read_record(tmp_path, job)["requeues"] == 1
    (tmp_path / "checkpoint_latest.pth").write_text("")
    assert again.function.job.command_now()[-1] == "--c"
    assert call.checkpoint() is None and read_record(tmp_path, job)["status"] == "failed"


def test_waiting_for_slurm_jobs_ends_when_slurm_holds_none_and_reports_each_failure_once(tmp_path):
    from nnunet_ext.study.slurm import wait_for_jobs
    from nnunet_ext.study.state import JobStatus

    a = Job("train/T/3d_fullres/fold_0", "train", ("nnUNetv2_train",))
    b = Job("report", "report", ("nnunet-ext",))
    log = tmp_path / "a.log"
    log.write_text("epoch 0\nRuntimeError: CUDA out of memory\n")
    rounds = iter([
        {a.id: JobStatus(a, "running"), b.id: JobStatus(b, "queued")},
        {a.id: JobStatus(a, "failed", str(log), "exit status 1"), b.id: JobStatus(b, "running")},
        {a.id: JobStatus(a, "failed", str(log), "exit status 1"), b.id: JobStatus(b, "running")},
        {a.id: JobStatus(a, "failed", str(log), "exit status 1"), b.id: JobStatus(b, "done")},
    ])
    calls, lines = [], []

    def statuses():
        calls.append(1)
        return next(rounds)

    final = wait_for_jobs([a, b], str(tmp_path), poll_seconds=0, progress=False, echo=lines.append,
                          statuses_of=statuses)
    assert len(calls) == 4  # polled until nothing was queued or running, not beyond
    assert final[b.id].status == "done" and final[a.id].status == "failed"
    assert len(lines) == 1 and a.id in lines[0] and "CUDA out of memory" in lines[0] and str(log) in lines[0]
