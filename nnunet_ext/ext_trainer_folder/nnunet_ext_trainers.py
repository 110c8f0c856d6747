"""Imported by nnU-Net's trainer lookup from the folder named in ``nnUNet_extTrainer``.

It only re-exports :mod:`nnunet_ext.trainers`, so the class nnU-Net finds is the very class object of
the installed package (one module copy, one class), whatever nnU-Net does with this module afterwards.
"""
import nnunet_ext.trainers as _trainers
from nnunet_ext.trainers import *  # noqa: F401,F403


def __getattr__(name: str):
    # budget variants (e.g. TopoTrainer_5epochs) are created on demand by nnunet_ext.trainers
    return _trainers.trainer_by_name(name)
