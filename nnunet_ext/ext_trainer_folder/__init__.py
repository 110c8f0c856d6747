"""The folder that ``nnUNet_extTrainer`` points at (``nnunet-ext trainer-path`` prints it)."""
