"""nnU-Net's predictor, plus uncertainty maps over its test-time-augmentation and fold variants.

:class:`UncertaintyPredictor` subclasses ``nnunetv2.inference.predict_from_raw_data.nnUNetPredictor``.
The logits go through exactly nnU-Net's arithmetic (same network calls, mirroring axes, float16
gaussian-weighted sliding-window buffers, fold averaging, resampling and export), so the
segmentation is identical to ``nnUNetv2_predict``'s. Beside it, every variant's probabilities
(``label_manager.apply_inference_nonlin`` of each mirrored prediction of each tile of each fold) are
accumulated into :class:`~nnunet_ext.inference.uncertainty.WeightedMoments` with the tile's gaussian
weight, and the requested maps are written next to the segmentation in the same geometry.
"""
from __future__ import annotations

import itertools
import multiprocessing
import os
from copy import deepcopy
from queue import Queue
from threading import Thread
from time import sleep
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
from batchgenerators.utilities.file_and_folder_operations import isfile, join, save_json
from torch._dynamo import OptimizedModule
from tqdm import tqdm

from nnunetv2.configuration import default_num_processes
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.inference.sliding_window_prediction import compute_gaussian
from nnunetv2.utilities.file_path_utilities import check_workers_alive_and_busy
from nnunetv2.utilities.helpers import empty_cache
from nnunetv2.utilities.label_handling.label_handling import convert_labelmap_to_one_hot

from nnunet_ext.inference.export import (
    convert_prediction_and_uncertainty,
    export_prediction_and_uncertainty,
    uncertainty_file_name,
)
from nnunet_ext.inference.uncertainty import (
    TileMoments,
    WeightedMoments,
    check_kinds,
    needs,
    uncertainty_maps,
)

#: written into the output folder by :meth:`UncertaintyPredictor.predict_from_files`
SETTINGS_FILE = "uncertainty_settings.json"


