"""`nnunet-ext study run|status|report|list`: a whole comparison study from one JSON file (docs/studies.md)."""
from __future__ import annotations

from .convert import positive_int


def _common(p) -> None:
    p.add_argument("study", metavar="STUDY", help="study file (JSON), or a built-in study name (nnunet-ext study list)")
    p.add_argument("--budget", default=None, metavar="E[xI]",
                   help="smoke run: every trainer for E epochs (of I iterations), in folders of their own "
                   "(TopoTrainer_2epochs_10iters, time-compressed recipes)")
    p.add_argument("--folds", nargs="+", type=int, default=None, help="train only these folds (overrides the file)")
    p.add_argument("--workdir", default=None, help="the study's folder for logs, ensembles, test predictions and "
                   "the report (default: $nnUNet_results/<Dataset>/studies/<name>[_<budget>])")


def register(subparsers) -> None:
    p = subparsers.add_parser("study", help="run a whole comparison study (train → validate → best configuration / "
                              "ensembles → post-processing → test → report) here or on SLURM",
                              description="See docs/studies.md for the study file.")
    sub = p.add_subparsers(dest="study_command", metavar="SUBCOMMAND")
    run = sub.add_parser("run", help="run (local) or submit (slurm) every step not done yet; resumes")
    _common(run)
    run.add_argument("--executor", choices=("local", "slurm"), default="local")
    run.add_argument("--gpus", nargs="+", default=None, metavar="ID",
                     help="local: GPU ids, one job per GPU at a time (default: every visible GPU for a cuda study)")
    run.add_argument("--cpus", type=positive_int, default=None,
                     help="local: CPUs shared by the running jobs (sets nnUNet_n_proc_DA; default: all)")
    run.add_argument("--wait", action="store_true",
                     help="slurm: stay until every submitted job has ended, with a progress bar (exit 1 if any failed)")
    run.add_argument("--dry-run", action="store_true", help="print the jobs and their commands, run nothing")
    run.set_defaults(func=_run)
    status = sub.add_parser("status", help="a table of the study's jobs: done / running / failed (with the log) / "
                            "waiting")
    _common(status)
    status.add_argument("--tail", type=int, default=5, help="lines of each failed job's log to show (default 5)")
    status.set_defaults(func=_status)
    report = sub.add_parser("report", help="write the study report from what is done (run by `study run` at the end)")
    _common(report)
    report.add_argument("-np", "--num-processes", type=positive_int, default=1,
                        help="cases evaluated in parallel")
    report.set_defaults(func=_report)
    listing = sub.add_parser("list", help="the built-in example studies")
    listing.set_defaults(func=_list)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _prepared(args):
    from nnunet_ext.study.budget import parse_budget
    from nnunet_ext.study.runner import prepare

    budget = parse_budget(args.budget) if args.budget else None
    return prepare(args.study, budget=budget, workdir=args.workdir, folds=args.folds)


def _default_gpus(study) -> list[str] | None:
    import os

    if study.device != "cuda":
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [g for g in visible.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] or None


def _run(args) -> int:
    from nnunet_ext.study.runner import run_study, status_table
    from nnunet_ext.study.state import job_statuses

    prepared = _prepared(args)
    print(f"study {prepared.study.name}: {len(prepared.jobs)} jobs, folder {prepared.ctx.workdir}")
    if args.dry_run:
        statuses = job_statuses(prepared.jobs, prepared.ctx.workdir)
        for job in prepared.jobs:
            command = " ".join(job.command_now()) if job.argv else job.meta.get("unavailable", "")
            print(f"{statuses[job.id].status:<11} {job.id}\n            {command}")
        return 0
    gpus = args.gpus if args.gpus is not None else (_default_gpus(prepared.study) if args.executor == "local" else None)
    statuses = run_study(prepared, executor=args.executor, gpus=gpus, cpus=args.cpus)
    print(status_table(statuses, tail_lines=0))
    if args.executor == "local":
        report = statuses.get("report")
        if report is not None and report.status == "done":
            print(f"report: {report.job.outputs[0]}")
        return 1 if any(s.status in ("failed", "blocked") for s in statuses.values()) else 0
    if args.wait:
        from nnunet_ext.study.slurm import wait_for_jobs

        statuses = wait_for_jobs(prepared.jobs, prepared.ctx.workdir)
        print(status_table(statuses, tail_lines=0))
        return 1 if any(s.status in ("failed", "blocked") for s in statuses.values()) else 0
    print(f"follow it with: nnunet-ext study status {args.study}" + (f" --budget {args.budget}" if args.budget else ""))
    return 0


def _status(args) -> int:
    from nnunet_ext.study.runner import status_table
    from nnunet_ext.study.state import job_statuses

    prepared = _prepared(args)
    print(f"study {prepared.study.name}: {prepared.ctx.workdir}")
    statuses = job_statuses(prepared.jobs, prepared.ctx.workdir)
    print(status_table(statuses, tail_lines=args.tail))
    return 0


def _report(args) -> int:
    from nnunet_ext.study.report import write_study_report
    from nnunet_ext.study.state import job_statuses

    prepared = _prepared(args)
    statuses = job_statuses(prepared.jobs, prepared.ctx.workdir)
    path = write_study_report(prepared.study, prepared.ctx, statuses, num_processes=args.num_processes)
    print(f"report: {path}")
    return 0


def _list(args) -> int:
    from nnunet_ext.study.runner import EXAMPLES_FOLDER
    from nnunet_ext.study.schema import load_study

    for path in sorted(EXAMPLES_FOLDER.glob("*.json")):
        study = load_study(path)
        print(f"{path.stem:<24} {study.description}\n{'':<24} {path}")
    return 0
