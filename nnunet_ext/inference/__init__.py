"""Prediction with uncertainty maps and weighted ensembles on top of nnU-Net's predictor (docs/inference.md).

Modules: ``uncertainty`` (streaming moments and maps, pure PyTorch), ``predictor``
(``UncertaintyPredictor``, an ``nnUNetPredictor`` subclass), ``export`` (maps back to the original
geometry and file format), ``ensemble`` (weighted ``nnUNetv2_ensemble``), ``fit_weights`` (grid search
of ensemble weights on cross-validation predictions), ``untrained`` (model folders with fresh weights for
smoke tests and benchmarks). Names are imported on first use, so importing this package stays cheap.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "UncertaintyPredictor": "predictor",
    "KINDS": "uncertainty",
    "WeightedMoments": "uncertainty",
    "TileMoments": "uncertainty",
    "uncertainty_maps": "uncertainty",
    "ensemble_folders_weighted": "ensemble",
    "weighted_average_probabilities": "ensemble",
    "fit_ensemble_weights": "fit_weights",
    "FitResult": "fit_weights",
    "write_untrained_model_folder": "untrained",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
