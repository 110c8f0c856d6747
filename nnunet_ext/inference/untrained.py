"""An nnU-Net model folder with freshly initialised weights.

For smoke tests and benchmarks of inference without training, and to check what a plan costs at
inference time before training it. The folder has the layout and checkpoint format that
``nnUNetTrainer.save_checkpoint`` writes and ``nnUNetPredictor.initialize_from_trained_model_folder``
reads: ``dataset.json``, ``plans.json`` and ``fold_<f>/<checkpoint_name>`` holding
``network_weights``, ``init_args``, ``trainer_name`` and ``inference_allowed_mirroring_axes``.
"""
from __future__ import annotations

import json
import os
from typing import Callable, Optional, Sequence, Tuple, Union

import torch


def default_mirror_axes(patch_size: Sequence[int]) -> Tuple[int, ...]:
    """nnU-Net's default inference mirroring axes: all spatial axes of the patch.

    Parameters
    ----------
    patch_size : sequence of int
        2 or 3 entries.

    Returns
    -------
    tuple of int
        ``(0, 1)`` or ``(0, 1, 2)``.
    """
    return tuple(range(len(patch_size)))


def shrink_configuration(plans: dict, configuration: str, patch_size: Sequence[int],
                         features_per_stage: Sequence[int], keep_only: bool = True) -> dict:
    """A copy of the plans whose configuration has a smaller patch and a shallower, narrower U-Net.

    For smoke tests and CPU benchmarks: the network has ``len(features_per_stage)`` stages, one
    convolution per stage, 3-voxel kernels and stride 2 from the second stage on.

    Parameters
    ----------
    plans : dict
        Content of a ``plans.json`` with a PlainConvUNet/ResidualEncoderUNet configuration.
    configuration : str
        The configuration to shrink.
    patch_size : sequence of int
        New patch size (2 or 3 entries, each divisible by ``2 ** (stages - 1)``).
    features_per_stage : sequence of int
        Channels per stage.
    keep_only : bool
        Drop the other configurations.

    Returns
    -------
    dict
        New plans (the input is not modified).
    """
    import copy

    out = copy.deepcopy(plans)
    if configuration not in out.get("configurations", {}):
        raise KeyError(f"configuration {configuration!r} is not in the plans")
    cfg = out["configurations"][configuration]
    n = len(features_per_stage)
    dims = len(patch_size)
    if any(p % (2 ** (n - 1)) for p in patch_size):
        raise ValueError(f"patch size {list(patch_size)} is not divisible by 2**{n - 1}")
    cfg["patch_size"] = [int(p) for p in patch_size]
    kwargs = cfg["architecture"]["arch_kwargs"]
    kwargs.update(n_stages=n, features_per_stage=[int(f) for f in features_per_stage],
                  kernel_sizes=[[3] * dims] * n, strides=[[1] * dims] + [[2] * dims] * (n - 1),
                  n_conv_per_stage=[1] * n, n_conv_per_stage_decoder=[1] * (n - 1))
    if keep_only:
        out["configurations"] = {configuration: cfg}
    return out


def build_network(plans: dict, dataset_json: dict, configuration: str, trainer_name: str = "nnUNetTrainer"):
    """The inference network nnU-Net builds for a trainer, plans and configuration.

    Parameters
    ----------
    plans : dict
        Content of ``plans.json``.
    dataset_json : dict
        Content of ``dataset.json``.
    configuration : str
        e.g. ``3d_fullres``.
    trainer_name : str
        Trainer class found by nnU-Net's lookup (stock trainers, and those in ``nnUNet_extTrainer``).

    Returns
    -------
    torch.nn.Module
        Without deep supervision, freshly initialised.
    """
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(plans)
    if configuration not in plans.get("configurations", {}):
        raise KeyError(f"configuration {configuration!r} is not in the plans "
                       f"(have: {', '.join(plans.get('configurations', {}))})")
    cm = pm.get_configuration(configuration)
    trainer_class = recursive_find_trainer_class_by_name(trainer_name)
    n_in = determine_num_input_channels(pm, cm, dataset_json)
    n_out = pm.get_label_manager(dataset_json).num_segmentation_heads
    return trainer_class.build_network_architecture(pm, cm, n_in, n_out, enable_deep_supervision=False)


def write_untrained_model_folder(output_dir: str, plans: dict, dataset_json: dict, configuration: str,
                                 folds: Sequence[Union[int, str]] = (0,), trainer_name: str = "nnUNetTrainer",
                                 mirror_axes: Optional[Sequence[int]] = None,
                                 checkpoint_name: str = "checkpoint_final.pth", seed: int = 0,
                                 modify: Optional[Callable[[torch.nn.Module, Union[int, str]], None]] = None) -> str:
    """Write a model folder whose fold checkpoints hold freshly initialised networks.

    Parameters
    ----------
    output_dir : str
        Folder to create (``<Trainer>__<Plans>__<configuration>`` when it should sit in nnUNet_results).
    plans : dict
        Content of ``plans.json``.
    dataset_json : dict
        Content of ``dataset.json``.
    configuration : str
        Configuration the checkpoints are for.
    folds : sequence of int or 'all'
        One checkpoint per fold; fold ``i`` (position) is initialised with seed ``seed + i``.
    trainer_name : str
        Stored in the checkpoints; the predictor builds the network with this trainer class.
    mirror_axes : sequence of int, optional
        ``inference_allowed_mirroring_axes`` (default: all axes of the patch; ``()`` for none).
    checkpoint_name : str
        File name of the checkpoints.
    seed : int
        Base seed for the initialisation.
    modify : callable, optional
        ``modify(network, fold)`` may change the weights in place before they are saved.

    Returns
    -------
    str
        ``output_dir``.
    """
    if configuration not in plans.get("configurations", {}):
        raise KeyError(f"configuration {configuration!r} is not in the plans")
    patch = plans["configurations"][configuration].get("patch_size")
    if patch is None:  # configurations that inherit from another one
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        patch = PlansManager(plans).get_configuration(configuration).patch_size
    axes = default_mirror_axes(patch) if mirror_axes is None else tuple(int(a) for a in mirror_axes)
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "plans.json"), "w") as f:
        json.dump(plans, f, indent=1)
    with open(os.path.join(output_dir, "dataset.json"), "w") as f:
        json.dump(dataset_json, f, indent=1)
    for i, fold in enumerate(folds):
        torch.manual_seed(seed + i)
        network = build_network(plans, dataset_json, configuration, trainer_name)
        if modify is not None:
            with torch.no_grad():
                modify(network, fold)
        fold_dir = os.path.join(output_dir, f"fold_{fold}")
        os.makedirs(fold_dir, exist_ok=True)
        torch.save({
            "network_weights": network.state_dict(),
            "init_args": {"plans": plans, "configuration": configuration, "fold": fold,
                          "dataset_json": dataset_json, "device": "cpu"},
            "trainer_name": trainer_name,
            "inference_allowed_mirroring_axes": axes if axes else None,
            "current_epoch": 0,
        }, os.path.join(fold_dir, checkpoint_name))
    return output_dir