class UncertaintyPredictor(nnUNetPredictor):
    """``nnUNetPredictor`` that also writes per-voxel uncertainty maps.

    Parameters
    ----------
    tile_step_size, use_gaussian, use_mirroring, perform_everything_on_device, device, verbose,
    verbose_preprocessing, allow_tqdm
        As for ``nnUNetPredictor`` (``use_mirroring=False`` is ``--disable_tta``).
    uncertainty : sequence of str
        Maps to compute, names from :data:`nnunet_ext.inference.uncertainty.KINDS`; empty: none
        (then this class predicts exactly like ``nnUNetPredictor``, at its speed).
    fold_weights : sequence of float, optional
        One non-negative weight per fold model (order of ``use_folds``): the fold logits are
        averaged with these weights, and the uncertainty variants of a fold get its weight. None
        or all equal: nnU-Net's plain mean.
    uncertainty_folder : str, optional
        Write the maps there instead of beside the segmentations.

    Attributes
    ----------
    last_moments : WeightedMoments or None
        Moments of the last case predicted (preprocessed space, on the CPU).
    """

    def __init__(self, tile_step_size: float = 0.5, use_gaussian: bool = True, use_mirroring: bool = True,
                 perform_everything_on_device: bool = True, device: torch.device = torch.device("cuda"),
                 verbose: bool = False, verbose_preprocessing: bool = False, allow_tqdm: bool = True,
                 uncertainty: Sequence[str] = ("variance",), fold_weights: Optional[Sequence[float]] = None,
                 uncertainty_folder: Optional[str] = None):
        super().__init__(tile_step_size, use_gaussian, use_mirroring, perform_everything_on_device, device,
                         verbose, verbose_preprocessing, allow_tqdm)
        self.uncertainty_kinds = check_kinds(uncertainty)
        self.fold_weights = None if fold_weights is None else _check_weights(fold_weights, "fold_weights")
        self.uncertainty_folder = uncertainty_folder
        self.last_moments: Optional[WeightedMoments] = None
        self._collect = False  # True while a sliding window collects variant moments
        self._tile: Optional[TileMoments] = None  # moments of the tile being predicted
        self._fold_moments: Optional[WeightedMoments] = None  # moments of the last sliding window

    # ------------------------------------------------------------------ model loading
    def initialize_from_trained_model_folder(self, model_training_output_dir: str,
                                             use_folds: Union[Tuple[Union[int, str]], None],
                                             checkpoint_name: str = "checkpoint_final.pth"):
        """nnU-Net's loader, with errors that name the missing file or key.

        Parameters
        ----------
        model_training_output_dir : str
            ``<Trainer>__<Plans>__<configuration>`` folder with ``dataset.json``, ``plans.json`` and
            ``fold_<f>/<checkpoint_name>``.
        use_folds : tuple of int or 'all', or None
            Folds to ensemble (None: every fold with the checkpoint).
        checkpoint_name : str
            e.g. ``checkpoint_final.pth``, ``checkpoint_best.pth`` (``-chk``).
        """
        for name in ("dataset.json", "plans.json"):
            if not isfile(join(model_training_output_dir, name)):
                raise FileNotFoundError(f"{join(model_training_output_dir, name)} does not exist: "
                                        f"{model_training_output_dir} is not an nnU-Net model folder")
        if use_folds is None:
            use_folds = nnUNetPredictor.auto_detect_available_folds(model_training_output_dir, checkpoint_name)
            if not use_folds:
                raise FileNotFoundError(f"no fold_*/{checkpoint_name} in {model_training_output_dir}")
        folds = [use_folds] if isinstance(use_folds, str) else list(use_folds)
        for f in folds:
            path = join(model_training_output_dir, f"fold_{f}", checkpoint_name)
            if not isfile(path):
                raise FileNotFoundError(f"checkpoint {path} does not exist (fold {f}, -chk {checkpoint_name})")
        if self.fold_weights is not None and len(self.fold_weights) != len(folds):
            raise ValueError(f"{len(self.fold_weights)} fold weights given for {len(folds)} folds {folds}")
        try:
            super().initialize_from_trained_model_folder(model_training_output_dir, use_folds, checkpoint_name)
        except KeyError as e:
            raise ValueError(f"loading {model_training_output_dir} (-chk {checkpoint_name}) failed on the missing "
                             f"key {e.args[0]!r}: nnU-Net checkpoints hold 'network_weights', 'trainer_name' and "
                             f"'init_args', and plans.json must hold the checkpoint's configuration") from e

    # ------------------------------------------------------------------ variants of one tile
    def _variant_probabilities(self, prediction: torch.Tensor) -> torch.Tensor:
        # (1, K, *P) network output -> (K, *P) probabilities with the trainer's inference nonlinearity
        return self.label_manager.apply_inference_nonlin(prediction[0])

    @torch.inference_mode()
    def _internal_maybe_mirror_and_predict(self, x: torch.Tensor) -> torch.Tensor:
        if not self._collect:
            return super()._internal_maybe_mirror_and_predict(x)
        if x.shape[0] != 1:
            raise ValueError(f"uncertainty accumulation expects one tile at a time, got a batch of {x.shape[0]}")
        regions = self.label_manager.has_regions
        second, with_entropy = needs(self.uncertainty_kinds)
        # the same calls and in-place sums as nnUNetPredictor._internal_maybe_mirror_and_predict,
        # with each variant's probabilities taken before it is added to the running sum
        mirror_axes = self.allowed_mirroring_axes if self.use_mirroring else None
        prediction = self.network(x)
        self._tile = TileMoments.first(self._variant_probabilities(prediction), second, with_entropy, regions)
        if mirror_axes is not None:
            assert max(mirror_axes) <= x.ndim - 3, 'mirror_axes does not match the dimension of the input!'
            mirror_axes = [m + 2 for m in mirror_axes]
            axes_combinations = [
                c for i in range(len(mirror_axes)) for c in itertools.combinations(mirror_axes, i + 1)
            ]
            for axes in axes_combinations:
                variant = torch.flip(self.network(torch.flip(x, axes)), axes)
                self._tile.add(self._variant_probabilities(variant), regions)
                prediction += variant
            prediction /= (len(axes_combinations) + 1)
        return prediction

    # ------------------------------------------------------------------ one sliding window (one fold)
    @torch.inference_mode()
    def _internal_predict_sliding_window_return_logits(self, data: torch.Tensor, slicers,
                                                       do_on_device: bool = True):
        if not self.uncertainty_kinds:
            return super()._internal_predict_sliding_window_return_logits(data, slicers, do_on_device)
        # nnU-Net's loop (same buffers, dtypes and order of operations) plus the moments of each tile
        predicted_logits = n_predictions = prediction = gaussian = workon = moments = None
        results_device = self.device if do_on_device else torch.device('cpu')

        def producer(d, slh, q):
            for s in slh:
                q.put((torch.clone(d[s][None], memory_format=torch.contiguous_format).to(self.device), s))
            q.put('end')

        try:
            empty_cache(self.device)
            data = data.to(results_device)
            queue = Queue(maxsize=2)
            t = Thread(target=producer, args=(data, slicers, queue), daemon=True)
            t.start()

            predicted_logits = torch.zeros((self.label_manager.num_segmentation_heads, *data.shape[1:]),
                                           dtype=torch.half, device=results_device)
            n_predictions = torch.zeros(data.shape[1:], dtype=torch.half, device=results_device)
            second, with_entropy = needs(self.uncertainty_kinds)
            moments = WeightedMoments(self.label_manager.num_segmentation_heads, data.shape[1:], second,
                                      with_entropy, results_device)

            if self.use_gaussian:
                gaussian = compute_gaussian(tuple(self.configuration_manager.patch_size), sigma_scale=1. / 8,
                                            value_scaling_factor=10, device=results_device)
            else:
                gaussian = 1

            self._collect = True
            with tqdm(desc=None, total=len(slicers), disable=not self.allow_tqdm) as pbar:
                while True:
                    item = queue.get()
                    if item == 'end':
                        queue.task_done()
                        break
                    workon, sl = item
                    prediction = self._internal_maybe_mirror_and_predict(workon)[0].to(results_device)
                    tile = self._tile.to(results_device)

                    if self.use_gaussian:
                        prediction *= gaussian
                    predicted_logits[sl] += prediction
                    n_predictions[sl[1:]] += gaussian
                    moments.add_tile(sl, tile, gaussian)
                    queue.task_done()
                    pbar.update()
            queue.join()

            torch.div(predicted_logits, n_predictions, out=predicted_logits)
            if torch.any(torch.isinf(predicted_logits)):
                raise RuntimeError('Encountered inf in predicted array. Aborting... If this problem persists, '
                                   'reduce value_scaling_factor in compute_gaussian or increase the dtype of '
                                   'predicted_logits to fp32')
            self._fold_moments = moments
            return predicted_logits
        except Exception as e:
            del predicted_logits, n_predictions, prediction, gaussian, workon, moments
            self._fold_moments = None
            empty_cache(self.device)
            empty_cache(results_device)
            raise e
        finally:
            self._collect = False
            self._tile = None

    @torch.inference_mode()
    def predict_sliding_window_return_logits(self, input_image: torch.Tensor) -> Union[np.ndarray, torch.Tensor]:
        self._fold_moments = None
        logits = super().predict_sliding_window_return_logits(input_image)
        if self._fold_moments is not None:
            # nnU-Net padded the image centrally to at least the patch size (pad_nd_image); crop the
            # moments the way it crops the logits
            padded = self._fold_moments.spatial_shape
            target = tuple(int(s) for s in input_image.shape[1:])
            slicer = tuple(slice((p - s) // 2, (p - s) // 2 + s) for p, s in zip(padded, target))
            self._fold_moments = self._fold_moments.crop(slicer)
        return logits

    # ------------------------------------------------------------------ all folds of one case
    @torch.inference_mode()
    def predict_logits_from_preprocessed_data(self, data: torch.Tensor) -> torch.Tensor:
        """Mean logits over the fold models, as nnU-Net computes them; moments in :attr:`last_moments`.

        Parameters
        ----------
        data : torch.Tensor, shape (channels, *S)
            A preprocessed case.

        Returns
        -------
        torch.Tensor, shape (K, *S), on the CPU
            float16 like nnU-Net's; float32 with unequal fold weights.
        """
        n_threads = torch.get_num_threads()
        torch.set_num_threads(default_num_processes if default_num_processes < n_threads else n_threads)
        weights = self.fold_weights
        if weights is not None and len(weights) != len(self.list_of_parameters):
            raise ValueError(f"{len(weights)} fold weights for {len(self.list_of_parameters)} fold models")
        if weights is not None and all(w == weights[0] for w in weights):
            weights = None  # equal weights: nnU-Net's own arithmetic, bit for bit
        prediction = None
        case_moments = None
        self.last_moments = None
        for i, params in enumerate(self.list_of_parameters):
            if not isinstance(self.network, OptimizedModule):
                self.network.load_state_dict(params)
            else:
                self.network._orig_mod.load_state_dict(params)
            fold_logits = self.predict_sliding_window_return_logits(data).to('cpu')
            w = 1.0 if weights is None else weights[i]
            if weights is not None:
                fold_logits = fold_logits.float() * w
            if prediction is None:
                prediction = fold_logits
            else:
                prediction += fold_logits
            if self._fold_moments is not None:
                fold_moments = self._fold_moments.to('cpu')
                self._fold_moments = None
                if case_moments is None:
                    # a copy: the cropped moments are views of the padded buffers
                    case_moments = fold_moments.clone()
                    if w != 1.0:
                        case_moments.scale_(w)
                else:
                    case_moments.merge(fold_moments, other_scale=w)
        if weights is not None:
            prediction /= sum(weights)
        elif len(self.list_of_parameters) > 1:
            prediction /= len(self.list_of_parameters)
        self.last_moments = case_moments
        torch.set_num_threads(n_threads)
        return prediction

    def predict_logits_and_uncertainty(self, data: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, np.ndarray]]:
        """Logits and uncertainty maps of one preprocessed case (preprocessed space).

        Parameters
        ----------
        data : torch.Tensor, shape (channels, *S)

        Returns
        -------
        logits : torch.Tensor, shape (K, *S)
        maps : dict of str to np.ndarray
            kind -> float32 map of shape S (empty when no kinds are requested).
        """
        logits = self.predict_logits_from_preprocessed_data(data)
        return logits, self._maps_of_last_case()

    def _maps_of_last_case(self) -> Dict[str, np.ndarray]:
        if not self.uncertainty_kinds or self.last_moments is None:
            return {}
        maps = uncertainty_maps(self.last_moments, self.uncertainty_kinds, self.label_manager.has_regions)
        return {k: v.numpy() for k, v in maps.items()}

    # ------------------------------------------------------------------ files
    def uncertainty_files(self, output_file_truncated: str) -> List[str]:
        """Paths of the maps written for one case.

        Parameters
        ----------
        output_file_truncated : str
            The segmentation's path without file ending.
        """
        rw = self.plans_manager.image_reader_writer_class()
        return [uncertainty_file_name(output_file_truncated, k, self.dataset_json['file_ending'], rw,
                                      self.uncertainty_folder) for k in self.uncertainty_kinds]

    def expected_outputs(self, output_file_truncated: str, save_probabilities: bool) -> List[str]:
        """Every file this predictor writes for one case.

        Parameters
        ----------
        output_file_truncated : str
            The segmentation's path without file ending.
        save_probabilities : bool
            Whether ``.npz``/``.pkl`` are written too.
        """
        files = [output_file_truncated + self.dataset_json['file_ending']]
        if save_probabilities:
            files += [output_file_truncated + '.npz', output_file_truncated + '.pkl']
        return files + self.uncertainty_files(output_file_truncated)

    def _manage_input_and_output_lists(self, list_of_lists_or_source_folder, output_folder_or_list_of_truncated_output_files,
                                       folder_with_segs_from_prev_stage=None, overwrite=True, part_id=0, num_parts=1,
                                       save_probabilities=False):
        lists, outputs, prev = super()._manage_input_and_output_lists(
            list_of_lists_or_source_folder, output_folder_or_list_of_truncated_output_files,
            folder_with_segs_from_prev_stage, True, part_id, num_parts, save_probabilities)
        if overwrite or outputs is None:
            return lists, outputs, prev
        # a case counts as done only when its maps exist too
        todo = [i for i, o in enumerate(outputs)
                if not all(isfile(f) for f in self.expected_outputs(o, save_probabilities))]
        print(f'overwrite is False: {len(todo)} of {len(outputs)} cases still lack an output')
        return [lists[i] for i in todo], [outputs[i] for i in todo], [prev[i] for i in todo]

    def predict_from_files(self, list_of_lists_or_source_folder, output_folder_or_list_of_truncated_output_files,
                           save_probabilities: bool = False, overwrite: bool = True,
                           num_processes_preprocessing: int = default_num_processes,
                           num_processes_segmentation_export: int = default_num_processes,
                           folder_with_segs_from_prev_stage: str = None, num_parts: int = 1, part_id: int = 0):
        """As ``nnUNetPredictor.predict_from_files``; also writes :data:`SETTINGS_FILE` and the maps.

        ``num_processes_segmentation_export=0`` exports in this process.
        """
        ret = super().predict_from_files(list_of_lists_or_source_folder, output_folder_or_list_of_truncated_output_files,
                                         save_probabilities, overwrite, num_processes_preprocessing,
                                         num_processes_segmentation_export, folder_with_segs_from_prev_stage,
                                         num_parts, part_id)
        self._save_settings(output_folder_or_list_of_truncated_output_files)
        return ret

    def _save_settings(self, output) -> None:
        folder = output if isinstance(output, str) else \
            (os.path.dirname(output[0]) if isinstance(output, list) and output else None)
        if folder is None or not self.uncertainty_kinds:
            return
        save_json({
            'kinds': list(self.uncertainty_kinds),
            'file_pattern': f"<case>_uncertainty_<kind>{self.dataset_json['file_ending']}",
            'uncertainty_folder': self.uncertainty_folder,
            'mirror_axes': None if not self.use_mirroring or self.allowed_mirroring_axes is None
            else [int(a) for a in self.allowed_mirroring_axes],
            'num_folds': len(self.list_of_parameters),
            'fold_weights': None if self.fold_weights is None else list(self.fold_weights),
            'tile_step_size': self.tile_step_size,
            'use_gaussian': self.use_gaussian,
            'trainer_name': self.trainer_name,
            'definitions': 'see docs/inference.md of nnunet-ext: variants are all (tile, fold, mirror) '
                           'predictions nnU-Net averages into a voxel, weighted by gaussian * fold weight; '
                           'variance = mean over classes of the weighted variance of the probabilities; '
                           'entropy = entropy (nats) of the weighted mean probability; '
                           'mutual_information = entropy - weighted mean variant entropy',
        }, join(folder, SETTINGS_FILE), sort_keys=False)

    def predict_from_data_iterator(self, data_iterator, save_probabilities: bool = False,
                                   num_processes_segmentation_export: int = default_num_processes):
        """nnU-Net's loop over preprocessed cases, exporting the maps with the segmentation.

        Parameters
        ----------
        data_iterator : iterable of dict
            Items with 'data', 'data_properties' and 'ofile' (None: results are returned).
        save_probabilities : bool
            Write ``.npz``/``.pkl`` (or return probabilities).
        num_processes_segmentation_export : int
            Export worker processes (spawned, as in nnU-Net); 0 exports in this process.

        Returns
        -------
        list
            Per case: None when written to files, else ``(result, maps)`` (see
            :func:`~nnunet_ext.inference.export.convert_prediction_and_uncertainty`).
        """
        if num_processes_segmentation_export < 0:
            raise ValueError(f"num_processes_segmentation_export must be >= 0, got {num_processes_segmentation_export}")
        if num_processes_segmentation_export == 0:
            ret = [self._predict_and_export(p, save_probabilities, None) for p in data_iterator]
        else:
            with multiprocessing.get_context("spawn").Pool(num_processes_segmentation_export) as export_pool:
                worker_list = [i for i in export_pool._pool]
                r = []
                for preprocessed in data_iterator:
                    # do not let prediction run far ahead of the export workers (as nnU-Net does)
                    while check_workers_alive_and_busy(export_pool, worker_list, r, allowed_num_queued=2):
                        sleep(0.1)
                    r.append(self._predict_and_export(preprocessed, save_probabilities, export_pool))
                ret = [None] * len(r)
                with tqdm(desc="Collecting results", total=len(r), disable=not self.allow_tqdm) as pbar:
                    for i, result in enumerate(r):
                        while True:
                            if not all(j.is_alive() for j in worker_list):
                                raise RuntimeError('Segmentation export worker died. It was likely killed by '
                                                   'your OS because of insufficient available CPU RAM.')
                            try:
                                ret[i] = result.get(timeout=0.1)
                                break
                            except multiprocessing.TimeoutError:
                                pass
                        pbar.update()
        if isinstance(data_iterator, MultiThreadedAugmenter):
            data_iterator._finish()
        compute_gaussian.cache_clear()
        empty_cache(self.device)
        return ret

    def _predict_and_export(self, preprocessed: dict, save_probabilities: bool, pool):
        data = preprocessed['data']
        if isinstance(data, str):
            delfile = data
            data = torch.from_numpy(np.load(data))
            os.remove(delfile)
        ofile = preprocessed['ofile']
        properties = preprocessed['data_properties']
        if self.verbose:
            print(f'\nPredicting {os.path.basename(ofile) if ofile is not None else tuple(data.shape)}')
        logits, maps = self.predict_logits_and_uncertainty(data)
        # numpy: torch tensors can hit alignment errors in multiprocessing serialisation (as in nnU-Net)
        logits = logits.cpu().detach().numpy()
        if ofile is not None:
            args = (logits, maps, properties, self.configuration_manager, self.plans_manager, self.dataset_json,
                    ofile, save_probabilities, self.uncertainty_folder)
            fn = export_prediction_and_uncertainty
        else:
            args = (logits, maps, self.plans_manager, self.configuration_manager, self.label_manager, properties,
                    save_probabilities)
            fn = convert_prediction_and_uncertainty
        if pool is None:
            return fn(*args)
        return pool.apply_async(fn, args)

    def predict_from_files_sequential(self, list_of_lists_or_source_folder, output_folder_or_list_of_truncated_output_files,
                                      save_probabilities: bool = False, overwrite: bool = True,
                                      folder_with_segs_from_prev_stage: str = None):
        """As ``nnUNetPredictor.predict_from_files_sequential`` (no worker processes), with the maps."""
        if isinstance(output_folder_or_list_of_truncated_output_files, str):
            output_folder = output_folder_or_list_of_truncated_output_files
        elif isinstance(output_folder_or_list_of_truncated_output_files, list):
            output_folder = os.path.dirname(output_folder_or_list_of_truncated_output_files[0]) or os.path.curdir
        else:
            output_folder = None
        if output_folder is not None:
            os.makedirs(output_folder, exist_ok=True)
            save_json(dict(list_of_lists_or_source_folder=deepcopy(list_of_lists_or_source_folder),
                           output_folder_or_list_of_truncated_output_files=deepcopy(
                               output_folder_or_list_of_truncated_output_files),
                           save_probabilities=save_probabilities, overwrite=overwrite,
                           folder_with_segs_from_prev_stage=folder_with_segs_from_prev_stage),
                      join(output_folder, 'predict_from_raw_data_args.json'))
            save_json(self.dataset_json, join(output_folder, 'dataset.json'), sort_keys=False)
            save_json(self.plans_manager.plans, join(output_folder, 'plans.json'), sort_keys=False)
        if self.configuration_manager.previous_stage_name is not None and folder_with_segs_from_prev_stage is None:
            raise ValueError(f'the configuration is a cascade stage: it needs the segmentations of '
                             f'{self.configuration_manager.previous_stage_name} (folder_with_segs_from_prev_stage)')
        lists, outputs, prev = self._manage_input_and_output_lists(
            list_of_lists_or_source_folder, output_folder_or_list_of_truncated_output_files,
            folder_with_segs_from_prev_stage, overwrite, 0, 1, save_probabilities)
        if len(lists) == 0:
            return
        label_manager = self.plans_manager.get_label_manager(self.dataset_json)
        preprocessor = self.configuration_manager.preprocessor_class(verbose=self.verbose)
        outputs = [None] * len(lists) if outputs is None else outputs
        prev = [None] * len(lists) if prev is None else prev
        ret = []
        for li, of, sps in zip(lists, outputs, prev):
            data, seg, data_properties = preprocessor.run_case(li, sps, self.plans_manager,
                                                               self.configuration_manager, self.dataset_json)
            if folder_with_segs_from_prev_stage is not None:
                seg_onehot = convert_labelmap_to_one_hot(seg[0], label_manager.foreground_labels, data.dtype)
                data = np.vstack((data, seg_onehot))
            item = {'data': torch.from_numpy(data), 'data_properties': data_properties, 'ofile': of}
            out = self._predict_and_export(item, save_probabilities, None)
            if of is None:
                ret.append(out)
        compute_gaussian.cache_clear()
        empty_cache(self.device)
        self._save_settings(output_folder_or_list_of_truncated_output_files)
        return ret


def _check_weights(weights: Sequence[float], name: str) -> Tuple[float, ...]:
    out = tuple(float(w) for w in weights)
    if not out:
        raise ValueError(f"{name}: at least one weight is needed")
    if any(not np.isfinite(w) or w < 0 for w in out):
        raise ValueError(f"{name} must be finite and non-negative, got {list(out)}")
    if sum(out) <= 0:
        raise ValueError(f"{name} must not all be zero")
    return out
