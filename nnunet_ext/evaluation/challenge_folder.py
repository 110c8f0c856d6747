"""``nnunet-ext evaluate --challenge``: a prediction folder scored as a challenge leaderboard does.

Rows (``metrics_per_case.csv``) and the summary (``metrics_summary.json``, bootstrap CIs) have
the same layout as the ordinary evaluation, so ``nnunet-ext compare`` reads them; the columns are
:func:`nnunet_ext.evaluation.challenges.challenge_columns`. The leaderboard value of each score is
its mean over cases (``summary["classes"][<region>][<column>]["mean"]``).
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..image_io import ImageReadError, check_image_file, label_values_of_dataset_json
from .challenges import (
    brats_lesion_wise, challenge_columns, check_challenge, instances_from_semantic, monusac_pq,
    vesuvius_leaderboard_score,
)
from .folder import (
    EVALUATION_OUTPUTS, _ignore_label, _list_cases, _read, check_output_folder, load_dataset_json,
    summarize_rows, write_evaluation_outputs,
)


def challenge_case_rows(challenge: str, case: str, pred: np.ndarray, ref: np.ndarray, spacing,
                        ignore: Optional[int] = None, classes=(), brats_subchallenge: str = "GLI",
                        workers: int = 1, max_memory_gb: Optional[float] = None,
                        progress: bool = False) -> List[Dict[str, object]]:
    """The per-case rows of one (prediction, reference) label-map pair."""
    check_challenge(challenge)
    if challenge == "vesuvius":
        res = vesuvius_leaderboard_score(pred, ref, workers=workers, max_memory_gb=max_memory_gb,
                                         progress=progress, ignore_label=2 if ignore is None else ignore)
        return [{"case": case, "class": "surface", "labels": "1", "status": "ok",
                 **{k: float(res[k]) for k in challenge_columns(challenge)}}]
    if challenge in ("brats2023", "brats2024"):
        year = 2023 if challenge == "brats2023" else 2024
        res = brats_lesion_wise(pred, ref, spacing, year=year, subchallenge=brats_subchallenge)
        return [{"case": case, "class": region, "labels": "", "status": "ok",
                 **{k: float(v) for k, v in values.items()}} for region, values in res.items()]
    # MoNuSAC: the ignore label of the converted dataset marks the ambiguous regions
    ambiguous = None if ignore is None else ref == ignore
    res = monusac_pq(instances_from_semantic(pred, classes), instances_from_semantic(ref, classes),
                     ambiguous)
    if not np.isfinite(res["pq"]):
        return []  # no reference nucleus: the leaderboard scores no class of this sub-image
    return [{"case": case, "class": "nuclei", "labels": "+".join(map(str, classes)), "status": "ok",
             "pq": res["pq"]}]


def evaluate_challenge_folders(
    pred_folder: str,
    ref_folder: str,
    dataset_json: str,
    challenge: str,
    output_folder: Optional[str] = None,
    brats_subchallenge: str = "GLI",
    workers: int = 1,
    max_memory_gb: Optional[float] = None,
    n_resamples: int = 10000,
    seed: int = 0,
    progress: bool = True,
    only_predicted: bool = False,
    write: bool = True,
    overwrite: bool = False,
) -> Tuple[List[Dict[str, object]], dict]:
    """Score every case of a prediction folder as the challenge's leaderboard does.

    Label maps are read with the dataset's reader (dataset.json ``file_ending``); they must be in
    the challenge's own label convention (BraTS 2023: 1 NETC, 2 SNFH, 3 ET; 2024 GLI adds 4 RC —
    back-convert nnU-Net predictions first; Vesuvius: ignore label 2; MoNuSAC: class labels
    1..4, the dataset's ignore label marking ambiguous regions). Cases run one after another;
    ``workers`` processes share the work inside a case (Vesuvius octants).
    """
    from tqdm import tqdm

    check_challenge(challenge)
    dj = load_dataset_json(dataset_json)
    ignore = _ignore_label(dj)
    fe = dj["file_ending"]
    files = _list_cases(pred_folder, ref_folder, fe, only_predicted)
    out = pred_folder if output_folder is None else output_folder
    if write:
        check_output_folder(out, EVALUATION_OUTPUTS, overwrite)
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

    check_image_file(os.path.join(ref_folder, files[0]), "reference")
    reader = determine_reader_writer_from_dataset_json(dj, os.path.join(ref_folder, files[0]))()
    allowed = label_values_of_dataset_json(dj)
    classes = tuple(v for v in sorted(allowed) if v != 0 and v != ignore)
    rows: List[Dict[str, object]] = []
    for f in tqdm(files, desc=f"scoring ({challenge})", unit="case", disable=not progress):
        case = f[: -len(fe)]
        ref, sp, _ = _read(reader, os.path.join(ref_folder, f), allowed, "reference")
        pred, _, _ = _read(reader, os.path.join(pred_folder, f), allowed, "prediction")
        if pred.shape != ref.shape:
            raise ImageReadError(None, f"case {case}: prediction has shape {pred.shape}, reference "
                                       f"{ref.shape}")
        rows.extend(challenge_case_rows(challenge, case, pred, ref, sp, ignore, classes,
                                        brats_subchallenge, workers, max_memory_gb))
    if not rows:
        raise ValueError(f"no case of {ref_folder} could be scored for {challenge}")
    columns = list(challenge_columns(challenge))
    summary = summarize_rows(rows, columns, n_resamples=n_resamples, seed=seed)
    summary["settings"] = {"challenge": challenge, "columns": columns,
                           "brats_subchallenge": brats_subchallenge
                           if challenge.startswith("brats") else None,
                           "ignore_label": ignore}
    if write:
        write_evaluation_outputs(rows, summary, out)
    return rows, summary
