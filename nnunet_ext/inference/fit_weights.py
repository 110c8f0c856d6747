"""Fit ensemble weights on cross-validation predictions by a grid search maximising mean Dice.

Each ensemble member (a trainer/configuration) contributes its cross-validation probabilities:
either a folder of ``<case>.npz`` files, or an nnU-Net model folder whose
``fold_*/validation/<case>.npz`` (``nnUNetv2_train … --val --npz``) together cover the training
cases. For every candidate weight vector ``w`` on the simplex grid
``{w : w_m = k_m * step, k_m >= 0 integer, sum_m w_m = 1}`` the weighted mean probabilities are
turned into a segmentation exactly as :mod:`nnunet_ext.inference.ensemble` does, and scored
against the reference segmentations with nnU-Net's summary Dice: for each foreground class (or
region) the mean over cases of the per-case Dice (cases where the class is absent from both
reference and prediction are skipped, as nnU-Net does), then the mean over classes
(``foreground_mean``). Voxels with the ignore label do not count. The best candidate wins; ties go
to the candidate closest to equal weights.

Each case is loaded once and all candidates are scored on it, so memory holds one case of every
member at a time.
"""
from __future__ import annotations

import itertools
import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from math import comb
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from nnunet_ext.inference.ensemble import load_probabilities

#: refuse grids larger than this (choose a coarser step)
MAX_CANDIDATES = 20000


def simplex_grid(n_members: int, step: float) -> np.ndarray:
    """All weight vectors on the simplex whose entries are multiples of ``step``.

    Parameters
    ----------
    n_members : int
        M >= 1.
    step : float
        In (0, 1]; ``1/step`` must be (close to) an integer.

    Returns
    -------
    np.ndarray, float64, shape (N, M)
        ``N = comb(n + M - 1, M - 1)`` with ``n = round(1/step)``; rows sum to 1.

    Raises
    ------
    ValueError
        For a bad step or more than :data:`MAX_CANDIDATES` candidates.
    """
    if n_members < 1:
        raise ValueError("at least one ensemble member is needed")
    if not 0 < step <= 1:
        raise ValueError(f"grid step must be in (0, 1], got {step}")
    n = int(round(1.0 / step))
    if abs(n * step - 1.0) > 1e-6:
        raise ValueError(f"grid step {step} does not divide 1 (use e.g. 0.1, 0.125, 0.2, 0.25)")
    count = comb(n + n_members - 1, n_members - 1)
    if count > MAX_CANDIDATES:
        raise ValueError(f"{count} candidate weight vectors for {n_members} members at step {step}; "
                         f"use a coarser step (at most {MAX_CANDIDATES} candidates)")
    rows = []
    # stars and bars: positions of M-1 bars among n + M - 1 slots
    for bars in itertools.combinations(range(n + n_members - 1), n_members - 1):
        edges = (-1, *bars, n + n_members - 1)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(n_members)])
    return np.asarray(rows, dtype=np.float64) / n


def collect_cv_files(source: str, folds: Optional[Sequence[Union[int, str]]] = None) -> Dict[str, str]:
    """Cross-validation ``.npz`` files of one ensemble member, by case.

    Parameters
    ----------
    source : str
        A folder holding ``<case>.npz`` directly, or an nnU-Net model folder with
        ``fold_*/validation/<case>.npz``.
    folds : sequence of int or str, optional
        Folds to use for a model folder (default: every ``fold_*`` with a validation folder,
        except ``fold_all``).

    Returns
    -------
    dict of str to str
        case -> ``.npz`` path.

    Raises
    ------
    FileNotFoundError, ValueError
        No predictions found, or a case predicted in two folds.
    """
    if not os.path.isdir(source):
        raise FileNotFoundError(f"{source} is not a folder")
    direct = sorted(f for f in os.listdir(source) if f.endswith(".npz"))
    if direct:
        return {f[:-4]: os.path.join(source, f) for f in direct}
    if folds is None:
        folds = sorted(d[len("fold_"):] for d in os.listdir(source)
                       if d.startswith("fold_") and d != "fold_all"
                       and os.path.isdir(os.path.join(source, d, "validation")))
    out: Dict[str, str] = {}
    for f in folds:
        val = os.path.join(source, f"fold_{f}", "validation")
        if not os.path.isdir(val):
            raise FileNotFoundError(f"{val} does not exist: run nnUNetv2_train … {f} --val --npz")
        for name in sorted(os.listdir(val)):
            if name.endswith(".npz"):
                case = name[:-4]
                if case in out:
                    raise ValueError(f"case {case} is predicted in two folds of {source} ({out[case]}, {val})")
                out[case] = os.path.join(val, name)
    if not out:
        raise FileNotFoundError(f"no .npz predictions in {source} (nor in its fold_*/validation folders); "
                                f"export them with --save_probabilities or nnUNetv2_train … --val --npz")
    return out


