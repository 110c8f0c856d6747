"""The jobs of a study and their dependencies — a pure function of the study and a few facts about the
dataset (:class:`GraphContext`).

Every job is a command line of the stock nnU-Net commands or of ``nnunet-ext``, so each one can be run by
hand, on this machine or as a SLURM job, and leaves nnU-Net's own files behind (which is how
:mod:`nnunet_ext.study.state` knows it is done)::

    plan                                      nnUNetv2_plan_and_preprocess (only if not preprocessed yet)
    train/<trainer>/<configuration>/fold_<f>  nnUNetv2_train (--c when interrupted, --val when only validation is missing;
                                              nnunet-ext train --seed S with the same arguments when the study sets a seed)
    validate/<trainer>/<configuration>/<chk>/fold_<f>  nnunet-ext validate: nnU-Net's validation with another checkpoint
    best                                      nnUNetv2_find_best_configuration over every model
    ensemble/<name>                           nnunet-ext ensemble --fit-on: weights fitted on the CV predictions
    postprocess/<trainer>/<configuration>     nnunet-ext postprocess determine on the CV predictions
    predict/<trainer>/<configuration>         nnunet-ext predict on the test images (with uncertainty maps)
    apply/<trainer>/<configuration>           nnunet-ext postprocess apply to the test predictions
    ensemble_test/<name>                      nnunet-ext ensemble of the members' test probabilities
    evaluate/<model or ensemble>              nnunet-ext evaluate against the test labels
    report                                    nnunet-ext study report (after the others, whatever their outcome)

A failed job blocks only the jobs that need its output; ``report`` runs after all others have ended.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

from nnunet_ext.study.schema import Study, checkpoint_file

__all__ = ["Job", "GraphContext", "build_graph", "model_folder", "fold_folder", "topological_order",
           "dependents", "NNUNET_EXT"]

#: the first word of an ``nnunet-ext`` command line (run as ``python -m nnunet_ext.cli`` by the executors)
NNUNET_EXT = "nnunet-ext"


@dataclass(frozen=True)
class Job:
    """One step of a study.

    ``argv`` is ``None`` for a step this installation cannot run yet (checkpoints other than the final one
    before ``nnunet-ext validate`` exists). ``outputs`` are the files that exist when the step is done.
    ``after_any``: start once every dependency has ended, done or failed (the report). ``start_after``:
    ``(job id, minutes)`` — start only that long after that job started (the first fold of a configuration
    unpacks the dataset alone). ``continue_if`` / ``validate_if``: nnU-Net's ``--c`` when that file exists,
    ``--val`` when this one does (decided when the job starts, so a requeued job continues)."""

    id: str
    kind: str
    argv: tuple[str, ...] | None
    deps: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    resources: dict = field(default_factory=dict, hash=False, compare=False)
    after_any: bool = False
    start_after: tuple[str, int] | None = None
    continue_if: str | None = None
    validate_if: str | None = None
    meta: dict = field(default_factory=dict, hash=False, compare=False)

    def command_now(self) -> list[str]:
        """The command line to run now: ``--val`` if training finished but its validation did not,
        ``--c`` if an interrupted training left a checkpoint, else ``argv``."""
        if self.argv is None:
            raise ValueError(f"{self.id}: this installation cannot run this step ({self.meta.get('unavailable')})")
        argv = list(self.argv)
        if self.validate_if and os.path.isfile(self.validate_if):
            return argv + ["--val"]
        if self.continue_if and os.path.isfile(self.continue_if):
            return argv + ["--c"]
        return argv

    @property
    def log_name(self) -> str:
        return self.id.replace("/", "__") + ".log"


@dataclass(frozen=True)
class GraphContext:
    """Facts about the machine and dataset the graph needs (kept out of :func:`build_graph` so that the
    graph is a pure function)."""

    dataset_name: str            # DatasetNNN_Name
    results: str                 # $nnUNet_results
    preprocessed: str            # $nnUNet_preprocessed
    workdir: str                 # where the study keeps logs, ensembles, test predictions and the report
    file_ending: str             # the dataset's file ending (".nii.gz")
    needs_planning: bool         # the dataset is not preprocessed for every configuration yet
    test_cases: tuple[str, ...] = ()           # case ids of the test images
    study_argv: tuple[str, ...] = ()           # how to name this study on a command line (file, --budget, --workdir)
    validate_available: bool = False           # `nnunet-ext validate` exists (checkpoints other than final)


def model_folder(ctx: GraphContext, trainer: str, plans: str, configuration: str) -> str:
    """nnU-Net's results folder ``$nnUNet_results/<Dataset>/<trainer>__<plans>__<configuration>``."""
    return os.path.join(ctx.results, ctx.dataset_name, f"{trainer}__{plans}__{configuration}")


