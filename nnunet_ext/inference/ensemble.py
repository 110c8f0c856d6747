"""Weighted ensembles of nnU-Net probability folders (``.npz`` + ``.pkl``), like ``nnUNetv2_ensemble``.

Every input folder holds, per case, nnU-Net's ``<case>.npz`` (key ``probabilities``, shape
(C, *S) in the original image grid) and ``<case>.pkl`` (the case's properties), as written by
``nnUNetv2_predict --save_probabilities`` or ``nnunet-ext predict --save_probabilities``. The
ensemble of case ``i`` is

    P_i = sum_m w_m P_{i,m} / sum_m w_m

and its segmentation is ``label_manager.convert_probabilities_to_segmentation(P_i)`` (argmax for
labels, thresholds at 0.5 in ``regions_class_order`` for regions), written with the plans'
reader/writer and the properties of the first folder, exactly as nnU-Net's ``merge_files`` does.
With equal weights the arithmetic is nnU-Net's own (sum in float32, divide by the number of
folders), so the output equals ``nnUNetv2_ensemble``'s bit for bit.
"""
from __future__ import annotations

import json
import multiprocessing
import os
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from nnunet_ext.staged_output import staged_output


def check_weights(weights: Optional[Sequence[float]], n: int) -> Optional[np.ndarray]:
    """Validate ensemble weights.

    Parameters
    ----------
    weights : sequence of float or None
        One weight per member; None means equal weights.
    n : int
        Number of members.

    Returns
    -------
    np.ndarray of float64, shape (n,), or None
        None when the weights are None or all equal (then nnU-Net's plain mean is used).

    Raises
    ------
    ValueError
        Wrong count, negative or non-finite values, or all zero.
    """
    if weights is None:
        return None
    w = np.asarray([float(x) for x in weights], dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"{w.size} weights given for {n} ensemble members")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"weights must be finite and non-negative, got {w.tolist()}")
    if w.sum() <= 0:
        raise ValueError("weights must not all be zero")
    if np.all(w == w[0]):
        return None
    return w


def load_probabilities(npz_file: str) -> np.ndarray:
    """The ``probabilities`` array of an nnU-Net ``.npz`` file.

    Parameters
    ----------
    npz_file : str

    Returns
    -------
    np.ndarray, shape (C, *S)

    Raises
    ------
    FileNotFoundError, ValueError
        Missing file, or no ``probabilities`` key (with the keys that are there).
    """
    from ..image_io import load_npz_probabilities

    if not os.path.lexists(npz_file):
        raise FileNotFoundError(f"{npz_file} does not exist")
    return load_npz_probabilities(npz_file)


def weighted_average_probabilities(files: Sequence[str], weights: Optional[Sequence[float]] = None) -> np.ndarray:
    """Weighted mean of the probability arrays of several ``.npz`` files.

    Parameters
    ----------
    files : sequence of str
        ``.npz`` files of the same case, one per member.
    weights : sequence of float, optional
        One per file (default: equal, computed exactly as nnU-Net's ``average_probabilities``).

    Returns
    -------
    np.ndarray, float32, shape (C, *S)

    Raises
    ------
    ValueError
        When the arrays' shapes differ (naming both files).
    """
    if len(files) == 0:
        raise ValueError("at least one file is needed")
    w = check_weights(weights, len(files))
    avg = None
    for i, f in enumerate(files):
        p = load_probabilities(f)
        if avg is not None and p.shape != avg.shape:
            raise ValueError(f"{f} has probabilities of shape {p.shape}, {files[0]} of shape {avg.shape}")
        if w is None:
            # nnU-Net's average_probabilities: float32 sum, then divide by the count
            if avg is None:
                avg = p.astype(np.float32) if p.dtype != np.float32 else p
            else:
                avg += p
        else:
            term = p.astype(np.float32) * np.float32(w[i])
            avg = term if avg is None else avg + term
    avg /= len(files) if w is None else np.float32(w.sum())
    return avg


def list_cases(folder: str) -> List[str]:
    """Case identifiers (``.npz`` stems) of a probability folder, sorted.

    Parameters
    ----------
    folder : str

    Raises
    ------
    FileNotFoundError
        When the folder does not exist or holds no ``.npz``.
    """
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder} is not a folder")
    cases = sorted(f[:-4] for f in os.listdir(folder) if f.endswith(".npz"))
    if not cases:
        raise FileNotFoundError(f"{folder} holds no .npz probabilities; predict with --save_probabilities")
    return cases


def common_cases(folders: Sequence[str]) -> List[str]:
    """Cases present in every folder; an error that lists what is missing where otherwise.

    Parameters
    ----------
    folders : sequence of str

    Returns
    -------
    list of str
        Sorted case identifiers.
    """
    per_folder = [set(list_cases(f)) for f in folders]
    union = set().union(*per_folder)
    problems = [f"{folder} lacks {', '.join(sorted(union - have)[:10])}"
                + (f" and {len(union - have) - 10} more" if len(union - have) > 10 else "")
                for folder, have in zip(folders, per_folder) if union - have]
    if problems:
        raise ValueError("not all folders hold the same cases: " + "; ".join(problems))
    return sorted(union)


