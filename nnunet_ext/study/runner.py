"""Putting a study together: file → (budget) → checks → graph → state, and ``run`` / ``status`` / ``report``.

:func:`prepare` does everything that can fail on bad input, before a job starts or is submitted.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from nnunet_ext.study import checks
from nnunet_ext.study.budget import budget_suffix, budget_trainer_name, write_budget_recipes
from nnunet_ext.study.graph import GraphContext, Job, build_graph, topological_order
from nnunet_ext.study.schema import Study, StudyError, load_study
from nnunet_ext.study.state import STATUS_ORDER, JobStatus, job_statuses, log_tail, write_record

__all__ = ["PreparedStudy", "prepare", "apply_budget", "status_table", "run_study", "EXAMPLES_FOLDER",
           "find_study_file", "validate_available"]

EXAMPLES_FOLDER = Path(__file__).resolve().parent / "examples"


@dataclass
class PreparedStudy:
    study: Study
    ctx: GraphContext
    env: dict
    jobs: list[Job]


def find_study_file(name: str) -> Path:
    """A study file path, or the name of a built-in example study (``minivess_losses``)."""
    path = Path(name)
    if path.is_file():
        return path
    example = EXAMPLES_FOLDER / f"{name}.json"
    if example.is_file() and os.sep not in name and not name.endswith(".json"):
        return example
    known = ", ".join(sorted(p.stem for p in EXAMPLES_FOLDER.glob("*.json")))
    raise FileNotFoundError(f"{name}: no such study file, nor a built-in study (built-in: {known})")


def validate_available() -> bool:
    """Whether ``nnunet-ext validate`` (per-checkpoint cross-validation) is installed."""
    return importlib.util.find_spec("nnunet_ext.commands.validate") is not None


def apply_budget(study: Study, budget: tuple[int, int | None]) -> Study:
    """The study with every trainer renamed to its budget variant (see :mod:`nnunet_ext.study.budget`)."""
    rename = {t: budget_trainer_name(t, budget) for t in study.trainers}
    ensembles = tuple({**e, "members": [[rename[t], c] for t, c in e["members"]]} for e in study.ensembles)
    report = {**study.report, "baseline": rename[study.report["baseline"]]}
    return dataclasses.replace(study, trainers=tuple(rename[t] for t in study.trainers), ensembles=ensembles,
                               report=report, budget=budget)


def _environment(study: Study, base: dict, workdir: str) -> dict:
    from nnunet_ext.discovery import trainer_folder

    env = dict(base)
    ext = [str(trainer_folder())] + [p for p in base.get("nnUNet_extTrainer", "").split(os.pathsep)
                                     if p and p != str(trainer_folder())]
    env["nnUNet_extTrainer"] = os.pathsep.join(ext)
    recipes = list(study.recipes_folders) + ([str(Path(workdir) / "recipes")] if study.budget else [])
    recipes += [p for p in base.get("nnunet_ext_recipes", "").split(os.pathsep) if p and p not in recipes]
    if recipes:
        env["nnunet_ext_recipes"] = os.pathsep.join(recipes)
    if study.device != "cuda":
        env.setdefault("nnUNet_compile", "false")  # compiling for the CPU costs more than short runs gain
    return env


def prepare(study_file: str, budget: tuple[int, int | None] | None = None, workdir: str | None = None,
            folds: Sequence[int] | None = None, env: dict | None = None) -> PreparedStudy:
    """Load, check and plan a study; nothing is run. Raises :class:`StudyError` (or ``FileNotFoundError``)
    on bad input."""
    path = find_study_file(study_file)
    study = load_study(path)
    if folds is not None:
        study = dataclasses.replace(study, folds=tuple(int(f) for f in folds))
    base = dict(os.environ if env is None else env)
    folders = checks.nnunet_folders(base, study.source)
    name = checks.dataset_name(study, folders)
    if workdir is None:
        workdir = study.workdir or os.path.join(folders["nnUNet_results"], name, "studies",
                                                study.name + (f"_{budget_suffix(budget)}" if budget else ""))
    workdir = str(Path(workdir).resolve())
    recipes = [t[len("Recipe_"):] for t in study.trainers if t.startswith("Recipe_")]
    study_env = _environment(dataclasses.replace(study, budget=budget), base, workdir)
    checks.check_trainers(study, study_env)
    if budget is not None:
        old = os.environ.get("nnunet_ext_recipes")
        os.environ["nnunet_ext_recipes"] = study_env.get("nnunet_ext_recipes", "")
        try:
            write_budget_recipes(recipes, budget, Path(workdir) / "recipes")
        finally:
            if old is None:
                os.environ.pop("nnunet_ext_recipes", None)
            else:
                os.environ["nnunet_ext_recipes"] = old
        study = apply_budget(study, budget)
        checks.check_trainers(study, study_env)
    planning = checks.needs_planning(study, name, folders)
    checks.check_folds_and_configurations(study, name, folders)
    ending = checks.file_ending(name, folders)
    study_argv = [str(path.resolve()), "--workdir", workdir]
    if budget is not None:
        study_argv += ["--budget", f"{budget[0]}" + (f"x{budget[1]}" if budget[1] else "")]
    if folds is not None:
        study_argv += ["--folds", *map(str, study.folds)]
    ctx = GraphContext(dataset_name=name, results=folders["nnUNet_results"],
                       preprocessed=folders["nnUNet_preprocessed"], workdir=workdir, file_ending=ending,
                       needs_planning=planning, test_cases=checks.test_cases(study, ending),
                       study_argv=tuple(study_argv), validate_available=validate_available())
    jobs = topological_order(build_graph(study, ctx))
    return PreparedStudy(study, ctx, study_env, jobs)


def status_table(statuses: dict[str, JobStatus], tail_lines: int = 0) -> str:
    """A text table: one line per job (state, job, log or reason), then the counts."""
    width = max(len(s.job.id) for s in statuses.values())
    lines = [f"{'state':<11} {'job':<{width}}  log / reason"]
    for s in statuses.values():
        where = s.log if s.status in ("failed", "running") and s.log else ""
        reason = " — ".join(x for x in (s.detail, where) if x)
        lines.append(f"{s.status:<11} {s.job.id:<{width}}  {reason}".rstrip())
        if s.status == "failed" and tail_lines:
            lines += ["    | " + line for line in log_tail(s.log, tail_lines).splitlines()]
    counts = {k: sum(1 for s in statuses.values() if s.status == k) for k in STATUS_ORDER}
    lines.append(", ".join(f"{n} {k}" for k, n in counts.items() if n))
    return "\n".join(lines)


def run_study(prepared: PreparedStudy, executor: str = "local", gpus: Sequence[str] | None = None,
              cpus: int | None = None, echo: Callable[[str], None] = print, progress: bool = True,
              executor_factory=None, check_cluster: bool = True) -> dict[str, JobStatus]:
    """Run (local) or submit (slurm) every job not done yet; failed jobs of earlier runs are retried."""
    from nnunet_ext.study.resources import check_against_cluster, check_training_resources, cluster_limits

    study, workdir, jobs = prepared.study, prepared.ctx.workdir, prepared.jobs
    statuses = job_statuses(jobs, workdir)
    if executor == "slurm":  # every refusal before the first submission
        limits = cluster_limits() if check_cluster else None
        for job in jobs:
            if statuses[job.id].status in ("done", "unavailable"):
                continue
            where = f"{study.source}: resources.{job.kind}"
            if job.kind == "train":
                check_training_resources(job.resources, where)
            if limits:
                check_against_cluster(job.resources, where, limits, study.slurm.get("partition"))
    elif executor == "local" and gpus:
        for job in jobs:
            if job.resources.get("gpus", 0) > len(gpus):
                raise StudyError(study.source, f"resources.{job.kind}.gpus",
                                 f"{job.resources['gpus']} GPUs per job, but this machine has {len(gpus)}")
    for job in jobs:  # retry what failed before
        if statuses[job.id].status == "failed":
            write_record(workdir, job, status="retry", detail="")
    Path(workdir).mkdir(parents=True, exist_ok=True)
    if executor == "local":
        from nnunet_ext.study.local import LocalExecutor

        return LocalExecutor(workdir, prepared.env, gpus=gpus, cpus=cpus, echo=echo, progress=progress).run(jobs)
    if executor == "slurm":
        from nnunet_ext.study.slurm import SlurmSubmitter

        submitter = SlurmSubmitter(workdir, prepared.env, study.name, study.slurm,
                                   executor_factory=executor_factory, echo=echo)
        submitter.submit(jobs, job_statuses(jobs, workdir))
        return job_statuses(jobs, workdir)
    raise ValueError(f"--executor: expected local or slurm, got {executor!r}")
