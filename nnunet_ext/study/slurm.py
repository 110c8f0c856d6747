"""The SLURM executor: one SLURM job per study job, submitted through submitit, chained by SLURM dependencies.

* every training is its own job (``--gpus-per-node`` from the study, nnU-Net's ``-num_gpus`` for more
  than one GPU, ``--cpus-per-task`` and ``nnUNet_n_proc_DA`` from the CPUs, see
  :mod:`nnunet_ext.study.resources` for the settings refused);
* the later steps wait with ``--dependency=afterok:<their inputs>`` (the report with ``afterany``: it runs
  whatever the outcome, over what finished);
* the other folds of a configuration start ``stagger_minutes`` after the first one started
  (``after:<first>+<minutes>``), so that nnU-Net unpacks the preprocessed dataset once instead of every
  fold racing to unpack the same files;
* on a timeout or preemption submitit calls :meth:`SlurmJobCall.checkpoint`, which requeues the job (same
  SLURM id, so the dependencies hold); the requeued training starts with nnU-Net's ``--c`` because
  ``checkpoint_latest.pth`` exists — at most ``max_requeues`` times.

Nothing is submitted unless every job of the plan passes the resource checks.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

from nnunet_ext.study.execution import job_environment, run_job
from nnunet_ext.study.graph import Job
from nnunet_ext.study.state import JobStatus, read_record, write_record

__all__ = ["SlurmJobCall", "slurm_parameters", "dependency_string", "SlurmSubmitter", "wait_for_jobs",
           "ACTIVE_STATES"]

#: study states of a job that SLURM still holds
ACTIVE_STATES = ("submitted", "queued", "running")

try:  # submitit is the optional extra [slurm]; the class below needs its Checkpointable base when present
    from submitit.helpers import Checkpointable as _Base
except ImportError:  # pragma: no cover - without submitit only the local executor exists
    _Base = object


class SlurmJobCall(_Base):
    """What a SLURM job runs (pickled by submitit): one study job, with requeue on timeout/preemption."""

    def __init__(self, job: Job, workdir: str, env: dict, max_requeues: int):
        self.job, self.workdir, self.env, self.max_requeues = job, str(workdir), dict(env), max_requeues

    def __call__(self) -> str:
        slurm_id = os.environ.get("SLURM_JOB_ID")
        run_job(self.job, self.workdir, self.env, slurm_id=slurm_id)
        return self.job.id

    def checkpoint(self, *args, **kwargs):
        """Called by submitit before a timeout or on preemption: requeue (training continues with ``--c``)."""
        import submitit

        record = read_record(self.workdir, self.job) or {}
        requeues = int(record.get("requeues", 0))
        if requeues >= self.max_requeues:
            write_record(self.workdir, self.job, status="failed",
                         detail=f"timed out or preempted {requeues + 1} times (max_requeues {self.max_requeues})")
            return None
        write_record(self.workdir, self.job, status="submitted", requeues=requeues + 1,
                     detail=f"requeued after timeout/preemption ({requeues + 1}/{self.max_requeues})")
        return submitit.helpers.DelayedSubmission(SlurmJobCall(self.job, self.workdir, self.env, self.max_requeues))


def dependency_string(job: Job, slurm_ids: dict[str, str], statuses: dict[str, JobStatus]) -> str | None:
    """SLURM's ``--dependency`` for ``job``: ``afterok`` (``afterany`` for the report) on the dependencies
    that are not done yet, ``after:<id>+<minutes>`` on the first fold of its configuration."""
    kind = "afterany" if job.after_any else "afterok"
    waits = [slurm_ids[d] for d in job.deps if d in slurm_ids and statuses[d].status != "done"]
    parts = [f"{kind}:" + ":".join(waits)] if waits else []
    if job.start_after is not None:
        first, minutes = job.start_after
        if first in slurm_ids and statuses[first].status != "done":
            parts.append(f"after:{slurm_ids[first]}+{minutes}" if minutes else f"after:{slurm_ids[first]}")
    return ",".join(parts) or None


def slurm_parameters(job: Job, study_name: str, slurm: dict, dependency: str | None) -> dict:
    """submitit ``SlurmExecutor.update_parameters`` arguments of ``job``."""
    r = job.resources
    params = {"job_name": f"{study_name}:{job.id}", "cpus_per_task": r["cpus"], "ntasks_per_node": 1, "nodes": 1,
              "mem": f"{int(round(r['memory_gb'] * 1024))}MB", "time": int(r["time"]), "stderr_to_stdout": True,
              "signal_delay_s": 120}
    if r.get("gpus", 0):
        params["gpus_per_node"] = r["gpus"]
    for key in ("partition", "account", "qos", "constraint"):
        if slurm.get(key):
            params[key] = slurm[key]
    if slurm.get("setup"):
        params["setup"] = list(slurm["setup"])
    if slurm.get("additional_parameters"):
        params["additional_parameters"] = dict(slurm["additional_parameters"])
    if dependency:
        params["dependency"] = dependency
    return params


class SlurmSubmitter:
    """Submit the jobs that can still run, in dependency order, with their dependencies.

    ``executor_factory(folder)`` makes the submitit executor (default ``submitit.SlurmExecutor``; tests pass
    one whose ``sbatch`` is a stand-in)."""

    def __init__(self, workdir: str, env: dict, study_name: str, slurm: dict,
                 executor_factory: Callable[[str], object] | None = None, echo: Callable[[str], None] = print):
        self.workdir, self.env, self.study_name, self.slurm = str(workdir), dict(env), study_name, slurm
        self.executor_factory = executor_factory
        self.echo = echo

    def _executor(self):
        folder = str(Path(self.workdir) / "slurm" / "%j")
        if self.executor_factory is not None:
            return self.executor_factory(folder)
        try:
            import submitit
        except ImportError:
            raise RuntimeError("--executor slurm needs submitit: pip install 'nnunet-ext[slurm]'") from None
        return submitit.SlurmExecutor(folder=folder, max_num_timeout=self.slurm["max_requeues"])

    def submit(self, jobs: Sequence[Job], statuses: dict[str, JobStatus]) -> dict[str, str]:
        """Submit every job that is ready or waiting (and not blocked); returns ``{job id: SLURM id}`` of
        the jobs submitted now."""
        slurm_ids: dict[str, str] = {}
        for job in jobs:  # jobs already queued or running keep their SLURM id as a dependency target
            record = read_record(self.workdir, job) or {}
            if statuses[job.id].status in ("queued", "running") and record.get("slurm_id"):
                slurm_ids[job.id] = str(record["slurm_id"])
        submitted: dict[str, str] = {}
        skipped: set[str] = set()
        for job in jobs:
            status = statuses[job.id].status
            if status not in ("ready", "waiting") or job.argv is None:
                if status in ("failed", "blocked", "unavailable"):
                    skipped.add(job.id)
                continue
            unmet = [d for d in job.deps if d in skipped or (statuses[d].status not in ("done",) and d not in slurm_ids)]
            if unmet and not job.after_any:
                skipped.add(job.id)
                self.echo(f"not submitted {job.id}: needs {unmet[0]} ({statuses[unmet[0]].status})")
                continue
            dependency = dependency_string(job, slurm_ids, statuses)
            executor = self._executor()
            executor.update_parameters(**slurm_parameters(job, self.study_name, self.slurm, dependency))
            env = job_environment(self.env, job)
            submission = executor.submit(SlurmJobCall(job, self.workdir, env, self.slurm["max_requeues"]))
            slurm_id = str(submission.job_id)
            slurm_ids[job.id] = submitted[job.id] = slurm_id
            write_record(self.workdir, job, status="submitted", slurm_id=slurm_id, host=None, pid=None,
                         log=str(Path(self.workdir) / "logs" / job.log_name), requeues=0, detail="",
                         dependency=dependency, command=job.command_now())
            self.echo(f"submitted {job.id} as SLURM job {slurm_id}" + (f" ({dependency})" if dependency else ""))
        return submitted


def wait_for_jobs(jobs: Sequence[Job], workdir: str, poll_seconds: float = 5.0, progress: bool = True,
                  echo: Callable[[str], None] = print,
                  statuses_of: Callable[[], dict[str, JobStatus]] | None = None) -> dict[str, JobStatus]:
    """Wait (with a progress bar of the jobs done) until SLURM holds none of the study's jobs any more;
    each job that fails is reported once, as it fails. Returns the final statuses."""
    import time

    from tqdm import tqdm

    from nnunet_ext.study.state import job_statuses, log_tail

    statuses_of = statuses_of or (lambda: job_statuses(jobs, workdir))
    statuses = statuses_of()
    done = lambda st: sum(1 for x in st.values() if x.status == "done")  # noqa: E731
    bar = tqdm(total=len(statuses), initial=done(statuses), unit="job", desc="study (slurm)", disable=not progress,
               dynamic_ncols=True)
    reported: set[str] = set()
    try:
        while True:
            for job_id, status in statuses.items():
                if status.status == "failed" and job_id not in reported:
                    reported.add(job_id)
                    tail = log_tail(status.log, 5) if status.log else ""
                    echo(f"failed   {job_id}: {status.detail} (log: {status.log})" + (f"\n{tail}" if tail else ""))
            bar.n = done(statuses)
            bar.refresh()
            if not any(x.status in ACTIVE_STATES for x in statuses.values()):
                return statuses
            time.sleep(poll_seconds)
            statuses = statuses_of()
    finally:
        bar.close()
