"""`nnunet-ext train --seed N DATASET CONFIGURATION FOLD [nnUNetv2_train options]`: nnU-Net's own training
entry point, with Python's, NumPy's and torch's random generators seeded first.

nnU-Net does not seed its runs. This command seeds the three global generators in the training process
and then hands every other argument to ``nnUNetv2_train`` unchanged (same parser, same trainer lookup,
same files). What the seed fixes:

* the initial network weights and every random draw of the main process (patch sampling, augmentation when
  it runs in the main process, the validation patches);
* with ``nnUNet_n_proc_DA=0`` (augmentation in the main process) that is every draw, so two runs with the
  same seed see the same initial weights and the same batches and differ only by the order of
  floating-point sums in the kernels (measured on the CPU after a 1-epoch training: two runs one after the
  other, largest weight difference 0.0; a local and a SLURM run of a study, 6e-7 with the same validation
  Dice; CUDA kernels are not all deterministic);
* with augmentation workers, nnU-Net starts them unseeded and takes batches in the order they finish, so
  runs share their initial weights but not their batches.

Studies use it when the study file sets ``"seed"`` (docs/studies.md).
"""
from __future__ import annotations

import argparse

__all__ = ["register", "seed_everything"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="nnUNetv2_train with seeded random generators (reproducible runs)",
        description="Seeds Python's, NumPy's and torch's random generators, then runs nnUNetv2_train with the "
        "remaining arguments (dataset, configuration, fold, -tr, -p, -device, --c, --val, --npz, …). With "
        "nnUNet_n_proc_DA=0 two runs with the same seed see the same initial weights and batches.",
        usage="nnunet-ext train --seed N DATASET CONFIGURATION FOLD [nnUNetv2_train options]",
    )
    p.add_argument("--seed", type=int, required=True, help="seed of the random generators (an integer >= 0)")
    p.add_argument("nnunet_arguments", nargs=argparse.REMAINDER,
                   help="the arguments of nnUNetv2_train, passed on unchanged")
    p.set_defaults(func=_run)


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device)."""
    import random

    import numpy as np
    import torch

    if seed < 0:
        raise ValueError(f"--seed: expected an integer >= 0, got {seed}")
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def _run(args) -> int:
    import sys

    arguments = list(args.nnunet_arguments)
    if arguments[:1] == ["--"]:
        arguments = arguments[1:]
    if len(arguments) < 3:
        raise ValueError("train: expected DATASET CONFIGURATION FOLD after --seed (the arguments of nnUNetv2_train)")
    seed_everything(args.seed)
    from nnunetv2.run.run_training import run_training_entry

    saved = sys.argv
    sys.argv = ["nnUNetv2_train", *arguments]
    try:
        run_training_entry()
    finally:
        sys.argv = saved
    return 0
