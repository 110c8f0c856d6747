"""Loss terms in pure PyTorch (no nnU-Net import), usable and testable on their own."""
from nnunet_ext.losses.cldice import SoftClDiceLoss
from nnunet_ext.losses.compound import CompoundLoss, DeepSupervisedLoss, NonFiniteLossError, LossTerm
from nnunet_ext.losses.segmentation_modes import SegmentationMode, split_prediction_and_target
from nnunet_ext.losses.soft_skeleton import soft_dilate, soft_erode, soft_open, soft_skeleton

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
]
