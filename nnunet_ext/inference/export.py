"""Writing uncertainty maps in the geometry and file format of nnU-Net's segmentations.

A map is computed in nnU-Net's preprocessed space (cropped to the nonzero bounding box, resampled
to the configuration's spacing, axes transposed). :func:`revert_map_geometry` undoes those steps
the way nnU-Net's ``convert_predicted_logits_to_segmentation_with_correct_shape`` undoes them for
probabilities: ``resampling_fn_probabilities`` back to the cropped shape, insertion into the
bounding box (0 outside it, where nnU-Net predicts background without looking), inverse transpose.
:func:`write_float_image` then writes it with the plans' reader/writer class, so spacing, origin,
direction (and any re-orientation the writer does) are those of the segmentation.
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Union

import numpy as np
import torch

from .naming import UNCERTAINTY_MAP_MARKER

from nnunetv2.inference.export_prediction import (
    convert_predicted_logits_to_segmentation_with_correct_shape,
    export_prediction_from_logits,
)


def uncertainty_file_name(output_file_truncated: str, kind: str, file_ending: str,
                          reader_writer=None, uncertainty_folder: Optional[str] = None) -> str:
    """File name of one uncertainty map.

    Parameters
    ----------
    output_file_truncated : str
        The segmentation's path without file ending (nnU-Net's ``ofile``), e.g. ``out/case_001``.
    kind : str
        Map kind (see :data:`nnunet_ext.inference.uncertainty.KINDS`).
    file_ending : str
        The dataset's ``file_ending`` (e.g. ``.nii.gz``).
    reader_writer : BaseReaderWriter, optional
        The plans' reader/writer instance; 2D natural-image formats (png, bmp) cannot hold floats,
        so their maps are written as float32 TIFF (``.tif``).
    uncertainty_folder : str, optional
        Put the map there instead of beside the segmentation.

    Returns
    -------
    str
        ``<folder>/<case>_uncertainty_<kind><file_ending>``.
    """
    ending = _map_file_ending(reader_writer, file_ending)
    base = output_file_truncated if uncertainty_folder is None else \
        os.path.join(uncertainty_folder, os.path.basename(output_file_truncated))
    return f"{base}{UNCERTAINTY_MAP_MARKER}{kind}{ending}"


def _map_file_ending(reader_writer, file_ending: str) -> str:
    if reader_writer is not None and type(reader_writer).__name__ == "NaturalImage2DIO" \
            and file_ending.lower() != ".tif":
        return ".tif"
    return file_ending


def revert_map_geometry(volume: Union[np.ndarray, torch.Tensor], plans_manager, configuration_manager,
                        properties: dict) -> np.ndarray:
    """Bring a map from nnU-Net's preprocessed space back to the original image grid.

    Parameters
    ----------
    volume : np.ndarray or torch.Tensor, shape S (preprocessed spatial shape)
        One value per voxel of the preprocessed image (e.g. an uncertainty map).
    plans_manager : nnunetv2.utilities.plans_handling.plans_handler.PlansManager
        For ``transpose_forward`` / ``transpose_backward``.
    configuration_manager : nnunetv2.utilities.plans_handling.plans_handler.ConfigurationManager
        For ``spacing`` and ``resampling_fn_probabilities``.
    properties : dict
        The case's properties from nnU-Net's preprocessing (``spacing``,
        ``shape_after_cropping_and_before_resampling``, ``bbox_used_for_cropping``,
        ``shape_before_cropping``).

    Returns
    -------
    np.ndarray, float32, shape of the original image (as the reader returned it, without channel axis)
        Values >= 0; 0 outside nnU-Net's crop bounding box.
    """
    if isinstance(volume, torch.Tensor):
        volume = volume.detach().cpu().numpy()
    volume = np.asarray(volume, dtype=np.float32)
    shape_cropped = properties["shape_after_cropping_and_before_resampling"]
    # the same spacings nnU-Net uses when it resamples the logits (2D configurations keep axis 0)
    spacing_transposed = [properties["spacing"][i] for i in plans_manager.transpose_forward]
    current_spacing = configuration_manager.spacing if len(configuration_manager.spacing) == len(shape_cropped) \
        else [spacing_transposed[0], *configuration_manager.spacing]
    resampled = configuration_manager.resampling_fn_probabilities(volume[None], shape_cropped, current_spacing,
                                                                  spacing_transposed)
    if isinstance(resampled, torch.Tensor):
        resampled = resampled.cpu().numpy()
    resampled = np.asarray(resampled[0], dtype=np.float32)
    from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image

    full = np.zeros(properties["shape_before_cropping"], dtype=np.float32)
    full = insert_crop_into_image(full, resampled, properties["bbox_used_for_cropping"])
    # higher-order resampling (order 3) can undershoot; a spread or an entropy is never negative
    np.maximum(full, 0, out=full)
    return np.ascontiguousarray(full.transpose(plans_manager.transpose_backward))


class _KeepFloat(np.ndarray):
    """ndarray view whose ``astype`` returns float32.

    nnU-Net's ``write_seg`` implementations cast to uint8/uint16 right before writing; everything
    else they do (axis order, spacing, origin, direction, re-orientation, side-car files) is what an
    uncertainty map needs too. Handing them this view keeps the float values through that cast.
    """

    def astype(self, dtype, *args, **kwargs):  # noqa: D102 - see class docstring
        return np.array(self, dtype=np.float32, copy=True).view(np.ndarray)


def write_float_image(reader_writer, array: np.ndarray, output_fname: str, properties: dict) -> None:
    """Write a float32 volume with the geometry nnU-Net gives the segmentation of the same case.

    Parameters
    ----------
    reader_writer : nnunetv2.imageio.base_reader_writer.BaseReaderWriter
        Instance of the plans' ``image_reader_writer_class``.
    array : np.ndarray, shape (x, y, z), or (1, y, z) for 2D images
        The volume in the original image grid (output of :func:`revert_map_geometry`).
    output_fname : str
        Target file; its ending must suit the writer (see :func:`uncertainty_file_name`).
    properties : dict
        The case's properties (as for ``write_seg``).
    """
    array = np.ascontiguousarray(array, dtype=np.float32)
    if type(reader_writer).__name__ == "NaturalImage2DIO":
        # png/bmp hold integers only; a float32 TIFF keeps the values (2D natural images have no geometry)
        import tifffile

        tifffile.imwrite(output_fname, array[0] if array.ndim == 3 else array, compression="zlib")
        return
    reader_writer.write_seg(array.view(_KeepFloat), output_fname, properties)


def export_prediction_and_uncertainty(predicted_logits: Union[np.ndarray, torch.Tensor],
                                      maps: Dict[str, np.ndarray], properties: dict, configuration_manager,
                                      plans_manager, dataset_json: dict, output_file_truncated: str,
                                      save_probabilities: bool = False,
                                      uncertainty_folder: Optional[str] = None) -> None:
    """nnU-Net's export of one case, plus one file per uncertainty map.

    The segmentation (and ``.npz``/``.pkl`` with ``save_probabilities``) is written by nnU-Net's
    own ``export_prediction_from_logits``, so it is byte-for-byte what ``nnUNetv2_predict`` writes
    for the same logits. Picklable: it runs in nnU-Net's export worker pool.

    Parameters
    ----------
    predicted_logits : np.ndarray or torch.Tensor, shape (K, *S)
        Mean logits in preprocessed space (K segmentation heads).
    maps : dict of str to np.ndarray
        kind -> map of shape S in preprocessed space.
    properties : dict
        The case's preprocessing properties.
    configuration_manager, plans_manager
        nnU-Net's managers of the model.
    dataset_json : dict
        The model's dataset.json (``file_ending``, labels).
    output_file_truncated : str
        Output path without file ending.
    save_probabilities : bool
        Also write nnU-Net's ``.npz`` (probabilities) and ``.pkl`` (properties).
    uncertainty_folder : str, optional
        Where the maps go (default: beside the segmentation).
    """
    export_prediction_from_logits(predicted_logits, properties, configuration_manager, plans_manager,
                                  dataset_json, output_file_truncated, save_probabilities)
    if not maps:
        return
    rw = plans_manager.image_reader_writer_class()
    if uncertainty_folder is not None:
        os.makedirs(uncertainty_folder, exist_ok=True)
    for kind, volume in maps.items():
        reverted = revert_map_geometry(volume, plans_manager, configuration_manager, properties)
        fname = uncertainty_file_name(output_file_truncated, kind, dataset_json["file_ending"], rw,
                                      uncertainty_folder)
        write_float_image(rw, reverted, fname, properties)


def convert_prediction_and_uncertainty(predicted_logits: Union[np.ndarray, torch.Tensor],
                                       maps: Dict[str, np.ndarray], plans_manager, configuration_manager,
                                       label_manager, properties: dict, return_probabilities: bool = False):
    """In-memory counterpart of :func:`export_prediction_and_uncertainty`.

    Parameters
    ----------
    predicted_logits : np.ndarray or torch.Tensor, shape (K, *S)
    maps : dict of str to np.ndarray, each shape S
    plans_manager, configuration_manager, label_manager
        nnU-Net's managers of the model.
    properties : dict
    return_probabilities : bool

    Returns
    -------
    (result, maps) : tuple
        ``result`` is what nnU-Net's ``convert_predicted_logits_to_segmentation_with_correct_shape``
        returns (segmentation, or (segmentation, probabilities)); ``maps`` maps kind -> float32 array
        in the original image grid.
    """
    result = convert_predicted_logits_to_segmentation_with_correct_shape(
        predicted_logits, plans_manager, configuration_manager, label_manager, properties, return_probabilities)
    return result, {k: revert_map_geometry(v, plans_manager, configuration_manager, properties)
                    for k, v in maps.items()}
