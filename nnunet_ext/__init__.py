"""nnunet-ext: topology-aware training, conversion and evaluation on top of a stock nnU-Net v2."""

__version__ = "0.1.0"