def fold_folder(ctx: GraphContext, trainer: str, plans: str, configuration: str, fold: int) -> str:
    return os.path.join(model_folder(ctx, trainer, plans, configuration), f"fold_{fold}")


def _slug(trainer: str, configuration: str) -> str:
    return f"{trainer}__{configuration}"


def _threads(resources: dict) -> str:
    return str(max(1, resources.get("cpus", 1)))


def build_graph(study: Study, ctx: GraphContext) -> list[Job]:
    """Every job of ``study`` in an order that respects the dependencies (see the module docstring)."""
    jobs: list[Job] = []
    did, plans, work = study.dataset, study.plans, ctx.workdir
    res = study.resources_of
    plan_deps: tuple[str, ...] = ()
    if ctx.needs_planning:
        r = res("plan")
        jobs.append(Job("plan", "plan", ("nnUNetv2_plan_and_preprocess", "-d", did, "-c", *study.configurations,
                                         "--verify_dataset_integrity", "-np", _threads(r), "-npfp", _threads(r)),
                        outputs=(os.path.join(ctx.preprocessed, ctx.dataset_name, f"{plans}.json"),), resources=r))
        plan_deps = ("plan",)

    ensemble_members = {tuple(m) for e in study.ensembles for m in e["members"]}
    npz_everywhere = bool(study.ensembles) and study.find_best_configuration
    test = study.test
    train_ids: dict[tuple[str, str], list[str]] = {}
    for trainer, configuration in study.models:
        npz = npz_everywhere or (trainer, configuration) in ensemble_members
        r = res("train")
        first = None
        for fold in study.folds:
            folder = fold_folder(ctx, trainer, plans, configuration, fold)
            argv = ["nnUNetv2_train", did, configuration, str(fold), "-tr", trainer, "-p", plans,
                    "-device", study.device]
            if study.seed is not None:  # the same arguments through the seeded entry point
                argv = [NNUNET_EXT, "train", "--seed", str(study.seed), *argv[1:]]
            if r.get("gpus", 0) > 1:
                argv += ["-num_gpus", str(r["gpus"])]
            if npz:
                argv.append("--npz")
            job_id = f"train/{trainer}/{configuration}/fold_{fold}"
            jobs.append(Job(job_id, "train", tuple(argv), deps=plan_deps,
                            outputs=(os.path.join(folder, "checkpoint_final.pth"),
                                     os.path.join(folder, "validation", "summary.json")),
                            resources=r, continue_if=os.path.join(folder, "checkpoint_latest.pth"),
                            validate_if=os.path.join(folder, "checkpoint_final.pth"),
                            start_after=None if first is None else (first, study.slurm["stagger_minutes"]),
                            meta={"trainer": trainer, "configuration": configuration, "fold": fold}))
            first = first or job_id
            train_ids.setdefault((trainer, configuration), []).append(job_id)

    # checkpoints other than the final one: nnU-Net's validation with that checkpoint, per fold
    # (`nnunet-ext validate`, which also makes the checkpoint view <trainer>@<checkpoint>__<plans>__<config>)
    for trainer, configuration in study.models:
        for checkpoint in study.checkpoints:
            if checkpoint == "final":
                continue
            for fold, train_id in zip(study.folds, train_ids[(trainer, configuration)]):
                folder = fold_folder(ctx, trainer, plans, configuration, fold)
                argv = None
                if ctx.validate_available:
                    argv = (NNUNET_EXT, "validate", "-d", did, "-c", configuration, "-tr", trainer, "-p", plans,
                            "-f", str(fold), "-chk", checkpoint_file(checkpoint), "-device", study.device,
                            "--overwrite")
                jobs.append(Job(f"validate/{trainer}/{configuration}/{checkpoint}/fold_{fold}", "validate", argv,
                                deps=(train_id,),
                                outputs=(os.path.join(folder, f"validation_checkpoint_{checkpoint}", "summary.json"),),
                                resources=res("validate"),
                                meta={"trainer": trainer, "configuration": configuration, "checkpoint": checkpoint,
                                      "fold": fold, "unavailable": None if argv else
                                      "scoring checkpoints other than checkpoint_final needs `nnunet-ext validate`"}))

    all_train = tuple(j for ids in train_ids.values() for j in ids)
    if study.find_best_configuration:
        r = res("best")
        argv = ["nnUNetv2_find_best_configuration", did, "-c", *study.configurations, "-tr", *study.trainers,
                "-p", plans, "-f", *map(str, study.folds), "-np", _threads(r)]
        if not study.ensembles:
            argv.append("--disable_ensembling")
        jobs.append(Job("best", "best", tuple(argv), deps=all_train,
                        outputs=(os.path.join(ctx.results, ctx.dataset_name, "inference_information.json"),),
                        resources=r, meta={"models": [f"{t}__{plans}__{c}" for t, c in study.models],
                                           "folds": list(study.folds)}))

    gt = os.path.join(ctx.preprocessed, ctx.dataset_name, "gt_segmentations")
    for ensemble in study.ensembles:
        if ensemble["weights"] != "fit":
            continue
        out = os.path.join(work, "ensembles", ensemble["name"])
        members = [model_folder(ctx, t, plans, c) for t, c in ensemble["members"]]
        deps = tuple(j for t, c in ensemble["members"] for j in train_ids[(t, c)])
        jobs.append(Job(f"ensemble/{ensemble['name']}", "ensemble",
                        (NNUNET_EXT, "ensemble", "--fit-on", *members, "--gt", gt, "--folds", *map(str, study.folds),
                         "-o", out), deps=deps, outputs=(os.path.join(out, "fitted_weights.json"),),
                        resources=res("ensemble"), meta={"name": ensemble["name"]}))

    pipelines: dict[tuple[str, str], str] = {}
    if study.postprocessing is not None:
        r = res("postprocess")
        for trainer, configuration in study.models:
            out = os.path.join(work, "postprocessing", _slug(trainer, configuration))
            pipelines[(trainer, configuration)] = os.path.join(out, "pipeline.json")
            jobs.append(Job(f"postprocess/{trainer}/{configuration}", "postprocess",
                            (NNUNET_EXT, "postprocess", "determine", model_folder(ctx, trainer, plans, configuration),
                             "-f", *map(str, study.folds), "--metric", study.postprocessing["objective"], "-o", out,
                             "-np", _threads(r), "--overwrite"),
                            deps=tuple(train_ids[(trainer, configuration)]),
                            outputs=(os.path.join(out, "pipeline.json"),), resources=r,
                            meta={"trainer": trainer, "configuration": configuration}))

    if test is not None:
        _test_jobs(study, ctx, jobs, train_ids, pipelines, ensemble_members)

    others = tuple(j.id for j in jobs)
    jobs.append(Job("report", "report", (NNUNET_EXT, "study", "report", *ctx.study_argv), deps=others,
                    after_any=True, outputs=(os.path.join(work, "report", "report.md"),),
                    resources=res("report")))
    return jobs


