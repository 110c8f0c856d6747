"""What each job of a study is doing: done, running, failed, waiting — from nnU-Net's own files first.

A job is **done** when its outputs exist (``checkpoint_final.pth`` and ``validation/summary.json`` of a
fold, ``pipeline.json`` of a post-processing, every test case's segmentation, ...) and are not older than
the outputs of the jobs it depends on (a retrained fold makes its post-processing and the report stale).
So a study resumes from what is on disk, whoever produced it: nothing done is ever run again.

For the rest, the study keeps one small record per job in ``<workdir>/jobs/`` (written by the executors):
started where (process id or SLURM job id), its log file, how it ended. A record says **running** only while
its process is alive (or SLURM lists the job as pending/running); a job whose process died without a record
of its end was interrupted and is simply run again (training continues with nnU-Net's ``--c``).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from nnunet_ext.study.graph import Job

__all__ = ["JobStatus", "outputs_done", "read_record", "write_record", "job_statuses", "log_tail", "RECORDS",
           "slurm_states", "STATUS_ORDER"]

RECORDS = "jobs"
LOGS = "logs"
#: how ``study status`` sorts and names the states
STATUS_ORDER = ("done", "running", "queued", "failed", "ready", "waiting", "blocked", "unavailable")
_SLURM_ACTIVE = {"PENDING": "queued", "CONFIGURING": "queued", "REQUEUED": "queued", "REQUEUE_HOLD": "queued",
                 "RESIZING": "running", "RUNNING": "running", "COMPLETING": "running", "SUSPENDED": "running"}


@dataclass(frozen=True)
class JobStatus:
    """The state of one job: ``status`` one of :data:`STATUS_ORDER`; ``log`` its log file; ``detail`` why
    (the failed dependency, the exit status, the SLURM job id)."""

    job: Job
    status: str
    log: str | None = None
    detail: str = ""


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def _best_is_complete(job: Job) -> bool:
    try:
        info = json.loads(Path(job.outputs[0]).read_text())
    except (OSError, ValueError):
        return False
    return set(job.meta.get("models", [])) <= set(info.get("all_results", {})) and \
        [int(f) for f in info.get("folds", [])] == [int(f) for f in job.meta.get("folds", [])]


def outputs_done(job: Job, by_id: dict[str, Job]) -> bool:
    """Whether ``job``'s outputs exist and are at least as new as those of its dependencies."""
    if not job.outputs:
        return False
    times = [_mtime(p) for p in job.outputs]
    if any(t is None for t in times):
        return False
    if job.kind == "best" and not _best_is_complete(job):
        return False
    oldest = min(times)
    for dep in job.deps:
        for path in by_id[dep].outputs:
            t = _mtime(path)
            if t is not None and t > oldest + 1.0:  # 1 s slack for file systems with coarse times
                return False
    return True


def record_path(workdir: str | os.PathLike, job: Job) -> Path:
    return Path(workdir) / RECORDS / (job.log_name[:-len(".log")] + ".json")


def log_path(workdir: str | os.PathLike, job: Job) -> Path:
    return Path(workdir) / LOGS / job.log_name


def read_record(workdir: str | os.PathLike, job: Job) -> dict | None:
    try:
        return json.loads(record_path(workdir, job).read_text())
    except (OSError, ValueError):
        return None


def write_record(workdir: str | os.PathLike, job: Job, **fields) -> dict:
    """Update the job's record with ``fields`` (atomically: a reader never sees half a file)."""
    path = record_path(workdir, job)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {**(read_record(workdir, job) or {}), **fields, "updated": time.time()}
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)
    return record


