"""Vesuvius leaderboard score against the host's ``topometrics`` package's own output.

``data/vesuvius_topometrics_scores.json`` holds what the host's package computed, with the
leaderboard's parameters, on the cases of ``_vesuvius_reference_cases.py`` (provenance in its
``source``). Needs the compiled Betti matching (``nnunet-ext[topology]``) and DeepMind's
surface-distance.
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from _vesuvius_reference_cases import CASES
from nnunet_ext.evaluation.challenges import vesuvius_leaderboard_score, vesuvius_masks
from test_challenge_scores import needs_betti, needs_sd

HOST = json.loads((Path(__file__).parent / "data" / "vesuvius_topometrics_scores.json").read_text())
_CASES = None


def _cases():
    global _CASES
    if _CASES is None:
        _CASES = CASES()
    return _CASES


@needs_sd
@needs_betti
@pytest.mark.parametrize("case", sorted(HOST["scores"]))
def test_leaderboard_score_equals_the_host_package(case):
    pred, ref = _cases()[case]
    ours = vesuvius_leaderboard_score(pred, ref)
    host = HOST["scores"][case]
    for key in ("leaderboard_score", "topo_score", "surface_dice", "voi_score", "voi",
                "topo_f1_0", "topo_f1_1", "topo_f1_2"):
        if host[key] is None:  # a dimension without features
            assert math.isnan(ours[key]), key
        else:
            assert ours[key] == pytest.approx(host[key], abs=1e-12), key
    assert {str(k): list(v) for k, v in ours["counts"].items()} == host["counts"]


def test_reference_cases_cover_each_dimension_and_the_octant_cut():
    scores = HOST["scores"]
    assert scores["hole_inside_octant"]["topo_f1_1"] == pytest.approx(1 / 3)   # a tunnel
    assert scores["hollow_box_opened"]["topo_f1_2"] == 0                       # a cavity
    assert scores["sheet_split_in_two"]["topo_f1_0"] == pytest.approx(0.2)     # components
    assert scores["hole_on_octant_border"]["topo_score"] == 1                  # cut by octants
    assert scores["ignore_label_region"]["leaderboard_score"] == pytest.approx(1.0)


def test_nan_is_background_and_the_ignore_label_clears_both_volumes():
    pred = np.array([[[np.nan, 1.0, 0.0, 3.0]]])
    ref = np.array([[[1, 2, 0, 1]]], dtype=np.uint8)
    p, r = vesuvius_masks(pred, ref)
    assert p.tolist() == [[[False, False, False, True]]]   # NaN: background; 1.0 under ignore
    assert r.tolist() == [[[True, False, False, True]]]