def _load_json_or_dict(value: Union[None, str, dict], folder: str, name: str) -> dict:
    if isinstance(value, dict):
        return value
    path = value if value is not None else os.path.join(folder, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist; pass the {name} of the model explicitly")
    with open(path) as f:
        return json.load(f)


def merge_case(files: Sequence[str], output_file_truncated: str, file_ending: str, reader_writer, label_manager,
               weights: Optional[Sequence[float]] = None, save_probabilities: bool = False) -> None:
    """Ensemble one case and write its segmentation (and probabilities).

    Parameters
    ----------
    files : sequence of str
        The case's ``.npz`` files, one per member; the ``.pkl`` beside the first gives the properties.
    output_file_truncated : str
        Output path without file ending.
    file_ending : str
        The dataset's file ending.
    reader_writer : BaseReaderWriter
        Instance of the plans' reader/writer class.
    label_manager : LabelManager
        Of the plans and dataset.json.
    weights : sequence of float, optional
        Member weights (default: equal).
    save_probabilities : bool
        Also write ``<case>.npz`` and ``<case>.pkl``.
    """
    from batchgenerators.utilities.file_and_folder_operations import load_pickle, save_pickle

    pkl = files[0][:-4] + ".pkl"
    if not os.path.isfile(pkl):
        raise FileNotFoundError(f"{pkl} does not exist: nnU-Net writes it with the .npz (--save_probabilities)")
    properties = load_pickle(pkl)
    probabilities = weighted_average_probabilities(files, weights)
    segmentation = label_manager.convert_probabilities_to_segmentation(probabilities)
    reader_writer.write_seg(segmentation, output_file_truncated + file_ending, properties)
    if save_probabilities:
        np.savez_compressed(output_file_truncated + ".npz", probabilities=probabilities)
        save_pickle(properties, output_file_truncated + ".pkl")


def ensemble_folders_weighted(input_folders: Sequence[str], output_folder: str,
                              weights: Optional[Sequence[float]] = None, save_probabilities: bool = False,
                              num_processes: int = 1, dataset_json: Union[None, str, dict] = None,
                              plans: Union[None, str, dict] = None, overwrite: bool = False) -> List[str]:
    """Weighted ensemble of probability folders (``nnUNetv2_ensemble`` with weights).

    Parameters
    ----------
    input_folders : sequence of str
        Prediction folders with ``.npz``/``.pkl`` per case (folds, trainers or configurations).
    output_folder : str
        Created if needed; gets the segmentations, ``dataset.json``, ``plans.json`` and
        ``ensemble_weights.json``, all moved into place only after every case was ensembled (a
        failure leaves the folder as it was).
    weights : sequence of float, optional
        One per input folder (default: equal). Normalised by their sum.
    save_probabilities : bool
        Also write the ensembled ``.npz``/``.pkl``.
    num_processes : int
        Cases merged in parallel (spawned worker processes, as nnU-Net); 1 runs in this process.
    dataset_json, plans : str or dict, optional
        Default: ``dataset.json`` / ``plans.json`` of the first input folder (as nnU-Net does).
    overwrite : bool
        Replace existing outputs; otherwise existing outputs are an error.

    Returns
    -------
    list of str
        The case identifiers written.

    Raises
    ------
    FileExistsError
        When outputs exist and ``overwrite`` is False.
    ValueError, FileNotFoundError
        Inconsistent folders or weights (the message names the folder/file).
    """
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    if len(input_folders) < 1:
        raise ValueError("at least one input folder is needed")
    if num_processes < 1:
        raise ValueError(f"num_processes must be at least 1, got {num_processes}")
    w = check_weights(weights, len(input_folders))
    dj = _load_json_or_dict(dataset_json, input_folders[0], "dataset.json")
    pl = _load_json_or_dict(plans, input_folders[0], "plans.json")
    if "file_ending" not in dj:
        raise KeyError("dataset.json has no 'file_ending'")
    cases = common_cases(input_folders)
    pm = PlansManager(pl)
    rw = pm.image_reader_writer_class()
    lm = pm.get_label_manager(dj)
    outputs = [os.path.join(output_folder, c) for c in cases]
    if not overwrite:
        existing = [o + dj["file_ending"] for o in outputs if os.path.exists(o + dj["file_ending"])]
        if existing:
            raise FileExistsError(f"{len(existing)} outputs exist already (e.g. {existing[0]}); "
                                  f"use --overwrite to replace them")
    # everything is written into a temporary folder inside output_folder and moved into place only
    # when every case succeeded: a failed read leaves no half-made output behind
    with staged_output(output_folder, ".ensemble-") as tmp:
        with open(os.path.join(tmp, "dataset.json"), "w") as f:
            json.dump(dj, f, indent=1)
        with open(os.path.join(tmp, "plans.json"), "w") as f:
            json.dump(pl, f, indent=1)
        n = len(input_folders)
        used = [1.0 / n] * n if w is None else (w / w.sum()).tolist()
        with open(os.path.join(tmp, "ensemble_weights.json"), "w") as f:
            json.dump({"folders": [os.path.abspath(x) for x in input_folders], "weights": used}, f, indent=1)
        jobs = [([os.path.join(fl, c + ".npz") for fl in input_folders], os.path.join(tmp, c), dj["file_ending"],
                 rw, lm, None if w is None else w.tolist(), save_probabilities) for c in cases]
        if num_processes == 1:
            for job in jobs:
                merge_case(*job)
        else:
            with multiprocessing.get_context("spawn").Pool(num_processes) as pool:
                pool.starmap(merge_case, jobs)
    return cases


def read_weights_file(path: str) -> Dict[str, object]:
    """Read an ``ensemble_weights.json`` (as written by the ensemble and the weight fitting).

    Parameters
    ----------
    path : str

    Returns
    -------
    dict
        With at least ``weights`` (list of float).
    """
    with open(path) as f:
        d = json.load(f)
    if "weights" not in d:
        raise KeyError(f"{path} has no 'weights'")
    return d
