"""A post-processing pipeline as JSON: an ordered list of steps, validated and applied to arrays.

Format (``docs/postprocessing.md``)::

    {
      "format": "nnunet_ext.postprocessing", "version": 1,
      "input": "segmentation",                 # or "probabilities"
      "labels": {...}, "regions_class_order": null,   # of the dataset it was made for
      "steps": [
        {"op": "keep_largest_components", "classes": ["liver"], "k": 1},
        {"op": "remove_small_components", "classes": ["tumour"], "min_voxels": 20},
        {"op": "bridge_gaps", "classes": ["vessel"], "max_length": 3.0}   # needs the .npz
      ],
      "metadata": {}                           # free-form, ignored when applying
    }

``classes`` names classes or regions of ``dataset.json``; several names make one mask (their
union), as nnU-Net's ``labels_or_regions`` lists do. Every error names the source and the key.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import connectivity as conn_ops
from . import operations as ops
from .labels import DatasetLabels, check_same_labels
from .regions import RULES
from .state import CaseState

FORMAT = "nnunet_ext.postprocessing"
VERSION = 1
INPUTS = ("segmentation", "probabilities")
_TOP_KEYS = {"format", "version", "input", "labels", "regions_class_order", "steps", "metadata"}

#: op -> (parameters that must be present, optional parameters with defaults)
OPS: Dict[str, Tuple[Tuple[str, ...], Dict[str, object]]] = {
    "remove_small_components": (("classes",), {"min_voxels": None, "min_volume": None,
                                               "connectivity": None}),
    "keep_largest_components": (("classes",), {"k": 1, "connectivity": None}),
    "fill_holes": (("classes",), {"connectivity": None}),
    "threshold": (("classes", "threshold"), {}),
    "hysteresis": (("classes", "low", "high"), {"connectivity": None}),
    "bridge_gaps": (("classes", "max_length"), {"min_probability": 0.1, "max_angle": 60.0,
                                                "dilate": False, "connectivity": None,
                                                "close_loops": 0.0}),
    "enforce_nesting": ((), {"rule": "intersect"}),
}
#: ops that edit exactly one class / region
_SINGLE_CLASS = {"fill_holes", "threshold", "hysteresis", "bridge_gaps"}
#: ops that need the saved probabilities
NEEDS_PROBABILITIES = {"threshold", "hysteresis", "bridge_gaps"}


class PipelineError(ValueError):
    """A pipeline (or its use) is invalid; the message names the source and the key."""


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (_is_int(v) or isinstance(v, (float, np.floating))) and np.isfinite(v)


def validate_step(step, where: str) -> dict:
    """Check one step and return it normalised (defaults filled, ``classes`` a list).

    Parameters
    ----------
    step : dict
        ``{"op": ..., parameters...}``.
    where : str
        Prefix of error messages (e.g. ``"pipeline.json: steps[2]"``).
    """
    if not isinstance(step, dict):
        raise PipelineError(f"{where}: a step must be an object, got {type(step).__name__}")
    if "op" not in step:
        raise PipelineError(f"{where}: missing key 'op' (one of {sorted(OPS)})")
    op = step["op"]
    if op not in OPS:
        raise PipelineError(f"{where}.op: unknown step {op!r}; known: {sorted(OPS)}")
    where = f"{where} ({op})"
    required, optional = OPS[op]
    for key in required:
        if key not in step:
            raise PipelineError(f"{where}: missing parameter '{key}'")
    unknown = sorted(set(step) - {"op"} - set(required) - set(optional))
    if unknown:
        raise PipelineError(f"{where}: unknown parameter(s) {unknown}; allowed: "
                            f"{sorted(set(required) | set(optional))}")
    out = {"op": op}
    if "classes" in required:
        classes = step["classes"]
        if isinstance(classes, str):
            classes = [classes]
        if (not isinstance(classes, list) or not classes
                or not all(isinstance(c, str) for c in classes)):
            raise PipelineError(f"{where}.classes: must be a class name or a non-empty list of "
                                f"names, got {step['classes']!r}")
        if len(set(classes)) != len(classes):
            raise PipelineError(f"{where}.classes: repeated name in {classes}")
        if op in _SINGLE_CLASS and len(classes) != 1:
            raise PipelineError(f"{where}.classes: '{op}' edits one class or region, got {classes}")
        out["classes"] = list(classes)
    for key, default in optional.items():
        out[key] = step.get(key, default)
    conn = out.get("connectivity")
    if conn is not None and conn not in (4, 6, 8, 18, 26):
        raise PipelineError(f"{where}.connectivity: must be 6, 18 or 26 (3D), 4 or 8 (2D) or "
                            f"null, got {conn!r}")
    if op == "remove_small_components":
        given = [k for k in ("min_voxels", "min_volume") if out[k] is not None]
        if len(given) != 1:
            raise PipelineError(f"{where}: give exactly one of 'min_voxels' and 'min_volume'")
        if out["min_voxels"] is not None and not (_is_int(out["min_voxels"]) and out["min_voxels"] >= 1):
            raise PipelineError(f"{where}.min_voxels: must be an integer ≥ 1, got {out['min_voxels']!r}")
        if out["min_volume"] is not None and not (_is_number(out["min_volume"]) and out["min_volume"] > 0):
            raise PipelineError(f"{where}.min_volume: must be a positive number, got {out['min_volume']!r}")
    elif op == "keep_largest_components":
        if not (_is_int(out["k"]) and out["k"] >= 1):
            raise PipelineError(f"{where}.k: must be an integer ≥ 1, got {out['k']!r}")
    elif op == "threshold":
        t = step["threshold"]
        if not (_is_number(t) and 0.0 <= t <= 1.0):
            raise PipelineError(f"{where}.threshold: must be a number in [0, 1], got {t!r}")
        out["threshold"] = float(t)
    elif op == "hysteresis":
        for key in ("low", "high"):
            out[key] = step[key]
            if not (_is_number(out[key]) and 0.0 <= out[key] <= 1.0):
                raise PipelineError(f"{where}.{key}: must be a number in [0, 1], got {out[key]!r}")
            out[key] = float(out[key])
        if not out["low"] < out["high"]:
            raise PipelineError(f"{where}.low: must be below 'high' ({out['high']}), got {out['low']}")
    elif op == "bridge_gaps":
        out["max_length"] = step["max_length"]
        if not (_is_number(out["max_length"]) and out["max_length"] > 0):
            raise PipelineError(f"{where}.max_length: must be a positive number (physical units of "
                                f"the spacing), got {out['max_length']!r}")
        if not (_is_number(out["min_probability"]) and 0.0 <= out["min_probability"] <= 1.0):
            raise PipelineError(f"{where}.min_probability: must be a number in [0, 1], got "
                                f"{out['min_probability']!r}")
        if not (_is_number(out["max_angle"]) and 0.0 < out["max_angle"] <= 180.0):
            raise PipelineError(f"{where}.max_angle: must be a number of degrees in (0, 180], got "
                                f"{out['max_angle']!r}")
        if not isinstance(out["dilate"], bool):
            raise PipelineError(f"{where}.dilate: must be true or false, got {out['dilate']!r}")
        if not (_is_number(out["close_loops"]) and out["close_loops"] >= 0):
            raise PipelineError(f"{where}.close_loops: must be 0 (never join a component to itself) "
                                f"or a positive length, got {out['close_loops']!r}")
        for key in ("max_length", "min_probability", "max_angle", "close_loops"):
            out[key] = float(out[key])
    elif op == "enforce_nesting":
        if out["rule"] not in RULES:
            raise PipelineError(f"{where}.rule: must be one of {list(RULES)}, got {out['rule']!r}")
    return out


def validate_pipeline(obj, source: str = "pipeline") -> dict:
    """Check a pipeline (parsed JSON) and return it normalised.

    Parameters
    ----------
    obj : dict
        The pipeline; see the module docstring.
    source : str
        Name used in error messages (usually the file path).

    Returns
    -------
    dict with every top-level key present and every step normalised by :func:`validate_step`.
    """
    if not isinstance(obj, dict):
        raise PipelineError(f"{source}: a pipeline must be a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - _TOP_KEYS)
    if unknown:
        raise PipelineError(f"{source}: unknown key(s) {unknown}; allowed: {sorted(_TOP_KEYS)}")
    if obj.get("format", FORMAT) != FORMAT:
        raise PipelineError(f"{source}.format: expected {FORMAT!r}, got {obj['format']!r}")
    if obj.get("version", VERSION) != VERSION:
        raise PipelineError(f"{source}.version: only version {VERSION} is supported, got "
                            f"{obj['version']!r}")
    inp = obj.get("input", "segmentation")
    if inp not in INPUTS:
        raise PipelineError(f"{source}.input: must be one of {list(INPUTS)}, got {inp!r}")
    if "steps" not in obj:
        raise PipelineError(f"{source}: missing key 'steps' (a list, may be empty)")
    if not isinstance(obj["steps"], list):
        raise PipelineError(f"{source}.steps: must be a list, got {type(obj['steps']).__name__}")
    labels = obj.get("labels")
    if labels is not None and not isinstance(labels, dict):
        raise PipelineError(f"{source}.labels: must be the 'labels' object of dataset.json")
    meta = obj.get("metadata", {})
    if not isinstance(meta, dict):
        raise PipelineError(f"{source}.metadata: must be an object")
    steps = [validate_step(s, f"{source}: steps[{i}]") for i, s in enumerate(obj["steps"])]
    return {"format": FORMAT, "version": VERSION, "input": inp, "labels": labels,
            "regions_class_order": obj.get("regions_class_order"), "steps": steps,
            "metadata": meta}


def make_pipeline(steps: Sequence[dict], labels: Optional[DatasetLabels] = None,
                  input: str = "segmentation", metadata: Optional[dict] = None) -> dict:
    """Build a validated pipeline from steps (and the dataset's labels, recorded for checking)."""
    obj = {"input": input, "steps": list(steps), "metadata": dict(metadata or {})}
    if labels is not None:
        obj["labels"] = labels.labels_dict
        obj["regions_class_order"] = (list(labels.regions_class_order)
                                      if labels.regions_class_order is not None else None)
    return validate_pipeline(obj)


def load_pipeline(path: str) -> dict:
    """Read and validate a pipeline JSON file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pipeline file not found: {path}")
    with open(path) as f:
        try:
            obj = json.load(f)
        except json.JSONDecodeError as e:
            raise PipelineError(f"{path} is not valid JSON: {e}") from None
    return validate_pipeline(obj, source=path)


def save_pipeline(pipeline: dict, path: str, overwrite: bool = False) -> str:
    """Write a pipeline as JSON atomically (temporary file, then renamed)."""
    pipeline = validate_pipeline(pipeline)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists (use overwrite)")
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(pipeline, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return path


def resolve_steps(pipeline: dict, labels: DatasetLabels,
                  source: str = "pipeline") -> List[Tuple[dict, Tuple[int, ...]]]:
    """Check a validated pipeline against a dataset and return ``(step, class indices)`` pairs.

    Raises
    ------
    PipelineError
        If the pipeline was made for other labels, names an unknown class, or asks for
        nesting enforcement (or ``input: probabilities``) where that has no meaning.
    """
    if pipeline.get("labels") is not None:
        try:
            check_same_labels(pipeline["labels"], labels.labels_dict, f"{source}.labels")
        except ValueError as e:
            raise PipelineError(str(e)) from None
    out = []
    for i, step in enumerate(pipeline["steps"]):
        where = f"{source}: steps[{i}] ({step['op']})"
        if step["op"] == "enforce_nesting":
            if not labels.has_regions:
                raise PipelineError(f"{where}: the dataset has no regions, nothing can be nested")
            out.append((step, ()))
            continue
        idx = []
        for name in step["classes"]:
            try:
                idx.append(labels.index(name, f"{where}.classes"))
            except KeyError as e:
                raise PipelineError(e.args[0]) from None
        out.append((step, tuple(idx)))
    return out


def needs_probabilities(pipeline: dict) -> bool:
    """Whether applying the pipeline needs the saved probabilities (``.npz``)."""
    return pipeline["input"] == "probabilities" or any(
        s["op"] in NEEDS_PROBABILITIES for s in pipeline["steps"])


def initial_state(labels: DatasetLabels, seg: Optional[np.ndarray], probabilities: Optional[np.ndarray],
                  input: str = "segmentation") -> CaseState:
    """The case before the first step: from the label map, or (``input = "probabilities"``)
    from nnU-Net's raw decision on the probabilities."""
    if input == "probabilities":
        if probabilities is None:
            raise PipelineError("the pipeline starts from the probabilities, but none were given")
        return CaseState.from_probabilities(labels, probabilities)
    return CaseState(labels, seg=seg)


def apply_step(state: CaseState, step: dict, indices: Sequence[int],
               spacing: Optional[Sequence[float]] = None,
               probabilities: Optional[np.ndarray] = None) -> Dict[str, int]:
    """Apply one validated, resolved step to ``state`` in place.

    Parameters
    ----------
    state : CaseState
    step : dict
        A step from :func:`validate_step`.
    indices : sequence of int
        Its classes / regions (from :func:`resolve_steps`).
    spacing : sequence of float, optional
        Voxel size in array-axis order (for ``min_volume`` and ``bridge_gaps``).
    probabilities : ndarray of float, shape (n_channels, *S), optional
        Needed by ``threshold``, ``hysteresis`` and ``bridge_gaps``.

    Returns
    -------
    dict ``removed`` / ``added``: voxels that left / joined the step's classes (their union);
    for ``enforce_nesting`` summed over all regions.
    """
    op = step["op"]
    ndim = len(state.shape)
    if step.get("connectivity") is not None:
        ops.check_connectivity(ndim, step["connectivity"])
    if op == "enforce_nesting":
        before = state.masks.copy()
        state.enforce_nesting(step["rule"])
        return {"removed": int(np.count_nonzero(before & ~state.masks)),
                "added": int(np.count_nonzero(state.masks & ~before))}
    before = state.mask(indices)
    if op == "remove_small_components":
        after = ops.remove_small_components(before, step["min_voxels"], step["min_volume"],
                                            spacing, step["connectivity"])
        state.remove(indices, before & ~after)
    elif op == "keep_largest_components":
        after = ops.keep_largest_components(before, step["k"], step["connectivity"])
        state.remove(indices, before & ~after)
    elif op == "fill_holes":
        after = ops.fill_holes(before, step["connectivity"])
        state.add(indices[0], after & ~before)
    elif op in NEEDS_PROBABILITIES:
        if probabilities is None:
            raise PipelineError(f"step '{op}' on {step['classes']} needs the saved "
                                "probabilities (.npz), none were given")
        if op == "threshold":
            state.set_from_probability(indices[0], probabilities, step["threshold"])
        elif op == "hysteresis":
            new = conn_ops.hysteresis_threshold(state.probability(indices[0], probabilities),
                                                step["low"], step["high"], step["connectivity"])
            state.set_mask(indices[0], new, probabilities)
        else:  # bridge_gaps: paths never cross another class of a label map
            after = conn_ops.bridge_gaps(
                before, state.probability(indices[0], probabilities), spacing,
                step["max_length"], step["min_probability"], step["max_angle"], step["dilate"],
                step["connectivity"], barrier=state.other_classes(indices[0]),
                close_loops=step["close_loops"])
            state.add(indices[0], after & ~before)
    else:  # validate_step guarantees a known op
        raise AssertionError(op)
    now = state.mask(indices)
    return {"removed": int(np.count_nonzero(before & ~now)), "added": int(np.count_nonzero(now & ~before))}


def check_probabilities(probabilities: np.ndarray, labels: DatasetLabels, shape: Sequence[int],
                        where: str = "probabilities") -> np.ndarray:
    """Validate saved probabilities against the dataset and the segmentation's shape.

    Parameters
    ----------
    probabilities : ndarray, shape (n_channels, *S) (a singleton axis of 2D images is allowed)
    shape : spatial shape S of the segmentation.
    """
    p = np.asarray(probabilities)
    shape = tuple(shape)
    if p.ndim == len(shape) + 2 and p.shape[1] == 1:  # nnU-Net stores 2D as (C, 1, X, Y)
        p = p[:, 0]
    if p.shape != (labels.n_channels,) + shape:
        raise PipelineError(f"{where}: shape {p.shape}, expected {(labels.n_channels,) + shape} "
                            f"({labels.n_channels} channels × the segmentation's shape)")
    return p


def apply_pipeline(
    seg: Optional[np.ndarray],
    pipeline: dict,
    labels: DatasetLabels,
    spacing: Optional[Sequence[float]] = None,
    probabilities: Optional[np.ndarray] = None,
    source: str = "pipeline",
) -> Tuple[np.ndarray, List[Dict[str, int]]]:
    """Apply a pipeline to one segmentation.

    Parameters
    ----------
    seg : ndarray of int, shape (Z, Y, X) or (Y, X), or None
        The predicted label map (may be ``None`` when ``input`` is ``probabilities``).
    pipeline : dict
        Validated pipeline (:func:`validate_pipeline` / :func:`load_pipeline`).
    labels : DatasetLabels
        The dataset's classes or regions.
    spacing : sequence of float, optional
        Voxel size in array-axis order (default 1 per axis).
    probabilities : ndarray of float, shape (n_channels, *S), optional
        nnU-Net's saved probabilities, needed by ``threshold``, ``hysteresis``,
        ``bridge_gaps`` and ``input: probabilities``.
    source : str
        Name of the pipeline in error messages.

    Returns
    -------
    seg_out : ndarray of int, same shape
    log : list of dict, one ``{"removed", "added"}`` per step
    """
    steps = resolve_steps(pipeline, labels, source)
    if seg is None and probabilities is None:
        raise PipelineError("give a segmentation or probabilities")
    shape = seg.shape if seg is not None else np.asarray(probabilities).shape[1:]
    if len(shape) not in (2, 3):
        raise PipelineError(f"segmentation must be 2D or 3D, got shape {shape}")
    if probabilities is not None:
        probabilities = check_probabilities(probabilities, labels, shape)
    elif needs_probabilities(pipeline):
        raise PipelineError(f"{source}: needs the saved probabilities (.npz), none were given")
    if spacing is not None:
        ops.voxel_volume(spacing, len(shape))  # validates
    state = initial_state(labels, seg, probabilities, pipeline["input"])
    log = []
    for i, (step, idx) in enumerate(steps):
        try:
            log.append(apply_step(state, step, idx, spacing, probabilities))
        except PipelineError:
            raise
        except ValueError as e:  # e.g. a 3D connectivity on a 2D image
            raise PipelineError(f"{source}: steps[{i}] ({step['op']}): {e}") from None
    out = state.segmentation()
    if seg is not None:
        out = out.astype(seg.dtype, copy=False)
    return out, log
