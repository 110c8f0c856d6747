"""The remaining loss combinations, each a thin subclass that only declares its terms.

Every trainer here keeps nnU-Net's planner, preprocessing, data pipeline, deep supervision (every
weighted output receives every term, auxiliary targets downsampled for it) and modes (labels, regions,
ignore label). Weights are class attributes, so a variant is a subclass that changes one number; weights
that ramp are expressed as fractions of the training length so that budget variants
(``BoundaryTrainer_100epochs``) keep the shape of the schedule.
"""
from __future__ import annotations

from nnunet_ext.schedules import Linear
from nnunet_ext.trainers.composite import CompositeLossTrainer
from nnunet_ext.trainers.terms import TermConfig

__all__ = ["CbDiceTrainer", "CbDiceClDiceTrainer", "BoundaryTrainer", "HausdorffTrainer", "FocalDiceTrainer",
           "FocalDiceVarianceTrainer"]


def ramp_over_training(num_epochs: int, start_fraction: float, end_fraction: float, end_value: float) -> Linear:
    """0 until ``start_fraction`` of the training, then linear up to ``end_value`` at ``end_fraction``.

    >>> ramp_over_training(1000, 0.3, 0.6, 0.5)
    Linear(start_epoch=300, end_epoch=600, start_value=0.0, end_value=0.5)
    >>> ramp_over_training(2, 0.3, 0.6, 0.5)  # very short runs still get a (one-epoch) ramp
    Linear(start_epoch=0, end_epoch=1, start_value=0.0, end_value=0.5)
    """
    start = int(round(start_fraction * num_epochs))
    end = max(int(round(end_fraction * num_epochs)), start + 1)
    if end >= num_epochs and num_epochs > 1:
        start, end = min(start, num_epochs - 2), num_epochs - 1
    return Linear(start, end, 0.0, float(end_value))


class CbDiceTrainer(CompositeLossTrainer):
    """nnU-Net's Dice+CE / Dice+BCE + 1 · cbDice.

    Shi, P. et al., "Centerline Boundary Dice Loss for Vascular Segmentation", MICCAI 2024. The ground
    truth's centreline depth and inverse-radius weights are computed per class/region in the data loader
    (:func:`nnunet_ext.targets.centerline_radius_target`), not by distance transforms inside the loss
    (see :class:`~nnunet_ext.losses.CenterlineBoundaryDiceLoss` for the formula and what differs from the
    paper). The cbDice authors train CE 2 + Dice 1 + cbDice 1; nnU-Net's base is kept as it is (CE 1 +
    Dice 1) here, as in every trainer of this package.

    Class attributes: ``cbdice_weight`` (1.0), ``cbdice_iterations`` ("auto": chosen per deep-supervision level
    from the training labels, see :mod:`nnunet_ext.trainers.skeleton_iterations`; or an int / one int per
    level).
    """

    cbdice_weight: float = 1.0
    cbdice_iterations = "auto"

    def term_configs(self) -> list[TermConfig]:
        return [TermConfig("cbdice", self.cbdice_weight, {"iterations": self.cbdice_iterations})]


class CbDiceClDiceTrainer(CompositeLossTrainer):
    """nnU-Net's Dice+CE / Dice+BCE + 1 · cbDice + 0.5 · soft clDice (the MiniVess study's best trade-off
    between volumetric and topological scores).

    Class attributes: ``cbdice_weight`` (1.0), ``cldice_weight`` (0.5), ``skeleton_iterations`` (both terms;
    "auto": chosen per deep-supervision level from the training labels).
    """

    cbdice_weight: float = 1.0
    cldice_weight: float = 0.5

    def term_configs(self) -> list[TermConfig]:
        return [TermConfig("cbdice", self.cbdice_weight, {"iterations": "auto"}),
                TermConfig("cldice", self.cldice_weight, {"iterations": "auto"})]