def _pid_alive(record: dict) -> bool:
    if record.get("host") != socket.gethostname() or not record.get("pid"):
        return False
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def slurm_states(job_ids: Sequence[str]) -> dict[str, str]:
    """SLURM's state of each job id (``squeue`` for queued/running ones, ``sacct`` for the rest); ids
    SLURM does not know are left out."""
    if not job_ids:
        return {}
    states: dict[str, str] = {}
    try:
        out = subprocess.run(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i %T"], capture_output=True,
                             text=True, timeout=30)
        for line in out.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2:
                states[parts[0]] = parts[1]
        missing = [j for j in job_ids if j not in states]
        if missing:
            out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", ",".join(missing), "-o", "JobID,State"],
                                 capture_output=True, text=True, timeout=30)
            for line in out.stdout.splitlines():
                parts = line.split("|")
                if len(parts) == 2 and parts[0] in missing:
                    states[parts[0]] = parts[1].split()[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return states


def job_statuses(jobs: Sequence[Job], workdir: str | os.PathLike,
                 slurm_query: Callable[[Sequence[str]], dict[str, str]] = slurm_states) -> dict[str, JobStatus]:
    """The :class:`JobStatus` of every job (``jobs`` in dependency order)."""
    by_id = {j.id: j for j in jobs}
    records = {j.id: read_record(workdir, j) for j in jobs}
    slurm_ids = [str(r["slurm_id"]) for r in records.values() if r and r.get("slurm_id")
                 and r.get("status") in ("submitted", "running")]
    slurm = slurm_query(slurm_ids) if slurm_ids else {}
    out: dict[str, JobStatus] = {}
    for job in jobs:
        record = records[job.id] or {}
        log = record.get("log") or str(log_path(workdir, job))
        if outputs_done(job, by_id):
            out[job.id] = JobStatus(job, "done", log if os.path.exists(log) else None)
            continue
        if job.argv is None:
            out[job.id] = JobStatus(job, "unavailable", None, job.meta.get("unavailable") or "")
            continue
        active = _active(record, slurm)
        if active:
            out[job.id] = JobStatus(job, active[0], log, active[1])
            continue
        vanished = record.get("status") == "finished" and not all(os.path.exists(p) for p in job.outputs)
        if record.get("status") == "failed" or vanished or (record.get("slurm_id") and record.get("status") in
                                                            ("submitted", "running")):
            detail = record.get("detail") or ("ended without writing its outputs" if vanished else "") or (f"SLURM job {record['slurm_id']}: "
                                              f"{slurm.get(str(record.get('slurm_id')), 'ended')} without its outputs"
                                              if record.get("slurm_id") else "")
            out[job.id] = JobStatus(job, "failed", log, detail)
            continue
        deps = [out[d] for d in job.deps]
        bad = [d for d in deps if d.status in ("failed", "blocked", "unavailable")]
        if job.after_any:
            pending = [d for d in deps if d.status not in ("done", "failed", "blocked", "unavailable")]
            out[job.id] = JobStatus(job, "waiting" if pending else "ready", None,
                                    f"waits for {len(pending)} job(s)" if pending else "")
        elif bad:
            out[job.id] = JobStatus(job, "blocked", None, f"needs {bad[0].job.id} ({bad[0].status})")
        elif all(d.status == "done" for d in deps):
            out[job.id] = JobStatus(job, "ready")
        else:
            waiting = [d.job.id for d in deps if d.status != "done"]
            out[job.id] = JobStatus(job, "waiting", None, f"waits for {waiting[0]}"
                                    + (f" and {len(waiting) - 1} more" if len(waiting) > 1 else ""))
    return out


def _active(record: dict, slurm: dict[str, str]) -> tuple[str, str] | None:
    if record.get("status") != "running" and record.get("status") != "submitted":
        return None
    if record.get("slurm_id"):
        state = slurm.get(str(record["slurm_id"]))
        if state in _SLURM_ACTIVE:
            return _SLURM_ACTIVE[state], f"SLURM job {record['slurm_id']} {state.lower()}"
        return None
    if record.get("status") == "running" and _pid_alive(record):
        return "running", f"process {record['pid']}"
    return None


def log_tail(path: str | None, lines: int = 10) -> str:
    """The last ``lines`` lines of a log file ('' if there is none)."""
    if not path or not os.path.isfile(path):
        return ""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 64 * 1024))
        text = f.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])