def _masks_and_names(label_manager) -> Tuple[List, List[str]]:
    if label_manager.has_regions:
        items = list(label_manager.foreground_regions)
    else:
        items = list(label_manager.foreground_labels)
    return items, [str(i) for i in items]


def _to_mask(seg: np.ndarray, item) -> np.ndarray:
    if np.isscalar(item):
        return seg == item
    return np.isin(seg, np.asarray(item))


def score_candidates_on_case(probabilities: Sequence[np.ndarray], reference: np.ndarray, candidates: np.ndarray,
                             label_manager) -> np.ndarray:
    """Per-class Dice of every candidate ensemble on one case.

    Parameters
    ----------
    probabilities : sequence of np.ndarray, each (C, *S)
        The members' probabilities of the case.
    reference : np.ndarray, shape S
        Reference label map.
    candidates : np.ndarray, shape (N, M)
        Weight vectors (rows sum to 1).
    label_manager : LabelManager
        Labels/regions and ignore label of the dataset.

    Returns
    -------
    np.ndarray, float64, shape (N, K)
        Dice per candidate and foreground class/region; NaN where the class is absent from both
        reference and prediction.
    """
    items, _ = _masks_and_names(label_manager)
    stack = np.stack([np.asarray(p, dtype=np.float32) for p in probabilities])  # (M, C, *S)
    if stack.shape[2:] != reference.shape:
        raise ValueError(f"probabilities of shape {stack.shape[2:]} do not match the reference of shape "
                         f"{reference.shape}")
    valid = None if not label_manager.has_ignore_label else reference != label_manager.ignore_label
    ref_masks = [_to_mask(reference, it) for it in items]
    if valid is not None:
        ref_masks = [m & valid for m in ref_masks]
    out = np.full((len(candidates), len(items)), np.nan)
    for ci, w in enumerate(candidates):
        avg = np.tensordot(w.astype(np.float32), stack, axes=1)
        seg = label_manager.convert_probabilities_to_segmentation(avg)
        for k, (it, ref) in enumerate(zip(items, ref_masks)):
            pred = _to_mask(seg, it)
            if valid is not None:
                pred &= valid
            tp = np.count_nonzero(pred & ref)
            denom = np.count_nonzero(pred) + np.count_nonzero(ref)
            if denom > 0:
                out[ci, k] = 2.0 * tp / denom
    return out


@dataclass
class FitResult:
    """Outcome of :func:`fit_ensemble_weights`.

    Attributes
    ----------
    weights : list of float
        Best weight vector (sums to 1), one per member.
    score : float
        Its mean Dice (``foreground_mean``).
    equal_weights_score : float
        Mean Dice of the equal-weight ensemble (nnU-Net's default) on the same cases.
    per_class : dict of str to float
        Mean Dice per foreground class/region of the best candidate.
    members : list of str
        The CV sources, in weight order.
    n_cases : int
        Cases scored.
    grid_step : float
    top : list of dict
        The ten best candidates with their scores.
    metric : str
    """

    weights: List[float]
    score: float
    equal_weights_score: float
    per_class: Dict[str, float]
    members: List[str]
    n_cases: int
    grid_step: float
    top: List[dict] = field(default_factory=list)
    metric: str = "mean over foreground classes/regions of the mean Dice over cases (nnU-Net foreground_mean)"

    def save(self, path: str) -> None:
        """Write as JSON (readable by :func:`nnunet_ext.inference.ensemble.read_weights_file`)."""
        with open(path, "w") as f:
            json.dump(asdict(self), f, indent=1)


