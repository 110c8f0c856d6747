"""Turn network logits and an nnU-Net training target into probabilities, one-hot targets and a mask.

nnU-Net trains in one of two modes, and its data pipeline encodes the ignore label differently in each:

* ``softmax`` (plain labels): logits ``(B, K, *S)`` over K classes including background; the target is
  a label map ``(B, 1, *S)``; ignored voxels carry the value ``ignore_label``.
* ``sigmoid`` (regions): logits ``(B, R, *S)``, one per (possibly overlapping) region; the target is a
  binary map ``(B, R, *S)``, or ``(B, R + 1, *S)`` with the ignore mask as the last channel when the
  dataset has an ignore label.

:func:`split_prediction_and_target` hides that difference from the loss terms: they receive foreground
probabilities, a float one-hot target of the same shape and a validity mask ``(B, 1, *S)`` (or ``None``).
"""
from __future__ import annotations

from enum import Enum
from typing import NamedTuple

import torch


class SegmentationMode(str, Enum):
    SOFTMAX = "softmax"
    SIGMOID = "sigmoid"


class ForegroundView(NamedTuple):
    """Foreground channels of a prediction and of its target.

    probabilities: ``(B, C, *S)`` float, C = foreground classes (softmax) or regions (sigmoid).
    target: ``(B, C, *S)`` float in {0, 1}; zero wherever ``valid`` is False.
    valid: ``(B, 1, *S)`` bool, False on ignored voxels; ``None`` when nothing is ignored.
    logits: the raw output ``(B, K, *S)`` the probabilities come from (K = C + 1 with the background first
    for softmax, K = C for sigmoid), for terms that work on logits (``takes_logits``).
    """

    probabilities: torch.Tensor
    target: torch.Tensor
    valid: torch.Tensor | None
    logits: torch.Tensor | None = None


def split_prediction_and_target(
    logits: torch.Tensor,
    target: torch.Tensor,
    mode: SegmentationMode | str,
    ignore_label: int | None = None,
) -> ForegroundView:
    """Foreground probabilities, one-hot target and validity mask for one network output.

    Parameters
    ----------
    logits : torch.Tensor
        ``(B, K, *S)`` raw network output (no non-linearity applied).
    target : torch.Tensor
        nnU-Net's target for this output (see module docstring for the layout per mode).
    mode : SegmentationMode or str
        ``"softmax"`` for plain labels, ``"sigmoid"`` for regions.
    ignore_label : int or None
        The dataset's ignore label, if any. In sigmoid mode only its presence matters (the mask is
        the last target channel).

    Returns
    -------
    ForegroundView
    """
    mode = SegmentationMode(mode)
    spatial = tuple(logits.shape[2:])
    if tuple(target.shape[2:]) != spatial or target.shape[0] != logits.shape[0]:
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits shape {tuple(logits.shape)}")

    if mode is SegmentationMode.SOFTMAX:
        if target.shape[1] != 1:
            raise ValueError(f"softmax mode expects a label-map target (B, 1, ...), got {tuple(target.shape)}")
        probabilities = torch.softmax(logits, dim=1)[:, 1:]
        with torch.no_grad():
            labels = target.long()
            valid = None
            if ignore_label is not None:
                valid = labels != ignore_label
                labels = torch.where(valid, labels, 0)
            classes = torch.arange(1, logits.shape[1], device=labels.device).view(1, -1, *([1] * len(spatial)))
            onehot = (labels == classes).to(probabilities.dtype)
        return ForegroundView(probabilities, onehot, valid, logits)

    probabilities = torch.sigmoid(logits)
    n_regions = logits.shape[1]
    expected = n_regions + (1 if ignore_label is not None else 0)
    if target.shape[1] != expected:
        raise ValueError(
            f"sigmoid mode with {n_regions} regions{' and an ignore label' if ignore_label is not None else ''} "
            f"expects {expected} target channels, got {target.shape[1]}"
        )
    with torch.no_grad():
        valid = None
        regions = target[:, :n_regions].to(probabilities.dtype)
        if ignore_label is not None:
            valid = target[:, n_regions:].bool().logical_not()
            regions = regions * valid
    return ForegroundView(probabilities, regions, valid, logits)
