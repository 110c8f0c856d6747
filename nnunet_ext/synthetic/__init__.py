"""Synthetic datasets of thin branching structures in nnU-Net raw format (demo and tests)."""
from nnunet_ext.synthetic.tubes import branching_tubes, TubeTree
from nnunet_ext.synthetic.raw_dataset import write_synthetic_dataset, DATASET_KINDS

__all__ = ["branching_tubes", "TubeTree", "write_synthetic_dataset", "DATASET_KINDS"]
