"""SkelRecallTrainer: nnU-Net's own loss plus Skeleton Recall on CPU-computed skeleton tubes."""
from __future__ import annotations

from nnunet_ext.trainers.composite import CompositeLossTrainer
from nnunet_ext.trainers.terms import TermConfig


class SkelRecallTrainer(CompositeLossTrainer):
    """Dice+CE (labels) or Dice+BCE (regions), exactly as nnU-Net builds it, + 1 · Skeleton Recall.

    Kirchhoff, Y. et al., "Skeleton Recall Loss for Connectivity Conserving and Resource Efficient
    Segmentation of Thin Tubular Structures", ECCV 2024. The ground-truth skeleton is computed per
    class / region (never the union; ignored voxels never foreground) in nnU-Net's augmentation workers
    after spatial augmentation, dilated into a tube of ``tube_radius`` voxels (physical distance, so round
    on anisotropic data), packed into the batch, and computed again for every deep-supervision output from
    that output's own downsampled segmentation, so every output that nnU-Net weights receives the term (the public implementation trains only the
    full-resolution output on it). The term is left out of nnU-Net's validation loss (validation batches
    carry no skeletons); the pseudo-Dice is unaffected.

    Class attributes: ``skeleton_recall_weight`` (1.0), ``tube_radius`` (2.0 voxels).
    """

    skeleton_recall_weight: float = 1.0
    tube_radius: float = 2.0

    def term_configs(self) -> list[TermConfig]:
        return [TermConfig("skeleton_recall", self.skeleton_recall_weight, {"tube_radius": self.tube_radius})]
