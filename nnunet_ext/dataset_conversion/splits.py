"""K-fold cross-validation splits in nnU-Net's ``splits_final.json`` format.

nnU-Net (>= 2.6) copies ``splits_final.json`` from the raw dataset folder into the preprocessed
folder during planning, so writing it next to ``dataset.json`` is enough for training to use it.
"""
from __future__ import annotations

from typing import Mapping, Sequence


def make_splits(case_ids: Sequence[str], n_folds: int = 5, seed: int = 12345,
                groups: Mapping[str, str] | None = None) -> list[dict[str, list[str]]]:
    """Split case ids into ``n_folds`` folds, optionally keeping groups together.

    Uses the same shuffled K-fold as nnU-Net's own ``generate_crossval_split`` (so without groups
    the result equals what nnU-Net would write with that seed). With ``groups`` (case id → group id,
    e.g. the patient of a BraTS 2023 scan), the *groups* are split and every case follows its
    group, so no patient appears in both the training and the validation part of a fold.

    Parameters
    ----------
    case_ids : sequence of str
        Training case identifiers.
    n_folds : int
        Number of folds, at least 2 and at most the number of groups.
    seed : int
        Random seed of the shuffle.
    groups : mapping, optional
        Group id of each case.

    Returns
    -------
    list of dict
        ``[{"train": [...], "val": [...]}, ...]``, one entry per fold, ids sorted.

    Examples
    --------
    >>> s = make_splits(["a", "b", "c", "d"], n_folds=2, seed=0)
    >>> sorted(s[0]["val"] + s[1]["val"])
    ['a', 'b', 'c', 'd']
    """
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    case_ids = sorted(case_ids)
    if groups is None:
        groups = {c: c for c in case_ids}
    missing = [c for c in case_ids if c not in groups]
    if missing:
        raise ValueError(f"no group given for cases {missing[:5]}")
    unique_groups = sorted({groups[c] for c in case_ids})
    if n_folds < 2:
        raise ValueError(f"need at least 2 folds, got {n_folds}")
    if n_folds > len(unique_groups):
        raise ValueError(f"cannot make {n_folds} folds from {len(unique_groups)} "
                         f"{'groups' if len(unique_groups) != len(case_ids) else 'cases'}")
    group_splits = generate_crossval_split(unique_groups, seed=seed, n_splits=n_folds)
    splits = []
    for fold in group_splits:
        val_groups = set(fold["val"])
        splits.append({
            "train": [c for c in case_ids if groups[c] not in val_groups],
            "val": [c for c in case_ids if groups[c] in val_groups],
        })
    return splits