def fit_ensemble_weights(cv_sources: Sequence[str], reference_folder: str, dataset_json: Union[str, dict],
                         plans: Union[str, dict], step: float = 0.1,
                         folds: Optional[Sequence[Union[int, str]]] = None) -> FitResult:
    """Grid search for the ensemble weights with the best cross-validation Dice.

    Parameters
    ----------
    cv_sources : sequence of str
        One per member: a folder of ``.npz`` or a model folder with ``fold_*/validation`` (see
        :func:`collect_cv_files`).
    reference_folder : str
        Reference segmentations ``<case><file_ending>`` (e.g. nnU-Net's
        ``nnUNet_preprocessed/<Dataset>/gt_segmentations`` or ``labelsTr``).
    dataset_json, plans : str or dict
        Of the dataset/model (labels, regions, ignore label, file ending, reader/writer).
    step : float
        Grid spacing of the weights.
    folds : sequence, optional
        Folds used from model folders.

    Returns
    -------
    FitResult

    Raises
    ------
    ValueError, FileNotFoundError
        Members that do not cover the same cases, missing references, shape mismatches.
    """
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    dj = dataset_json if isinstance(dataset_json, dict) else json.load(open(dataset_json))
    pl = plans if isinstance(plans, dict) else json.load(open(plans))
    pm = PlansManager(pl)
    lm = pm.get_label_manager(dj)
    rw = pm.image_reader_writer_class()
    files = [collect_cv_files(s, folds) for s in cv_sources]
    cases = sorted(set(files[0]))
    for s, f in zip(cv_sources[1:], files[1:]):
        if set(f) != set(cases):
            missing = sorted(set(cases) - set(f))
            extra = sorted(set(f) - set(cases))
            raise ValueError(f"{s} does not cover the same cases as {cv_sources[0]}: missing "
                             f"{missing[:5]}{'…' if len(missing) > 5 else ''}, extra {extra[:5]}")
    candidates = simplex_grid(len(cv_sources), step)
    equal = np.full((1, len(cv_sources)), 1.0 / len(cv_sources))
    all_candidates = np.concatenate([candidates, equal])
    per_case = []
    for case in cases:
        ref_file = os.path.join(reference_folder, case + dj["file_ending"])
        if not os.path.isfile(ref_file):
            raise FileNotFoundError(f"reference {ref_file} does not exist (case {case})")
        reference = rw.read_seg(ref_file)[0][0]
        probs = [load_probabilities(f[case]) for f in files]
        for s, p in zip(cv_sources, probs):
            if p.shape[1:] != reference.shape:
                raise ValueError(f"{files[cv_sources.index(s)][case]} has shape {p.shape[1:]}, the reference "
                                 f"{ref_file} {reference.shape}")
        per_case.append(score_candidates_on_case(probs, reference, all_candidates, lm))
    if not cases:
        raise ValueError(f"no cases to fit on in {cv_sources[0]}")
    scores = np.stack(per_case)  # (cases, N + 1, K)
    with warnings.catch_warnings():
        # a class absent from every reference and prediction has no Dice (all NaN): nanmean warns
        warnings.simplefilter("ignore", RuntimeWarning)
        class_means = np.nanmean(scores, axis=0)  # (N + 1, K)
        means = np.nanmean(class_means, axis=1)  # (N + 1,)
    grid_means = np.nan_to_num(means[:-1], nan=-1.0)
    distance = np.abs(candidates - 1.0 / len(cv_sources)).sum(1)
    # best score first, then closest to equal weights
    order = np.lexsort((distance, -grid_means))
    best = order[0]
    _, names = _masks_and_names(lm)
    top = [{"weights": candidates[i].round(6).tolist(), "score": float(means[i])} for i in order[:10]]
    return FitResult(weights=candidates[best].round(6).tolist(), score=float(means[best]),
                     equal_weights_score=float(means[-1]),
                     per_class={n: float(v) for n, v in zip(names, class_means[best])},
                     members=[os.path.abspath(s) for s in cv_sources], n_cases=len(cases), grid_step=step,
                     top=top)
