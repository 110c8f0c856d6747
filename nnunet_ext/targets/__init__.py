"""CPU-side auxiliary targets (skeletons, distance maps) that travel with nnU-Net's batches.

nnU-Net's data loader carries only ``image`` and ``segmentation`` from the augmentation pipeline to the
batch, so auxiliary targets are *packed* as extra channels behind the segmentation channels (see
:class:`TargetLayout`), computed per patch after spatial augmentation. With deep supervision they are
computed for every output from that output's own downsampled segmentation (nnU-Net's, exactly) and
spacing, so they never contradict the segmentation target of their resolution.
"""
from nnunet_ext.targets.ground_truth import centerline_radius_target, signed_distance_target, skeleton_tube_target
from nnunet_ext.targets.layout import AuxiliaryTarget, TargetLayout
from nnunet_ext.targets.transforms import (AppendAuxiliaryTargets, DownsampleSegAndAppendAuxiliaryForDS,
                                          foreground_view)

__all__ = ["AuxiliaryTarget", "TargetLayout", "AppendAuxiliaryTargets", "DownsampleSegAndAppendAuxiliaryForDS",
           "foreground_view", "skeleton_tube_target", "signed_distance_target", "centerline_radius_target"]
