"""The loss terms of nnunet_ext.losses with how to build their auxiliary targets (shared by the loss tests)."""
from __future__ import annotations

import functools

import numpy as np
import torch

from nnunet_ext.targets.ground_truth import (centerline_radius_target, signed_distance_target,
                                                 skeleton_tube_target)
from nnunet_ext.losses.boundary import BoundaryLoss
from nnunet_ext.losses.cbdice import CenterlineBoundaryDiceLoss
from nnunet_ext.losses.focal import FocalLoss
from nnunet_ext.losses.hausdorff import HausdorffDTLoss
from nnunet_ext.losses.skeleton_recall import SkeletonRecallLoss
from nnunet_ext.losses.variance import RegionVarianceLoss
from nnunet_ext.losses.weighted_ce import WeightedCrossEntropyLoss
from nnunet_ext.losses.weighted_dice import WeightedSoftDiceLoss

#: name -> (factory(mode, n_channels) -> module, auxiliary target function or None)
TERMS = {
    "skeleton_recall": (lambda mode, c: SkeletonRecallLoss(), functools.partial(skeleton_tube_target, tube_radius=1)),
    "skeleton_recall_batch": (lambda mode, c: SkeletonRecallLoss(batch_dice=True), skeleton_tube_target),
    "focal": (lambda mode, c: FocalLoss(mode, gamma=2.0, alpha=0.25), None),
    "focal_per_class": (lambda mode, c: FocalLoss(mode, gamma=0.5,
                                                  alpha=[0.5] * (c + (mode == "softmax")) if mode == "sigmoid"
                                                  else [1.0] + [2.0] * c), None),
    "weighted_ce": (lambda mode, c: WeightedCrossEntropyLoss(mode, [1.0 + i for i in range(c + (mode == "softmax"))]), None),
    "weighted_dice": (lambda mode, c: WeightedSoftDiceLoss([1.0 + i for i in range(c)]), None),
    "weighted_dice_batch": (lambda mode, c: WeightedSoftDiceLoss(batch_dice=True), None),
    "boundary": (lambda mode, c: BoundaryLoss(), signed_distance_target),
    "boundary_diagonal": (lambda mode, c: BoundaryLoss(), functools.partial(signed_distance_target, empty="diagonal")),
    "hausdorff": (lambda mode, c: HausdorffDTLoss(), signed_distance_target),
    "variance": (lambda mode, c: RegionVarianceLoss(), None),
    "cbdice": (lambda mode, c: CenterlineBoundaryDiceLoss(iterations=2), centerline_radius_target),
    "cbdice_batch": (lambda mode, c: CenterlineBoundaryDiceLoss(batch_dice=True), centerline_radius_target),
    "cbdice_shi2024": (lambda mode, c: CenterlineBoundaryDiceLoss(iterations=3, formulation="shi2024"),
                       centerline_radius_target),
    "cbdice_shi2024_batch": (lambda mode, c: CenterlineBoundaryDiceLoss(batch_dice=True, formulation="shi2024"),
                             centerline_radius_target),
}


def takes_logits(name: str) -> bool:
    """Whether the term works on the raw logits (the cross-entropy-type terms) instead of probabilities."""
    return bool(getattr(TERMS[name][0]("softmax", 2), "takes_logits", False))


def prediction_for(name: str, logits: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
    """What the term is handed by CompoundLoss: the logits or the foreground probabilities."""
    return logits if takes_logits(name) else probabilities


def auxiliary_batch(compute, target: torch.Tensor, valid: torch.Tensor | None, spacing=None) -> torch.Tensor:
    """Apply a per-patch auxiliary-target function to every sample of a batch, as the data loader does."""
    out = []
    for b in range(target.shape[0]):
        v = None if valid is None else valid[b, 0].numpy()
        out.append(compute(target[b].numpy() > 0.5, v, spacing))
    return torch.from_numpy(np.stack(out)).to(target.dtype)


def call(name: str, mode: str, probabilities, target, valid, spacing=None, module=None):
    factory, compute = TERMS[name]
    module = module if module is not None else factory(mode, target.shape[1])
    if compute is None:
        return module(probabilities, target, valid)
    return module(probabilities, target, valid, auxiliary_batch(compute, target, valid, spacing))
