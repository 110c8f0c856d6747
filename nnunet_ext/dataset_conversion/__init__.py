"""Dataset converters: MiniVess, Vesuvius Surface Detection, BraTS 2021/2023/2024 and MoNuSAC into the
nnU-Net v2 raw format, plus back-conversion of predictions to each dataset's own convention.

Every converter writes ``$nnUNet_raw/DatasetNNN_<Name>`` through the shared
:func:`~nnunet_ext.dataset_conversion.writer.write_dataset` (temporary folder, nnU-Net's integrity check,
atomic move) and returns a :class:`~nnunet_ext.dataset_conversion.report.ConversionReport`.
Submodules are imported lazily, so ``import nnunet_ext.dataset_conversion`` stays cheap.
"""
from __future__ import annotations

import importlib

from .errors import ConversionError

_LAZY = {
    "convert_minivess": "minivess",
    "convert_vesuvius": "vesuvius",
    "convert_brats": "brats",
    "convert_monusac": "monusac",
    "convert_brats_predictions": "back_conversion",
    "brats_labels_from_nnunet": "back_conversion",
    "write_vesuvius_submission": "back_conversion",
    "write_dataset": "writer",
    "CaseSpec": "writer",
    "make_splits": "splits",
    "ConversionReport": "report",
}

__all__ = ["ConversionError", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
