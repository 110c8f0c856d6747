"""Loss terms in pure PyTorch (no nnU-Net import), usable and testable on their own."""
from nnunet_ext.losses.cldice import SoftClDiceLoss
from nnunet_ext.losses.compound import CompoundLoss, DeepSupervisedLoss, NonFiniteLossError, LossTerm
from nnunet_ext.losses.segmentation_modes import SegmentationMode, split_prediction_and_target
from nnunet_ext.losses.soft_skeleton import soft_dilate, soft_erode, soft_open, soft_skeleton
from nnunet_ext.losses.skeleton_recall import SkeletonRecallLoss
from nnunet_ext.losses.focal import FocalLoss
from nnunet_ext.losses.weighted_ce import WeightedCrossEntropyLoss
from nnunet_ext.losses.weighted_dice import WeightedSoftDiceLoss
from nnunet_ext.losses.boundary import BoundaryLoss
from nnunet_ext.losses.hausdorff import HausdorffDTLoss
from nnunet_ext.losses.variance import RegionVarianceLoss
from nnunet_ext.losses.cbdice import CenterlineBoundaryDiceLoss

__all__ = [
    "SoftClDiceLoss",
    "CompoundLoss",
    "DeepSupervisedLoss",
    "LossTerm",
    "NonFiniteLossError",
    "SegmentationMode",
    "split_prediction_and_target",
    "soft_dilate",
    "soft_erode",
    "soft_open",
    "soft_skeleton",
    "SkeletonRecallLoss",
    "FocalLoss",
    "WeightedCrossEntropyLoss",
    "WeightedSoftDiceLoss",
    "BoundaryLoss",
    "HausdorffDTLoss",
    "RegionVarianceLoss",
    "CenterlineBoundaryDiceLoss",
]
