#!/usr/bin/env bash
# Install a single-node SLURM (Debian's slurm-wlm: slurmctld, slurmd, sbatch, squeue, sacct) and MUNGE,
# its authentication daemon, when they are missing. Needs root and the Debian package archive; exits
# non-zero with the reason otherwise (the SLURM tests then skip and print it).
set -euo pipefail

if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "installing slurm-wlm and munge needs root (apt-get); run as root or install them yourself" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null; then
    echo "no apt-get on this machine: install SLURM (slurmctld, slurmd, sbatch) and MUNGE yourself" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
command -v slurmctld >/dev/null && command -v munged >/dev/null
