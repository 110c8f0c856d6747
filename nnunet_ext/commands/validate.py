"""`nnunet-ext validate -d D -c C -tr T -f FOLDS -chk CHECKPOINT...`: nnU-Net's own final validation
(same cases, same sliding-window and mirroring settings, ``summary.json``, plus ``summary_topology.json``
for our trainers) for any saved checkpoint, e.g. ``checkpoint_best_<metric>.pth`` or
``checkpoint_swa.pth``.

Where the results go, per fold and checkpoint ``checkpoint_<x>.pth``:

* ``<results folder>/fold_<f>/validation_checkpoint_<x>/`` — the validation folder of that checkpoint
  (``checkpoint.json`` says which checkpoint and epoch it holds);
* ``<Trainer>@<x>__<Plans>__<config>/`` beside the results folder — a *checkpoint view*: a results folder
  whose ``fold_<f>/validation`` and ``fold_<f>/checkpoint_final.pth`` are links to the above and to the
  checkpoint, with the links to ``dataset.json`` and ``plans.json``. Every tool that reads
  ``fold_*/validation`` of a results folder takes it as it is: ``nnunet-ext compare``,
  ``nnunet-ext postprocess determine``, ``nnunet-ext ensemble --fit-on``,
  ``nnUNetv2_find_best_configuration -tr <Trainer>@<x>``, and ``nnUNetv2_predict -tr <Trainer>@<x>``
  predicts with the chosen checkpoint (the checkpoint names its trainer class).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

__all__ = ["register", "validate_checkpoint", "view_name", "CheckpointMissingError"]

VIEW_SEPARATOR = "@"


class CheckpointMissingError(FileNotFoundError):
    """The checkpoint to validate does not exist; the message says why where it can tell."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "validate",
        help="nnU-Net's final validation for any saved checkpoint (checkpoint_best_<metric>.pth, checkpoint_swa.pth)",
        description="Runs nnU-Net's own final validation (its cases, sliding window, mirroring, summary.json; "
        "summary_topology.json for nnunet-ext trainers) with the given checkpoint, into "
        "fold_<f>/validation_<checkpoint name> of the results folder, and makes a checkpoint view "
        "<Trainer>@<name>__<Plans>__<config> beside it that compare, postprocess determine, ensemble --fit-on, "
        "nnUNetv2_find_best_configuration and nnUNetv2_predict accept as a results folder.",
    )
    p.add_argument("-d", "--dataset", required=True, help="dataset name or id")
    p.add_argument("-c", "--configuration", required=True, help="configuration, e.g. 3d_fullres")
    p.add_argument("-tr", "--trainer", default="nnUNetTrainer", help="trainer (default nnUNetTrainer)")
    p.add_argument("-p", "--plans", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    p.add_argument("-f", "--folds", nargs="+", required=True, help="folds to validate")
    p.add_argument("-chk", "--checkpoints", nargs="+", required=True, metavar="CHECKPOINT",
                   help="checkpoint file names in the fold folders, e.g. checkpoint_best_dice.pth checkpoint_swa.pth")
    p.add_argument("--npz", action="store_true", help="also save the softmax probabilities (.npz), as "
                   "nnUNetv2_train --val --npz does (needed by ensembles and probability thresholds)")
    p.add_argument("-device", default="cuda", choices=("cuda", "cpu", "mps"), help="device (default cuda)")
    p.add_argument("--no-view", action="store_true", help="do not make the <Trainer>@<name> checkpoint view")
    p.add_argument("--overwrite", action="store_true", help="replace an existing validation_<checkpoint> folder")
    p.set_defaults(func=_run)


def view_name(trainer: str, checkpoint: str) -> str:
    """``("Recipe_dice_ce", "checkpoint_best_dice.pth")`` → ``"Recipe_dice_ce@best_dice"``."""
    stem = Path(checkpoint).stem
    return f"{trainer}{VIEW_SEPARATOR}{stem[len('checkpoint_'):] if stem.startswith('checkpoint_') else stem}"


def _check_checkpoint_name(name: str) -> None:
    if os.sep in name or not name.endswith(".pth") or "__" in name:
        raise ValueError(f"-chk {name}: give the file name of a checkpoint in the fold folder "
                         f"(e.g. checkpoint_best_dice.pth), without '__'")


def _why_missing(fold_folder: Path, checkpoint: str) -> str:
    """What the run's own state says about a missing checkpoint."""
    import torch

    available = sorted(p.name for p in fold_folder.glob("checkpoint*.pth"))
    listing = f"available: {', '.join(available) if available else 'none'}"
    if checkpoint == "checkpoint_swa.pth":
        for name in ("checkpoint_final.pth", "checkpoint_latest.pth"):
            if (fold_folder / name).is_file():
                state = torch.load(fold_folder / name, map_location="cpu", weights_only=False).get("nnunet_ext_recipe")
                swa = (state or {}).get("swa")
                if state is None or (state.get("recipe") or {}).get("swa") is None:
                    return f"the run has no SWA (its recipe sets no 'swa'); {listing}"
                stopped = (state.get("early_stopping") or {}).get("stopped_epoch")
                start = state["recipe"]["swa"]["start_epoch"]
                if swa is not None and swa.get("n_averaged", 0) == 0:
                    why = f"early stopping ended the training at epoch {stopped}" if stopped is not None else \
                        "the training has not reached it"
                    return f"no weights were averaged: {why}, before SWA's start epoch {start}; {listing}"
                if name == "checkpoint_latest.pth":
                    return f"the training has not finished (checkpoint_swa.pth is written at its end); {listing}"
    elif checkpoint.startswith("checkpoint_best_"):
        return f"the metric never improved, or the recipe has no metric {Path(checkpoint).stem[16:]!r}; {listing}"
    return listing


def _link(target: Path, link: Path) -> None:
    if link.is_symlink() or link.exists():
        if link.is_dir() and not link.is_symlink():
            shutil.rmtree(link)
        else:
            link.unlink()
    link.symlink_to(os.path.relpath(target, link.parent))


def make_view(results_folder: Path, fold: str, checkpoint: str, validation: Path) -> Path:
    """The checkpoint view ``<Trainer>@<x>__<Plans>__<config>`` of one fold (links only)."""
    trainer, plans, configuration = results_folder.name.split("__")
    view = results_folder.parent / f"{view_name(trainer, checkpoint)}__{plans}__{configuration}"
    (view / f"fold_{fold}").mkdir(parents=True, exist_ok=True)
    for name in ("dataset.json", "plans.json", "dataset_fingerprint.json"):
        if (results_folder / name).is_file():
            _link(results_folder / name, view / name)
    _link(validation, view / f"fold_{fold}" / "validation")
    _link(results_folder / f"fold_{fold}" / checkpoint, view / f"fold_{fold}" / "checkpoint_final.pth")
    return view


def validate_checkpoint(dataset: str, configuration: str, fold: str, trainer_name: str, plans: str, checkpoint: str,
                        device: str = "cuda", save_probabilities: bool = False, overwrite: bool = False,
                        view: bool = True) -> Path:
    """nnU-Net's final validation of ``checkpoint`` of one fold; returns the validation folder."""
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    _check_checkpoint_name(checkpoint)
    fold_folder = Path(get_output_folder(dataset, trainer_name, plans, configuration, int(fold)))
    if not fold_folder.is_dir():
        raise FileNotFoundError(f"{fold_folder}: no such fold folder (trained with -tr {trainer_name} -p {plans}?)")
    path = fold_folder / checkpoint
    if not path.is_file():
        raise CheckpointMissingError(f"{path}: no such checkpoint: {_why_missing(fold_folder, checkpoint)}")
    target = fold_folder / f"validation_{Path(checkpoint).stem}"
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; --overwrite replaces it")
    trainer = get_trainer_from_args(dataset, configuration, int(fold), trainer_name, plans,
                                    device=torch.device(device))
    trainer.disable_checkpointing = True  # validation writes no checkpoint
    trainer.load_checkpoint(str(path))
    # only checkpoint_final.pth feeds a cascade's next stage: leave predicted_next_stage alone
    trainer.configuration_manager.configuration.pop("next_stage", None)
    staging = fold_folder / f".validation_{Path(checkpoint).stem}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    trainer.output_folder = str(staging)
    trainer.print_to_log_file(f"validation of {checkpoint} (epoch {trainer.current_epoch - 1}) into {target}")
    try:
        trainer.perform_actual_validation(save_probabilities)
        (staging / "validation" / "checkpoint.json").write_text(json.dumps(
            {"checkpoint": checkpoint, "epoch": trainer.current_epoch - 1, "trainer": trainer_name}, indent=1) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging / "validation", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if view and checkpoint != "checkpoint_final.pth":
        make_view(fold_folder.parent, str(fold), checkpoint, target)
    return target


def _run(args) -> int:
    for fold in args.folds:
        if not str(fold).isdigit():
            raise ValueError(f"-f {fold}: a fold is a number (nnU-Net's fold_<n> folders)")
    for checkpoint in args.checkpoints:
        _check_checkpoint_name(checkpoint)
    for fold in args.folds:
        for checkpoint in args.checkpoints:
            folder = validate_checkpoint(args.dataset, args.configuration, fold, args.trainer, args.plans, checkpoint,
                                         args.device, args.npz, args.overwrite, not args.no_view)
            summary = json.loads((folder / "summary.json").read_text())
            dice = summary.get("foreground_mean", {}).get("Dice")
            print(f"fold {fold} {checkpoint}: {folder}" + (f" (mean Dice {dice:.4f})" if dice is not None else ""))
    if not args.no_view:
        names = sorted({view_name(args.trainer, c) for c in args.checkpoints if c != "checkpoint_final.pth"})
        if names:
            print(f"checkpoint views (results folders for compare, postprocess determine, ensemble --fit-on, "
                  f"nnUNetv2_find_best_configuration -tr): {', '.join(names)}")
    return 0