class BoundaryTrainer(CompositeLossTrainer):
    """nnU-Net's Dice+CE / Dice+BCE + w(epoch) · boundary loss, the weight ramped in.

    Kervadec, H. et al., "Boundary loss for highly unbalanced segmentation", MIDL 2019 (MedIA 2021).
    Signed distance maps per class/region with the voxel spacing come from the data loader. The region
    loss must first produce a reasonable segmentation, so the weight is 0 for the first 30 % of the epochs
    and rises linearly to ``boundary_weight`` at 60 % (the BraTS configuration: 0 → 0.5 over epochs
    300–600 of 1000), constant after. The boundary loss is negative at its optimum and in mm; the region
    loss is kept at full weight (the cap the paper's unbounded +0.01/epoch rule lacks).

    Class attributes: ``boundary_weight`` (0.5), ``ramp_start`` (0.3), ``ramp_end`` (0.6) as fractions of
    ``num_epochs``.
    """

    boundary_weight: float = 0.5
    ramp_start: float = 0.3
    ramp_end: float = 0.6

    def term_configs(self) -> list[TermConfig]:
        return [TermConfig("boundary", ramp_over_training(self.num_epochs, self.ramp_start, self.ramp_end,
                                                          self.boundary_weight))]


class HausdorffTrainer(CompositeLossTrainer):
    """nnU-Net's Dice+CE / Dice+BCE + w(epoch) · Hausdorff-distance loss (distance-transform variant).

    Karimi, D. & Salcudean, S. E., "Reducing the Hausdorff Distance in Medical Image Segmentation with
    Convolutional Neural Networks", IEEE TMI 2020. The ground truth's distance map (spacing-aware, from the
    data loader) weights the squared error by ``|φ|^α`` (α = 2; one-sided, see
    :class:`~nnunet_ext.losses.HausdorffDTLoss`). Karimi & Salcudean add the term to a network first
    trained with Dice, because on an untrained network the distance-weighted errors of the whole patch
    dwarf the region loss; here the weight is 0 for the first 10 % of the epochs and rises linearly to
    ``hausdorff_weight`` at 30 %.

    Class attributes: ``hausdorff_weight`` (0.1; the term is in mm²), ``hausdorff_alpha`` (2.0),
    ``ramp_start`` (0.1), ``ramp_end`` (0.3).
    """

    hausdorff_weight: float = 0.1
    hausdorff_alpha: float = 2.0
    ramp_start: float = 0.1
    ramp_end: float = 0.3

    def term_configs(self) -> list[TermConfig]:
        return [TermConfig("hausdorff", ramp_over_training(self.num_epochs, self.ramp_start, self.ramp_end,
                                                           self.hausdorff_weight),
                           {"alpha": self.hausdorff_alpha})]


class FocalDiceTrainer(CompositeLossTrainer):
    """nnU-Net's soft Dice (its CE/BCE switched off) + 1 · focal loss (γ = 2, no α).

    Lin, T.-Y. et al., "Focal Loss for Dense Object Detection", ICCV 2017: the cross-entropy part is
    replaced by its focal form, which down-weights the many easy background voxels of thin structures.
    Labels use the categorical form, regions one binary focal term per region; ignored voxels are excluded.

    Class attributes: ``focal_weight`` (1.0), ``focal_gamma`` (2.0), ``focal_alpha`` (None; a float α for
    foreground vs 1 − α for background, or one value per class with the background first).
    """

    base_loss = "dice"
    focal_weight: float = 1.0
    focal_gamma: float = 2.0
    focal_alpha = None

    def term_configs(self) -> list[TermConfig]:
        return [TermConfig("focal", self.focal_weight, {"gamma": self.focal_gamma, "alpha": self.focal_alpha})]


class FocalDiceVarianceTrainer(FocalDiceTrainer):
    """nnU-Net's soft Dice + 1 · focal loss + 0.1 · region-variance regularisation (the Vesuvius surface
    configuration).

    The variance term penalises, per class/region c, the mean squared shortfall from 1 of the predicted
    probability of c inside the ground-truth region of c, ``Var_R(p) + (1 − μ_R)²``
    (:class:`~nnunet_ext.losses.RegionVarianceLoss`): interiors become homogeneous and confident instead of
    speckled, which keeps thin sheets in one piece, and no correct voxel is ever pushed down.

    Class attributes: those of :class:`FocalDiceTrainer` and ``variance_weight`` (0.1).
    """

    variance_weight: float = 0.1

    def term_configs(self) -> list[TermConfig]:
        return super().term_configs() + [TermConfig("variance", self.variance_weight)]
