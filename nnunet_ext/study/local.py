"""The local executor: the study's jobs on this machine, one at a time per GPU (or one at a time on the CPU).

Each job is a subprocess with its own log file; ``nnUNet_n_proc_DA`` comes from the CPUs given, shared by
the jobs that run side by side. A failed job is reported with the last lines of its log, and only the
jobs that need its output are skipped; everything else goes on. Ctrl-C stops the running jobs (nnU-Net
continues them with ``--c`` on the next ``study run``).
"""
from __future__ import annotations

import os
import signal
import time
from typing import Callable, Sequence

from nnunet_ext.study.execution import finish_job, job_environment, start_job
from nnunet_ext.study.graph import Job
from nnunet_ext.study.state import JobStatus, job_statuses, log_tail, write_record

__all__ = ["LocalExecutor"]


class LocalExecutor:
    """Run jobs here.

    Parameters
    ----------
    workdir : the study's folder (records and logs)
    env : environment of every job (nnU-Net's folders, trainer and recipe paths)
    gpus : GPU ids to use, one job per GPU at a time (a multi-GPU job takes several); ``None``: the CPU,
        one job at a time
    cpus : CPUs to share between the jobs that run at once
    poll_seconds : how often finished processes are looked for
    echo : where progress lines go
    """

    def __init__(self, workdir: str, env: dict, gpus: Sequence[str] | None = None, cpus: int | None = None,
                 poll_seconds: float = 1.0, echo: Callable[[str], None] = print, progress: bool = True):
        self.workdir, self.env = str(workdir), dict(env)
        self.slots = list(gpus) if gpus else [None]
        self.cpus = max(1, cpus or os.cpu_count() or 1)
        self.poll_seconds, self.echo, self.progress = poll_seconds, echo, progress

    def _cpus_per_job(self) -> int:
        return max(1, self.cpus // len(self.slots))

    def run(self, jobs: Sequence[Job]) -> dict[str, JobStatus]:
        """Run every job that can run, in dependency order; returns the final statuses."""
        from tqdm import tqdm

        running: dict[str, tuple[object, Job, list]] = {}
        started_at: dict[str, float] = {}
        free = list(self.slots)
        statuses = job_statuses(jobs, self.workdir)
        total = sum(1 for s in statuses.values() if s.status != "unavailable")
        bar = tqdm(total=total, initial=sum(1 for s in statuses.values() if s.status == "done"), unit="job",
                   desc="study", disable=not self.progress, dynamic_ncols=True)
        try:
            while True:
                for job_id, (process, job, slots) in list(running.items()):
                    code = process.poll()
                    if code is None:
                        continue
                    del running[job_id]
                    free.extend(slots)
                    finish_job(job, self.workdir, code)
                    if code == 0:
                        bar.write(f"done     {job_id}")
                    else:
                        tail = log_tail(str(self._log(job)), 12)
                        bar.write(f"FAILED   {job_id} (exit status {code}); log: {self._log(job)}\n"
                                  + "\n".join("    " + line for line in tail.splitlines()))
                statuses = job_statuses(jobs, self.workdir)
                bar.n = sum(1 for s in statuses.values() if s.status in ("done", "failed", "blocked"))
                bar.refresh()
                for job in jobs:
                    if statuses[job.id].status != "ready" or job.id in running:
                        continue
                    if not self._may_start(job, statuses, started_at):
                        continue
                    need = max(1, job.resources.get("gpus", 0)) if self.slots != [None] else 1
                    if self.slots != [None] and job.resources.get("gpus", 0) == 0:
                        need = 1
                    if len(free) < need:
                        continue
                    slots, free = free[:need], free[need:]
                    gpu_ids = None if slots == [None] else [s for s in slots if s is not None]
                    if gpu_ids is not None and job.resources.get("gpus", 0) == 0:
                        gpu_ids = []  # a CPU job never sees the GPUs
                    env = job_environment(self.env, job, cpus=self._cpus_per_job(), gpu_ids=gpu_ids)
                    bar.write(f"start    {job.id}: {' '.join(job.command_now())}")
                    running[job.id] = (start_job(job, self.workdir, env), job, slots)
                    started_at[job.id] = time.time()
                if not running:
                    statuses = job_statuses(jobs, self.workdir)
                    if not any(s.status == "ready" for s in statuses.values()):
                        break
                time.sleep(self.poll_seconds if running else 0)
        except KeyboardInterrupt:
            for job_id, (process, job, _) in running.items():
                try:
                    os.killpg(process.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
            for job_id, (process, job, _) in running.items():
                try:
                    process.wait(timeout=30)
                except Exception:  # still alive after 30 s: stop it for good
                    os.killpg(process.pid, signal.SIGKILL)
                write_record(self.workdir, job, status="interrupted", detail="interrupted (Ctrl-C)")
            raise
        finally:
            bar.close()
        return job_statuses(jobs, self.workdir)

    def _log(self, job: Job):
        from nnunet_ext.study.state import log_path

        return log_path(self.workdir, job)

    def _may_start(self, job: Job, statuses: dict[str, JobStatus], started_at: dict[str, float]) -> bool:
        """The first fold of a configuration starts alone (nnU-Net unpacks the dataset once); the others
        follow when it has run ``minutes`` or ended. With one slot this never delays anything."""
        if job.start_after is None or len(self.slots) == 1:
            return True
        first, minutes = job.start_after
        state = statuses.get(first)
        if state is None or state.status in ("done", "failed", "blocked"):
            return True
        return first in started_at and time.time() - started_at[first] >= 60 * minutes
