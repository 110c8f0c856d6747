"""TopoTrainer: nnU-Net's own loss plus a soft-clDice term, in every nnU-Net mode."""
from __future__ import annotations

from nnunet_ext.trainers.composite import CompositeLossTrainer
from nnunet_ext.trainers.terms import TermConfig


class TopoTrainer(CompositeLossTrainer):
    """Dice+CE (labels) or Dice+BCE (regions), exactly as nnU-Net builds it, + 0.5 · soft clDice.

    The clDice term (Shit et al., CVPR 2021) is computed per foreground class (softmax training) or per
    region (sigmoid training) and averaged over them; ignored voxels are excluded from it (see
    :class:`~nnunet_ext.losses.SoftClDiceLoss`). With deep supervision every output that nnU-Net gives a
    non-zero weight receives ``w_i · (DiceCE_i + 0.5 · clDice_i)``, with nnU-Net's own weights
    ``w_i ∝ 1/2^i`` (lowest resolution 0, or 1e-6 under DDP without torch.compile, normalised to sum 1);
    each output is compared with nnU-Net's downsampled target of that resolution.

    The soft-skeleton iteration count is chosen per deep-supervision level from the training labels (the
    95th percentile of the structure half-widths, see :mod:`nnunet_ext.trainers.skeleton_iterations`), so
    the term sees the run's thick structures too; ``skeleton_iterations`` (or the environment variable
    ``nnunet_ext_skeleton_iterations``) sets it explicitly.

    Class attributes (override them in a subclass to make a variant):
    ``cldice_weight`` (0.5), ``cldice_iterations`` ("auto": the run's ``skeleton_iterations``; or an int / one
    int per level), ``cldice_smooth`` (1.0).
    """

    cldice_weight: float = 0.5
    cldice_iterations = "auto"
    cldice_smooth: float = 1.0

    def term_configs(self) -> list[TermConfig]:
        return [TermConfig("cldice", self.cldice_weight,
                           {"iterations": self.cldice_iterations, "smooth": self.cldice_smooth})]