def _test_jobs(study: Study, ctx: GraphContext, jobs: list[Job], train_ids, pipelines, ensemble_members) -> None:
    test, did, plans, work = study.test, study.dataset, study.plans, ctx.workdir
    res = study.resources_of
    case_files = lambda folder: tuple(os.path.join(folder, c + ctx.file_ending) for c in ctx.test_cases)
    dataset_json = os.path.join(ctx.preprocessed, ctx.dataset_name, "dataset.json")
    final_folders: dict[str, tuple[str, str]] = {}  # name -> (folder, job id)
    raw_folders: dict[tuple[str, str], tuple[str, str]] = {}
    for trainer, configuration in study.models:
        slug = _slug(trainer, configuration)
        raw = os.path.join(work, "test", slug, "predictions")
        r = res("predict")
        argv = [NNUNET_EXT, "predict", "-i", test["images"], "-o", raw, "-d", did, "-c", configuration, "-tr", trainer,
                "-p", plans, "-f", *map(str, study.folds), "-device", study.device,
                "--uncertainty", *(test["uncertainty"] or ["none"]),
                "--uncertainty_folder", os.path.join(work, "test", slug, "uncertainty"),
                "-npp", _threads(r), "-nps", _threads(r), "--continue_prediction"]
        if not test["tta"]:
            argv.append("--disable_tta")
        if (trainer, configuration) in ensemble_members:
            argv.append("--save_probabilities")
        job_id = f"predict/{trainer}/{configuration}"
        jobs.append(Job(job_id, "predict", tuple(argv), deps=tuple(train_ids[(trainer, configuration)]),
                        outputs=case_files(raw), resources=r, meta={"trainer": trainer, "configuration": configuration}))
        raw_folders[(trainer, configuration)] = (raw, job_id)
        final_folders[slug] = (raw, job_id)
        if (trainer, configuration) in pipelines:
            out = os.path.join(work, "test", slug, "postprocessed")
            apply_id = f"apply/{trainer}/{configuration}"
            jobs.append(Job(apply_id, "postprocess",
                            (NNUNET_EXT, "postprocess", "apply", "-i", raw, "-o", out, "-pp",
                             pipelines[(trainer, configuration)], "-dj", dataset_json, "-np", _threads(res("postprocess")),
                             "--overwrite"),
                            deps=(job_id, f"postprocess/{trainer}/{configuration}"), outputs=case_files(out),
                            resources=res("postprocess")))
            final_folders[slug] = (out, apply_id)
    plans_json = os.path.join(ctx.preprocessed, ctx.dataset_name, f"{plans}.json")
    for ensemble in study.ensembles:
        name = ensemble["name"]
        out = os.path.join(work, "test", f"ensemble_{name}", "predictions")
        members = [raw_folders[tuple(m)] for m in ensemble["members"]]
        deps = tuple(job for _, job in members)
        if ensemble["weights"] == "fit":
            weights = [os.path.join(work, "ensembles", name, "fitted_weights.json")]
            deps += (f"ensemble/{name}",)
        elif ensemble["weights"] == "equal":
            weights = ["1"] * len(members)
        else:
            weights = [repr(float(w)) for w in ensemble["weights"]]
        job_id = f"ensemble_test/{name}"
        jobs.append(Job(job_id, "ensemble",
                        (NNUNET_EXT, "ensemble", "-i", *(f for f, _ in members), "-o", out, "--weights", *weights,
                         "-dj", dataset_json, "-pj", plans_json, "-np", _threads(res("ensemble")), "--overwrite"),
                        deps=deps, outputs=case_files(out), resources=res("ensemble")))
        final_folders[f"ensemble_{name}"] = (out, job_id)
    if test["labels"] is None:
        return
    r = res("evaluate")
    for name, (folder, job_id) in final_folders.items():
        out = os.path.join(work, "test", name, "evaluation")
        jobs.append(Job(f"evaluate/{name}", "evaluate",
                        (NNUNET_EXT, "evaluate", folder, test["labels"], "-dj", dataset_json, "-o", out,
                         "--metrics", *study.report["metrics"], "-np", _threads(r), "--bootstrap",
                         str(study.report["bootstrap"]), "--overwrite"),
                        deps=(job_id,), outputs=(os.path.join(out, "metrics_summary.json"),), resources=r,
                        meta={"name": name, "folder": out}))


def topological_order(jobs: Sequence[Job]) -> list[Job]:
    """``jobs`` ordered so that every job comes after its dependencies; raises on unknown ids or cycles."""
    by_id = {j.id: j for j in jobs}
    for j in jobs:
        for d in j.deps:
            if d not in by_id:
                raise ValueError(f"job {j.id} depends on unknown job {d}")
    order, state = [], {}

    def visit(job: Job, chain: tuple[str, ...]) -> None:
        if state.get(job.id) == "done":
            return
        if state.get(job.id) == "visiting":
            raise ValueError(f"dependency cycle: {' → '.join(chain + (job.id,))}")
        state[job.id] = "visiting"
        for d in job.deps:
            visit(by_id[d], chain + (job.id,))
        state[job.id] = "done"
        order.append(job)

    for job in jobs:
        visit(job, ())
    return order


def dependents(jobs: Sequence[Job], job_id: str) -> set[str]:
    """Every job that needs ``job_id`` directly or indirectly (``after_any`` jobs excluded: they run anyway)."""
    out: set[str] = set()
    frontier = {job_id}
    while frontier:
        frontier = {j.id for j in jobs if not j.after_any and j.id not in out and set(j.deps) & frontier}
        out |= frontier
    return out
