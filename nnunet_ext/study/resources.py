"""Resources per job: nnU-Net's augmentation workers, the settings that kill them, and SLURM's limits.

nnU-Net trains with ``nnUNet_n_proc_DA`` augmentation worker processes per GPU beside one main process per
GPU. Without the variable it guesses from the host name (12 on most machines), so a SLURM job with one
CPU per task starts 12 workers on one core: they miss nnU-Net's timeouts and training stops with
"One or more background workers are no longer alive". A study therefore always sets the variable from
the CPUs the job is given (:func:`augmentation_workers`) and refuses GPU trainings that leave no worker
per GPU, or too little memory for the workers (:func:`check_training_resources`).
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

__all__ = ["augmentation_workers", "check_training_resources", "NodeLimits", "parse_sinfo", "cluster_limits",
           "check_against_cluster", "MAX_WORKERS_PER_GPU", "MAIN_PROCESS_GB", "WORKER_GB"]

#: nnU-Net's own choice on its large machines; more workers than this only cost memory
MAX_WORKERS_PER_GPU = 12
#: memory floor of one training process (network, optimizer, pinned batches) and of one augmentation worker
MAIN_PROCESS_GB = 4.0
WORKER_GB = 1.0


def augmentation_workers(cpus: int, gpus: int) -> int:
    """``nnUNet_n_proc_DA`` for a job with ``cpus`` CPUs and ``gpus`` GPUs: per GPU (or for the one CPU
    process), the CPUs left after the main process, at most :data:`MAX_WORKERS_PER_GPU`.

    >>> augmentation_workers(8, 1), augmentation_workers(2, 0), augmentation_workers(1, 0), augmentation_workers(32, 4)
    (7, 1, 0, 7)
    """
    processes = max(1, gpus)
    return max(0, min(MAX_WORKERS_PER_GPU, (cpus - processes) // processes))


def check_training_resources(resources: dict, where: str) -> None:
    """Refuse training resources known to kill nnU-Net's augmentation workers.

    A GPU training needs at least one worker per GPU (``cpus >= 2 × gpus``): with none, nnU-Net augments in
    the main process and the GPU idles; a SLURM job whose workers outnumber its CPUs loses them to nnU-Net's
    timeouts. And the memory must hold the main processes and the workers
    (``MAIN_PROCESS_GB`` per GPU + ``WORKER_GB`` per worker), or the kernel's OOM killer takes a worker.
    """
    cpus, gpus, memory = resources["cpus"], resources["gpus"], resources["memory_gb"]
    if gpus > 0 and cpus < 2 * gpus:
        raise ValueError(f"{where}.cpus: {cpus} CPU(s) for {gpus} GPU(s) leave no augmentation worker per GPU "
                         f"(nnU-Net needs a main process and >= 1 worker per GPU; 8 or more CPUs per GPU are usual): "
                         f"give at least {2 * gpus}")
    workers = augmentation_workers(cpus, gpus)
    need = MAIN_PROCESS_GB * max(1, gpus) + WORKER_GB * workers * max(1, gpus)
    if memory < need:
        raise ValueError(f"{where}.memory_gb: {memory:g} GB cannot hold {max(1, gpus)} training process(es) and "
                         f"{workers * max(1, gpus)} augmentation worker(s) (about {need:g} GB); out-of-memory kills "
                         f"workers mid-training: give more memory or fewer CPUs")


@dataclass(frozen=True)
class NodeLimits:
    """What the largest node of a SLURM partition offers (from ``sinfo``)."""

    partition: str
    cpus: int
    memory_gb: float
    gpus: int
    time_minutes: int | None  # None: no limit


def _slurm_minutes(text: str) -> int | None:
    text = text.strip()
    if text in ("infinite", "UNLIMITED", "n/a", ""):
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = [int(p) for p in text.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    hours, minutes, seconds = parts[-3:]
    return days * 1440 + hours * 60 + minutes + (1 if seconds else 0)


def parse_sinfo(text: str) -> dict[str, NodeLimits]:
    """Per partition, the largest node in ``sinfo -h -o "%P %c %m %G %l"`` output.

    >>> parse_sinfo("gpu* 32 256000 gpu:a100:4 2-00:00:00\\ncpu 64 512000 (null) infinite")["gpu"].gpus
    4
    """
    limits: dict[str, NodeLimits] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        partition = fields[0].rstrip("*")
        cpus = int(re.sub(r"\D.*$", "", fields[1]) or 0)
        memory = float(re.sub(r"\D.*$", "", fields[2]) or 0) / 1000.0
        gpus = sum(int(m.group(1)) for m in re.finditer(r"gpu(?::[^:,()]+)?:(\d+)", fields[3]))
        time = _slurm_minutes(fields[4])
        old = limits.get(partition)
        if old is not None:
            cpus, memory, gpus = max(cpus, old.cpus), max(memory, old.memory_gb), max(gpus, old.gpus)
        limits[partition] = NodeLimits(partition, cpus, memory, gpus, time)
    return limits


def cluster_limits() -> dict[str, NodeLimits] | None:
    """The partitions of the reachable SLURM cluster, or ``None`` when ``sinfo`` is not available."""
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P %c %m %G %l"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_sinfo(out.stdout) if out.returncode == 0 else None


def check_against_cluster(resources: dict, where: str, limits: dict[str, NodeLimits],
                          partition: str | None) -> None:
    """Refuse a job request no node of the partition can satisfy (else SLURM queues it forever)."""
    if not limits:
        return
    if partition is None:
        node = max(limits.values(), key=lambda n: (n.gpus, n.cpus, n.memory_gb))
    else:
        if partition not in limits:
            raise ValueError(f"slurm.partition: {partition!r} is not a partition of this cluster ({sorted(limits)})")
        node = limits[partition]
    for field, have, unit in (("cpus", node.cpus, ""), ("gpus", node.gpus, ""), ("memory_gb", node.memory_gb, " GB")):
        if resources[field] > have:
            raise ValueError(f"{where}.{field}: {resources[field]:g}{unit} asked for, but the largest node of "
                             f"partition {node.partition!r} has {have:g}{unit}")
    if node.time_minutes is not None and resources["time"] > node.time_minutes:
        raise ValueError(f"{where}.time: {resources['time']} minutes asked for, but partition {node.partition!r} "
                         f"allows {node.time_minutes}")
