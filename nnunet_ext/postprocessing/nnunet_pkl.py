"""Export a pipeline to nnU-Net's own ``postprocessing.pkl`` where the steps allow it.

nnU-Net's ``nnUNetv2_apply_postprocessing -pp_pkl_file`` loads a pickle of
``(pp_fns, pp_fn_kwargs)``: a list of functions and a list of keyword dicts, and calls
``seg = fn(seg, **kwargs)`` in turn on the label map (``apply_postprocessing`` in
``nnunetv2/postprocessing/remove_connected_components.py``). The only function nnU-Net itself
writes there is ``remove_all_but_largest_component_from_segmentation`` with
``labels_or_regions`` (an int label, a region tuple or a list of them, masks united), which keeps
the largest component(s) under full connectivity and sets every other voxel of the mask to
background.

That equals our ``keep_largest_components`` with ``k = 1`` and default (full) connectivity on a
pipeline that starts from the segmentation — for regions only if no other region shares a label
with the targets without lying inside them (nnU-Net's function turns removed voxels into
background, i.e. takes them out of every region; ours keeps them in the enclosing regions, so
keep-largest on BraTS's tumour core is not expressible, on the whole tumour it is). Anything
else (other steps; thresholds, hysteresis and gap bridging, which read the probabilities;
nesting repair) cannot be written for the stock command; :func:`nnunet_steps` says why.

This module only ever *writes* pickles; our own files are JSON.
"""
from __future__ import annotations

import os
import pickle
from typing import List, Optional, Tuple

from .labels import DatasetLabels
from .pipeline import NEEDS_PROBABILITIES, resolve_steps


class NotExpressible(ValueError):
    """The pipeline cannot be written as nnU-Net's ``postprocessing.pkl``."""


def nnunet_steps(pipeline: dict, labels: DatasetLabels) -> List[dict]:
    """The ``pp_fn_kwargs`` of nnU-Net's ``remove_all_but_largest_component_from_segmentation``
    for each step, or :class:`NotExpressible` naming the first step that has no equivalent.

    Parameters
    ----------
    pipeline : dict
        Validated pipeline.
    labels : DatasetLabels
        The dataset it is applied to.
    """
    if pipeline["input"] != "segmentation":
        raise NotExpressible("the pipeline starts from the probabilities; nnU-Net's post-processing "
                             "only sees the segmentation")
    out = []
    for i, (step, idx) in enumerate(resolve_steps(pipeline, labels)):
        where = f"steps[{i}] ({step['op']})"
        if step["op"] in NEEDS_PROBABILITIES:
            raise NotExpressible(f"{where}: needs the saved probabilities (.npz); nnU-Net's "
                                 "post-processing only sees the segmentation")
        if step["op"] != "keep_largest_components":
            raise NotExpressible(f"{where}: nnU-Net's post-processing only keeps the largest "
                                 "component")
        if step["k"] != 1:
            raise NotExpressible(f"{where}: k = {step['k']}, nnU-Net keeps only the largest (k = 1)")
        if step["connectivity"] not in (None, 26, 8):
            raise NotExpressible(f"{where}: connectivity {step['connectivity']}, nnU-Net uses the "
                                 "full neighbourhood")
        if labels.has_regions:
            # nnU-Net sets removed voxels to background, i.e. removes them from every region;
            # we remove them from the targets and the regions inside them. Equal only if no
            # other region shares a label with the targets.
            edited = set(idx).union(*(_inside(labels, j) for j in idx))
            target_values = {v for j in idx for v in labels.values[j]}
            others = [labels.names[j] for j in range(len(labels.values))
                      if j not in edited and target_values & set(labels.values[j])]
            if others:
                raise NotExpressible(f"{where}: region(s) {others} share labels with "
                                     f"{step['classes']} without lying inside them; nnU-Net would "
                                     "remove the voxels from those regions too")
        keys = [labels.nnunet_keys[j] for j in idx]
        out.append({"labels_or_regions": keys[0] if len(keys) == 1 else keys})
    return out


def _inside(labels: DatasetLabels, j: int):
    return [i for i, anc in enumerate(labels.ancestors) if j in anc]


def to_nnunet_postprocessing(pipeline: dict, labels: DatasetLabels) -> Tuple[list, List[dict]]:
    """``(pp_fns, pp_fn_kwargs)`` as nnU-Net's ``load_pickle(postprocessing.pkl)`` returns them."""
    from nnunetv2.postprocessing.remove_connected_components import (
        remove_all_but_largest_component_from_segmentation,
    )

    kwargs = nnunet_steps(pipeline, labels)
    return [remove_all_but_largest_component_from_segmentation] * len(kwargs), kwargs


def write_nnunet_pkl(pipeline: dict, labels: DatasetLabels, path: str,
                     overwrite: bool = False) -> Optional[str]:
    """Write ``postprocessing.pkl`` for ``nnUNetv2_apply_postprocessing`` (atomically).

    Returns
    -------
    The path, or raises :class:`NotExpressible` (nothing written) when the pipeline has no
    nnU-Net equivalent.
    """
    fns, kwargs = to_nnunet_postprocessing(pipeline, labels)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists (use overwrite)")
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        pickle.dump((fns, kwargs), f)
    os.replace(tmp, path)
    return path
