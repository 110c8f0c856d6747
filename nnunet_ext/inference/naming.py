"""File names of uncertainty maps, without any heavy import (used by folder readers that skip them).

A map of case ``case_001`` and kind ``entropy`` is ``case_001_uncertainty_entropy<ending>``; folders
that hold segmentations and maps side by side must not take the maps for segmentations.
"""
from __future__ import annotations

import re

UNCERTAINTY_MAP_MARKER = "_uncertainty_"
_KIND_NAMES = ("variance", "entropy", "mutual_information")  # kept equal to uncertainty.KINDS (tested)
_MAP_RE = re.compile(r"_uncertainty_(" + "|".join(_KIND_NAMES) + r")\.[A-Za-z0-9.]+$")


def is_uncertainty_map(file_name: str) -> bool:
    """True if ``file_name`` (a base name or path) names an uncertainty map written by
    ``nnunet-ext predict``, e.g. ``case_001_uncertainty_variance.nii.gz``."""
    return _MAP_RE.search(file_name) is not None
