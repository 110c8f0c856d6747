"""Running one job: its command line resolved on this machine, its environment, its log file.

Shared by both executors: the local one starts :func:`start_job` processes itself; the SLURM one pickles
:func:`run_job` (through :class:`nnunet_ext.study.slurm.SlurmJobCall`) and runs it on the node.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from nnunet_ext.study.graph import NNUNET_EXT, Job
from nnunet_ext.study.resources import augmentation_workers
from nnunet_ext.study.state import log_path, write_record

__all__ = ["resolve_command", "job_environment", "start_job", "run_job", "JobFailed"]


class JobFailed(RuntimeError):
    """A job's command exited with a non-zero status; the message names the job and its log."""


def resolve_command(argv: list[str]) -> list[str]:
    """``nnunet-ext …`` → this interpreter's ``python -m nnunet_ext.cli …``; ``nnUNetv2_*`` → the console
    script beside this interpreter (the same installation that built the study)."""
    if argv[0] == NNUNET_EXT:
        return [sys.executable, "-m", "nnunet_ext.cli", *argv[1:]]
    from nnunet_ext.nnunet_commands import nnunet_executable

    return [nnunet_executable(argv[0]), *argv[1:]]


def job_environment(base: dict, job: Job, cpus: int | None = None, gpu_ids: list[str] | None = None) -> dict:
    """``base`` plus what this job needs: ``nnUNet_n_proc_DA`` from its CPUs (never nnU-Net's host-name
    guess; for a training the augmentation workers, for the other jobs the thread count), the GPUs it was given, and no Python buffering (logs appear as they are written)."""
    env = dict(base)
    cpus = job.resources.get("cpus", 1) if cpus is None else cpus
    gpus = job.resources.get("gpus", 0)
    # training: augmentation workers from the CPUs (0 = augment in the main process); every other nnU-Net
    # command reads the variable as a thread count (the planner's torch.set_num_threads fails on 0)
    workers = augmentation_workers(cpus, gpus) if job.kind == "train" else max(1, cpus)
    env["nnUNet_n_proc_DA"] = str(workers)
    env.setdefault("nnUNet_def_n_proc", str(max(1, cpus)))
    env["PYTHONUNBUFFERED"] = "1"
    if gpu_ids is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
    return env


def start_job(job: Job, workdir: str, env: dict) -> subprocess.Popen:
    """Start ``job`` as a process of its own session writing to its log, and record it as running."""
    log = log_path(workdir, job)
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = job.command_now()
    handle = open(log, "a")
    handle.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} on {socket.gethostname()}\n$ {' '.join(argv)}\n")
    handle.flush()
    process = subprocess.Popen(resolve_command(argv), stdout=handle, stderr=subprocess.STDOUT, env=env,
                               start_new_session=True)
    handle.close()
    write_record(workdir, job, status="running", pid=process.pid, host=socket.gethostname(), log=str(log),
                 command=argv, started=time.time(), slurm_id=None, detail="")
    return process


def finish_job(job: Job, workdir: str, returncode: int) -> None:
    """Record how ``job`` ended."""
    if returncode == 0:
        write_record(workdir, job, status="finished", returncode=0, ended=time.time(), detail="")
    else:
        write_record(workdir, job, status="failed", returncode=returncode, ended=time.time(),
                     detail=f"exit status {returncode}")


def run_job(job: Job, workdir: str, env: dict, slurm_id: str | None = None) -> None:
    """Run ``job`` to its end here (used on a SLURM node); raises :class:`JobFailed` on failure."""
    full_env = {**os.environ, **env}
    process = start_job(job, workdir, full_env)
    if slurm_id:
        write_record(workdir, job, slurm_id=slurm_id)
    returncode = process.wait()
    finish_job(job, workdir, returncode)
    if returncode != 0:
        raise JobFailed(f"{job.id} failed with exit status {returncode}; log: {log_path(workdir, job)}")


def logs_folder(workdir: str) -> Path:
    return Path(workdir) / "logs"
