"""Choose post-processing on validation predictions, apply it to test predictions — through the CLI.

The two-command recipe a user runs by hand, as one call: ``nnunet-ext postprocess determine`` on
cross-validation predictions (an nnU-Net results folder with ``fold_*/validation``, or a plain folder of
validation predictions with their references), then ``nnunet-ext postprocess apply`` of the chosen
``pipeline.json`` to a folder of test predictions written with ``nnUNetv2_predict --save_probabilities``.
Both commands run in a subprocess (``python -m nnunet_ext.cli``), exactly as a user would call them, with
their output in log files; the demo and the topology-quality benchmark share this code.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Mapping, Optional, Sequence

#: files ``postprocess determine`` writes into its output folder that this module reads back
PIPELINE_FILE = "pipeline.json"


def run_cli(args: Sequence, log_file, env: Optional[Mapping[str, str]] = None) -> None:
    """Run ``nnunet-ext ARGS`` (``python -m nnunet_ext.cli``) in a subprocess, its output in ``log_file``.

    Raises ``RuntimeError`` with the last 15 lines of the log if the command fails."""
    from nnunet_ext.nnunet_commands import log_tail, run_logged

    args = [str(a) for a in args]
    status = run_logged([sys.executable, "-m", "nnunet_ext.cli", *args], log_file, env)
    if status != 0:
        raise RuntimeError(f"nnunet-ext {' '.join(args[:2])} failed with exit status {status} "
                           f"(log: {log_file}):\n{log_tail(log_file, 15)}")


#: options left out of a description while they have their "off" value
_OFF_BY_DEFAULT = {"close_loops": 0.0}


def describe_pipeline(pipeline: Mapping) -> str:
    """One line for a table: ``"hysteresis(low=0.3, high=0.5) → bridge_gaps(max_length=6)"``, or
    ``"none"`` for a pipeline without steps. Unset (``None``) options and options that are off (``close_loops=0``) are left out, and so are the class
    selectors of a dataset with one foreground class (from the pipeline's ``labels``; without them: when
    the steps mention one class only); otherwise each step names its classes (``"fill_holes[whole tumor]"``)."""
    steps = list(pipeline.get("steps", []))
    labels = pipeline.get("labels")
    if labels:
        several = sum(1 for v in labels.values() if v != 0) > 1
    else:
        several = len({c for step in steps for c in (step.get("classes") or [])}) > 1
    parts = []
    for step in steps:
        options = ", ".join(f"{k}={_short(v)}" for k, v in step.items()
                            if k not in ("op", "classes") and v is not None
                            and not (k in _OFF_BY_DEFAULT and v == _OFF_BY_DEFAULT[k]))
        name = step["op"]
        if several and step.get("classes"):
            name += "[" + ", ".join(step["classes"]) + "]"
        parts.append(f"{name}({options})" if options else name)
    return " → ".join(parts) or "none"


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return str(value)


def determine_and_apply(validation, test_predictions, output_folder, determine_folder, log_folder, *,
                        gt_folder=None, folds: Optional[Sequence[str]] = None, metric: str = "topology",
                        extra_determine_args: Sequence = (), env: Optional[Mapping[str, str]] = None) -> dict:
    """Choose a pipeline on ``validation`` and apply it to ``test_predictions``.

    Parameters
    ----------
    validation : path
        An nnU-Net results folder ``<Trainer>__<Plans>__<configuration>`` (its ``fold_*/validation``
        predictions, exported with ``--npz`` for probability-based steps), or a plain folder of
        validation predictions (``<case>.nii.gz`` + ``<case>.npz`` + ``<case>.pkl``; ``gt_folder`` is
        then required).
    test_predictions : path
        Test predictions of ``nnUNetv2_predict --save_probabilities`` (segmentations and ``.npz``).
    output_folder : path
        Where ``postprocess apply`` writes the post-processed test segmentations (replaced if present).
    determine_folder : path
        Where ``postprocess determine`` writes ``pipeline.json``, ``report.md`` and ``determination.json``
        (replaced if present).
    log_folder : path
        ``postprocess_determine.log`` and ``postprocess_apply.log`` go here.
    gt_folder : path, optional
        References of the validation cases (default for a results folder:
        ``$nnUNet_preprocessed/<Dataset>/gt_segmentations``).
    folds : sequence of str, optional
        Folds of a results folder to use (default: every fold with a ``validation`` folder).
    metric : str
        Objective of ``determine`` (default ``"topology"``: clDice − 0.1 · relative Betti-0 error with
        its one-point Dice guard).
    extra_determine_args : sequence
        Further ``determine`` options, e.g. ``("--max-dice-drop", 0.005)``.
    env : mapping, optional
        Environment of the two commands (``nnUNet_preprocessed`` must be set for a results folder
        without ``gt_folder``).

    Returns
    -------
    dict
        The chosen pipeline (``{"input": ..., "steps": [...], ...}``) as written by ``determine``.
    """
    log_folder = Path(log_folder)
    determine = ["postprocess", "determine", validation, "--metric", metric, "-o", determine_folder, "--overwrite"]
    if gt_folder is not None:
        determine += ["--gt-folder", gt_folder]
    if folds:
        determine += ["-f", *folds]
    run_cli(determine + list(extra_determine_args), log_folder / "postprocess_determine.log", env)
    pipeline_path = Path(determine_folder) / PIPELINE_FILE
    run_cli(["postprocess", "apply", "-i", test_predictions, "-o", output_folder, "-pp", pipeline_path,
             "--overwrite"], log_folder / "postprocess_apply.log", env)
    return json.loads(pipeline_path.read_text())


__all__ = ["PIPELINE_FILE", "describe_pipeline", "determine_and_apply", "run_cli"]
