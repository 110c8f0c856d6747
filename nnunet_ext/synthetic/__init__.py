"""Synthetic datasets of thin branching structures in nnU-Net raw format (demo, tests and benchmarks)."""
from nnunet_ext.synthetic.tubes import branching_tubes, TubeTree
from nnunet_ext.synthetic.raw_dataset import write_synthetic_dataset, DATASET_KINDS
from nnunet_ext.synthetic.fading import FadeSettings, fading_contrast, hard_tube_case, write_hard_tubes_dataset

__all__ = ["branching_tubes", "TubeTree", "write_synthetic_dataset", "DATASET_KINDS",
           "FadeSettings", "fading_contrast", "hard_tube_case", "write_hard_tubes_dataset"]
