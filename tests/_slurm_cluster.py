"""A real single-node SLURM cluster for the tests: MUNGE, ``slurmctld`` and ``slurmd`` on this machine.

:func:`start_cluster` installs Debian's ``slurm-wlm`` and ``munge`` when they are missing
(``tests/slurm/install_slurm.sh``: root and the Debian archive), writes a ``slurm.conf`` for localhost
into a folder of its own (``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``: no cgroups
needed; no accounting database), starts ``munged`` as the ``munge`` user, then ``slurmctld`` and ``slurmd``
on free ports, and waits until the node accepts jobs. The commands (``sbatch``, ``squeue``, ``sacct``,
``sinfo``) find the cluster through ``SLURM_CONF``, which :class:`SlurmCluster` puts into the environment.
:meth:`SlurmCluster.stop` ends the daemons. Anything that cannot be done raises :class:`ClusterUnavailable`
with the reason, which the tests print when they skip.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_SCRIPT = Path(__file__).parent / "slurm" / "install_slurm.sh"


class ClusterUnavailable(RuntimeError):
    """SLURM or MUNGE cannot be installed or started here; the message says why."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise ClusterUnavailable("cannot read MemTotal from /proc/meminfo")


def slurm_conf(folder: Path, node: str, cpus: int, memory_mb: int, ctl_port: int, node_port: int) -> str:
    """The ``slurm.conf`` of a one-node cluster on localhost with its state, spool and logs in ``folder``."""
    return "\n".join([
        "ClusterName=nnunetexttest",
        f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={ctl_port}",
        f"SlurmdPort={node_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "ReturnToService=2",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=sched_interval=2",
        "MinJobAge=3600",
        "KillWait=10",
        "SlurmdTimeout=120",
        f"StateSaveLocation={folder / 'state'}",
        f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
        f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'slurmctld.log'}",
        f"SlurmdLogFile={folder / 'slurmd.log'}",
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
        f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


@dataclass
class SlurmCluster:
    folder: Path
    env: dict
    processes: list = field(default_factory=list)

    def log_tail(self, lines: int = 20) -> str:
        out = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.folder / name
            if path.is_file():
                out.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out)

    def stop(self) -> None:
        """End slurmd and slurmctld (and the jobs slurmd still runs), then munged if this cluster started it."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def _run(command: list[str], env: dict, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def _start_munge() -> subprocess.Popen | None:
    """Start ``munged`` as the ``munge`` user unless one answers already; returns the process started."""
    if shutil.which("munge") and subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0:
        return None
    for folder in ("/run/munge", "/var/lib/munge", "/var/log/munge"):
        os.makedirs(folder, exist_ok=True)
        shutil.chown(folder, "munge", "munge")
    if not os.path.isfile("/etc/munge/munge.key"):
        subprocess.run(["runuser", "-u", "munge", "--", "mungekey", "--create"], check=False, capture_output=True)
    process = subprocess.Popen(["runuser", "-u", "munge", "--", "munged", "--foreground"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(50):
        if subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0:
            return process
        if process.poll() is not None:
            raise ClusterUnavailable(f"munged exited: {process.stderr.read().decode(errors='replace').strip()}")
        time.sleep(0.2)
    process.kill()
    raise ClusterUnavailable("munged did not answer within 10 s")


def start_cluster(folder: Path, cpus: int | None = None, timeout: float = 60) -> SlurmCluster:
    """Install (when missing) and start a one-node SLURM cluster whose files live in ``folder``."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        raise ClusterUnavailable("a SLURM cluster needs a POSIX machine")
    install = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=900)
    if install.returncode != 0:
        raise ClusterUnavailable(f"{INSTALL_SCRIPT.name} could not install slurm-wlm and munge: "
                                 f"{(install.stderr or install.stdout).strip()[-500:]}")
    if os.geteuid() != 0:
        raise ClusterUnavailable("starting slurmd (which runs jobs as their users) needs root")
    folder = Path(folder)
    for sub in ("state", "spool"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    node = socket.gethostname().split(".")[0]
    cpus = cpus or os.cpu_count() or 1
    conf = folder / "slurm.conf"
    conf.write_text(slurm_conf(folder, node, cpus, max(1024, _memory_mb() - 1024), _free_port(), _free_port()))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    cluster = SlurmCluster(folder, env)
    munged = _start_munge()
    if munged is not None:
        cluster.processes.append(munged)
    try:
        cluster.processes.append(subprocess.Popen(["slurmctld", "-D", "-i", "-f", str(conf)], env=env,
                                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        cluster.processes.append(subprocess.Popen(["slurmd", "-D", "-N", node, "-f", str(conf)], env=env,
                                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in cluster.processes[-2:]):
                raise ClusterUnavailable("slurmctld or slurmd exited at start:\n" + cluster.log_tail())
            out = _run(["sinfo", "-h", "-N", "-o", "%T"], env)
            state = out.stdout.strip()
            if out.returncode == 0 and state in ("idle", "mixed", "allocated"):
                return cluster
            time.sleep(1)
        raise ClusterUnavailable(f"the node did not become idle within {timeout:.0f} s (state {state!r}):\n"
                                 + cluster.log_tail())
    except BaseException:
        cluster.stop()
        raise
