"""Choose a post-processing pipeline on cross-validation predictions.

Greedy forward selection, one step at a time (``docs/postprocessing.md``):

1. Region datasets whose predictions come with probabilities: nesting enforcement first
   (start from the raw per-region ``p > 0.5`` masks, repaired by a rule).
2. Label datasets with several classes: keep the largest component of all foreground together
   (nnU-Net's own first candidate).
3. Every class / region in ``dataset.json`` order: candidates are a probability threshold or
   hysteresis (when probabilities exist), keep the k largest components, remove components
   below a size (sizes taken from the distribution of the predicted component sizes), fill
   holes, bridge gaps between components (when probabilities exist and some case has more
   than one component).

A candidate qualifies if the mean objective over cases of its target classes rises by more than
``margin``, no class's mean falls by more than ``margin`` and the mean over all classes rises;
the qualifying candidate with the largest rise of the all-class mean is accepted (ties: the
earlier one). With a Dice guard (``max_dice_drop``; on by default for the ``topology``
objective) a candidate that leaves any class's mean Dice more than that below its value before
post-processing is refused whatever the objective says; the same for clDice (``max_cldice_drop``;
0 by default for ``topology``: no step may lower the mean clDice). The class's candidates are then
generated again from the new predictions and evaluated again, until none qualifies (each kind
of step at most once per class).

Metrics come from :mod:`nnunet_ext.evaluation` (ignore-label voxels removed from both masks).
Each pass over the cases reads every case once and evaluates all current candidates on it, so
memory stays at one case per worker.
"""
from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..image_io import ImageReadError, geometry_problem
from .folder import Case, allowed_label_values, find_cases, find_cv_cases, load_dataset_json, \
    read_probabilities, read_segmentation, reader_writer_class
from .labels import DatasetLabels
from .operations import label_components, voxel_volume
from .pipeline import apply_step, check_probabilities, initial_state, make_pipeline, \
    validate_step

#: default margin: a step must raise the mean objective by more than this
DEFAULT_MARGIN = 1e-3
DEFAULT_THRESHOLDS = (0.3, 0.4, 0.6, 0.7)
DEFAULT_SIZE_PERCENTILES = (10, 25, 50, 75, 90)
DEFAULT_MAX_K = 3
#: (low, high) pairs tried for hysteresis
DEFAULT_HYSTERESIS = ((0.2, 0.5), (0.3, 0.5), (0.4, 0.5), (0.3, 0.7))
#: longest gaps tried by bridge_gaps, in voxels of the finest axis (converted to physical
#: lengths with the median over cases of the smallest spacing)
DEFAULT_BRIDGE_VOXELS = (3.0, 6.0)
#: floors of the mean probability on a bridged gap
DEFAULT_BRIDGE_FLOORS = (0.1, 0.25)
#: ``bridge_gaps`` candidates that close broken rings (for classes whose references have loops)
#: join an end point back to its own component at least this many gap lengths away along it
LOOP_LENGTH_FACTOR = 4.0

#: metrics derived here from the evaluation's ones: name -> True if higher is better
DERIVED_METRICS: Dict[str, bool] = {"betti_0_relative_error": False, "betti_1_relative_error": False}
#: named objectives: name -> (metric weights, default guards: metric -> largest tolerated fall of a
#: class's mean below its value before post-processing). ``topology``: Betti-0 errors are integers and
#: outweigh clDice's fractions, so without the clDice guard the search removes true small pieces of a
#: structure (short branches, ends cut by the image border) for fewer components — measured on the
#: topology benchmark: test clDice −1.7 points, Dice −2.1 with the Dice guard alone.
OBJECTIVES: Dict[str, Tuple[Dict[str, float], Dict[str, float]]] = {
    "topology": ({"cldice": 1.0, "betti_0_relative_error": 0.1, "betti_1_relative_error": 0.1},
                 {"dice": 0.01, "cldice": 0.0}),
}


def _higher_is_better(name: str) -> bool:
    from nnunet_ext.evaluation import METRICS

    return {**METRICS, **DERIVED_METRICS}[name]


# ---------------------------------------------------------------------------- objective
def parse_objective(spec: Union[str, Dict[str, float]]) -> Dict[str, float]:
    """Metric weights from ``"dice"``, ``"dice,cldice"`` (equal weights),
    ``"dice=0.7,betti_0_error=0.05"`` or a named objective of :data:`OBJECTIVES`.

    The objective of one class in one case is ``Σ w_m · s_m · value_m`` with ``s_m = +1`` for
    metrics where higher is better and ``-1`` otherwise (:data:`nnunet_ext.evaluation.METRICS`
    and :data:`DERIVED_METRICS`: ``betti_k_relative_error`` = ``|βk(pred) − βk(ref)| /
    max(βk(ref), 1)`` for k = 0, 1, full connectivity). ``"topology"`` is
    ``cldice − 0.1 · betti_0_relative_error − 0.1 · betti_1_relative_error`` (with a Dice and a
    clDice guard, :func:`objective_guards`): wrong components and wrong loops (a broken ring, a
    false hole in a sheet) both count.

    Returns
    -------
    dict metric name -> weight (> 0).
    """
    from nnunet_ext.evaluation import METRICS

    if isinstance(spec, str) and spec.strip() in OBJECTIVES:
        return dict(OBJECTIVES[spec.strip()][0])
    if isinstance(spec, dict):
        items = [(str(k), float(v)) for k, v in spec.items()]
    else:
        items = []
        for part in str(spec).split(","):
            part = part.strip()
            if not part:
                continue
            name, _, w = part.partition("=")
            try:
                items.append((name.strip(), float(w) if w else None))
            except ValueError:
                raise ValueError(f"metric {part!r}: weight {w!r} is not a number") from None
        if items and all(w is None for _, w in items):
            items = [(n, 1.0 / len(items)) for n, _ in items]
        items = [(n, 1.0 if w is None else w) for n, w in items]
    if not items:
        raise ValueError("no metric given for the post-processing objective")
    unknown = [n for n, _ in items if n not in METRICS and n not in DERIVED_METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: "
                         f"{sorted(METRICS) + sorted(DERIVED_METRICS)} or an objective name "
                         f"{sorted(OBJECTIVES)}")
    if any(not np.isfinite(w) or w <= 0 for _, w in items):
        raise ValueError(f"metric weights must be positive, got {dict(items)}")
    return dict(items)


def objective_guards(spec: Union[str, Dict[str, float]]) -> Dict[str, float]:
    """Default guards of an objective spec: ``{metric: largest tolerated fall of a class's mean below
    its value before post-processing}`` — the named objective's (``topology``: Dice 0.01, one point;
    clDice 0, no fall), otherwise none."""
    if isinstance(spec, str) and spec.strip() in OBJECTIVES:
        return dict(OBJECTIVES[spec.strip()][1])
    return {}


def objective_dice_guard(spec: Union[str, Dict[str, float]]) -> Optional[float]:
    """Default largest tolerated fall of a class's mean Dice for an objective spec: the named
    objective's (``topology``: 0.01, one Dice point), otherwise ``None`` (no guard)."""
    return objective_guards(spec).get("dice")


def objective_label(weights: Dict[str, float]) -> str:
    if len(weights) == 1:
        return next(iter(weights))
    out = ""
    for m, w in weights.items():  # lower-is-better metrics count negatively: show the sign
        sign = "+" if _higher_is_better(m) else "−"
        out += (f" {sign} " if out else ("" if sign == "+" else "−")) + f"{w:g}·{m}"
    return out


def _objective(weights: Dict[str, float], values: Dict[str, float]) -> float:
    return float(sum(w * (values[m] if _higher_is_better(m) else -values[m])
                     for m, w in weights.items()))


def _display(weights: Dict[str, float], values: Dict[str, float]) -> float:
    # a single metric is shown as itself (e.g. a Betti error stays positive), a compound as the
    # signed objective
    return float(values[next(iter(weights))]) if len(weights) == 1 else _objective(weights, values)


# ---------------------------------------------------------------------------- one pass over the cases
def _metrics(pred: np.ndarray, ref: np.ndarray, valid, spacing, names) -> Dict[str, float]:
    from nnunet_ext.evaluation import case_metrics

    if valid is not None:
        pred, ref = pred & valid, ref & valid
    base = [m for m in names if m not in DERIVED_METRICS]
    relative = [k for k in (0, 1) if f"betti_{k}_relative_error" in names]
    base += [f"betti_{k}_error" for k in relative if f"betti_{k}_error" not in base]
    res = case_metrics(pred, ref, spacing, metrics=base)
    out = {m: float(res[m]) for m in base}
    if 0 in relative:
        # same components as the evaluation's Betti numbers (full connectivity)
        n_ref = label_components(ref)[1].size
        out["betti_0_relative_error"] = out["betti_0_error"] / max(n_ref, 1)
    if 1 in relative:
        from nnunet_ext.evaluation import betti_numbers

        loops = int(betti_numbers(ref)[1]) if ref.any() else 0
        out["betti_1_relative_error"] = out["betti_1_error"] / max(loops, 1)
    return out


def _has_loops(mask: np.ndarray, valid) -> bool:
    """Whether a reference mask has a loop (Betti-1 > 0, full connectivity)."""
    from nnunet_ext.evaluation import betti_numbers

    if valid is not None:
        mask = mask & valid
    return bool(mask.any()) and int(betti_numbers(mask)[1]) > 0


def _sizes(state, indices) -> np.ndarray:
    return label_components(state.mask(indices))[1] if indices else np.zeros(0, np.int64)


def _case_pass(job) -> dict:
    """Read one case, apply the current pipeline, evaluate the candidates (worker function)."""
    case, c = job
    rw = c["reader_cls"]()
    labels: DatasetLabels = c["labels"]
    allowed = allowed_label_values(labels)
    pred, spacing, pred_props, _ = read_segmentation(rw, case.pred, allowed, "prediction")
    ref, sp_ref, ref_props, _ = read_segmentation(rw, case.ref, allowed, "reference")
    if pred.shape != ref.shape:
        raise ImageReadError(None, f"case {case.name}: prediction {case.pred} has shape {pred.shape}, "
                                   f"reference {case.ref} has shape {ref.shape}")
    problem = geometry_problem(pred_props, ref_props, f"reference {case.ref}")
    if problem is not None:
        raise ImageReadError(case.pred, f"prediction {problem}")
    probs = None
    if c["use_probabilities"]:
        probs = check_probabilities(read_probabilities(case.npz), labels, pred.shape, case.npz)
    valid = None if labels.ignore_label is None else ref != labels.ignore_label
    n_classes = len(labels.names)

    def metrics(state, i):  # masks are built one class at a time: datasets may have many
        return _metrics(state.class_mask(i), labels.class_mask(ref, i), valid, spacing, c["metrics"])

    def build(input_, extra=()):
        state = initial_state(labels, pred, probs, input_)
        for step, idx in c["steps"]:
            apply_step(state, step, idx, spacing, probs)
        log = [apply_step(state, step, idx, spacing, probs) for step, idx in extra]
        return state, log

    state, _ = build(c["input"])
    out = {"name": case.name, "voxel_volume": voxel_volume(spacing, pred.ndim),
           "spacing": tuple(spacing), "candidates": []}
    if c["compute_base"]:
        out["base"] = [metrics(state, i) for i in range(n_classes)]
        out["ref_loops"] = [_has_loops(labels.class_mask(ref, i), valid) for i in range(n_classes)]
    if c["stats_target"] is not None:
        out["sizes"] = _sizes(state, c["stats_target"])
    for cand in c["candidates"]:
        input_ = cand["input"] or c["input"]
        if input_ != c["input"]:
            new, log = build(input_, [(cand["step"], cand["indices"])])
        else:
            new = state.copy()
            log = [apply_step(new, cand["step"], cand["indices"], spacing, probs)]
        # unchanged classes keep their metric values (computed once, in an earlier pass)
        values = {i: metrics(new, i) for i in changed_classes(labels, state, new)}
        out["candidates"].append({
            "values": values, "removed": log[-1]["removed"], "added": log[-1]["added"],
            "sizes": _sizes(new, c["stats_target"]) if c["stats_target"] is not None else None})
    return out


def changed_classes(labels: DatasetLabels, before, after) -> List[int]:
    """Indices of the classes / regions whose mask differs between two states of a case."""
    if labels.has_regions:
        return [i for i in range(len(labels.names))
                if not np.array_equal(before.masks[i], after.masks[i])]
    diff = before.seg != after.seg
    if not diff.any():
        return []
    touched = set(np.unique(before.seg[diff]).tolist()) | set(np.unique(after.seg[diff]).tolist())
    return [i for i, v in enumerate(labels.values) if touched & set(v)]


class _Runner:
    """Runs passes over the cases, in this process or in a pool of spawned workers."""

    def __init__(self, cases: Sequence[Case], common: dict, num_processes: int, progress: bool):
        self.cases, self.common, self.progress = list(cases), common, progress
        self.pool = (multiprocessing.get_context("spawn").Pool(num_processes)
                     if num_processes > 1 else None)

    def run(self, desc: str, **kwargs) -> List[dict]:
        from tqdm import tqdm

        common = {**self.common, **kwargs}
        jobs = [(case, common) for case in self.cases]
        it = map(_case_pass, jobs) if self.pool is None else self.pool.imap(_case_pass, jobs)
        return list(tqdm(it, total=len(jobs), desc=desc, unit="case", disable=not self.progress))

    def close(self, terminate: bool = False):
        if self.pool is not None:
            if terminate:  # after an error the workers may still be busy with the pass
                self.pool.terminate()
            else:
                self.pool.close()
            self.pool.join()


# ---------------------------------------------------------------------------- candidates
def _fmt_size(v: float) -> float:
    return float(f"{v:.4g}")


def candidate_steps(
    classes: Sequence[str],
    sizes: Sequence[np.ndarray],
    voxel_volumes: Sequence[float],
    same_spacing: bool,
    probabilities: bool,
    done: Sequence[str] = (),
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    size_percentiles: Sequence[float] = DEFAULT_SIZE_PERCENTILES,
    max_k: int = DEFAULT_MAX_K,
    hysteresis: Sequence[Tuple[float, float]] = DEFAULT_HYSTERESIS,
    bridge_lengths: Sequence[float] = (),
    bridge_floors: Sequence[float] = DEFAULT_BRIDGE_FLOORS,
    close_loops: bool = False,
) -> List[dict]:
    """Candidate steps for one class / region (or a union of them).

    Parameters
    ----------
    classes : sequence of str
        The step's ``classes``.
    sizes : sequence of ndarray
        Per case, the voxel counts of the predicted components of ``classes``.
    voxel_volumes : sequence of float
        Per case, the volume of one voxel (product of the spacing).
    same_spacing : bool
        All cases share one spacing: sizes are given in voxels (``min_voxels``), otherwise as
        physical volumes (``min_volume``).
    probabilities : bool
        Probabilities are available (threshold candidates).
    done : sequence of str
        Ops already accepted for this target (not proposed again).
    thresholds, size_percentiles, max_k
        The candidate grid: thresholds; percentiles of the pooled component sizes used as
        ``min_voxels`` / ``min_volume``; ``k = 1 .. max_k`` (only k below the largest component
        count of any case).
    hysteresis : sequence of (low, high)
        Hysteresis candidates (with probabilities; not after a threshold, and no threshold after
        a hysteresis: both decide the class from its probabilities).
    bridge_lengths, bridge_floors : sequence of float
        ``bridge_gaps`` candidates (with probabilities, when some case has more than one
        component): every ``max_length`` (physical) × ``min_probability``.
    close_loops : bool
        The class's references have loops (Betti-1 > 0 in some case): also every such
        ``bridge_gaps`` with ``close_loops = LOOP_LENGTH_FACTOR · max_length`` (closing broken
        rings), proposed even when every case has one component.

    Returns
    -------
    list of validated steps, in the order they are tried (ties go to the earlier one).
    """
    single = len(classes) == 1
    out = []
    decided = {"threshold", "hysteresis"} & set(done)
    if probabilities and single and not decided:
        out += [{"op": "threshold", "classes": list(classes), "threshold": float(t)} for t in thresholds]
        out += [{"op": "hysteresis", "classes": list(classes), "low": float(lo), "high": float(hi)}
                for lo, hi in hysteresis]
    max_n = max((len(s) for s in sizes), default=0)
    if "keep_largest_components" not in done:
        out += [{"op": "keep_largest_components", "classes": list(classes), "k": k}
                for k in range(1, max_k + 1) if k < max_n]
    pooled = np.concatenate([np.asarray(s, float) for s in sizes]) if sizes else np.zeros(0)
    if "remove_small_components" not in done and pooled.size and max_n > 1:
        if same_spacing:
            vals = sorted({int(np.ceil(np.percentile(pooled, q))) for q in size_percentiles})
            out += [{"op": "remove_small_components", "classes": list(classes), "min_voxels": v}
                    for v in vals if v > pooled.min()]
        else:
            vols = np.concatenate([np.asarray(s, float) * v for s, v in zip(sizes, voxel_volumes)])
            vals = sorted({_fmt_size(np.percentile(vols, q)) for q in size_percentiles})
            out += [{"op": "remove_small_components", "classes": list(classes), "min_volume": v}
                    for v in vals if v > vols.min()]
    if single and "fill_holes" not in done:
        out.append({"op": "fill_holes", "classes": list(classes)})
    if probabilities and single and "bridge_gaps" not in done and max_n > 1:
        out += [{"op": "bridge_gaps", "classes": list(classes), "max_length": float(length),
                 "min_probability": float(floor)}
                for length in bridge_lengths for floor in bridge_floors]
    if probabilities and single and "bridge_gaps" not in done and close_loops and max_n > 0:
        out += [{"op": "bridge_gaps", "classes": list(classes), "max_length": float(length),
                 "min_probability": float(floor), "close_loops": LOOP_LENGTH_FACTOR * float(length)}
                for length in bridge_lengths for floor in bridge_floors]
    return [validate_step(s, "candidate") for s in out]


# ---------------------------------------------------------------------------- result
@dataclass
class Determination:
    """Outcome of :func:`determine_postprocessing`.

    Attributes
    ----------
    pipeline : dict
        The chosen pipeline (validated; ``metadata`` holds the settings and the means).
    tried : list of dict
        Every evaluated candidate: ``round``, ``target``, ``step``, ``new_input`` (the
        pipeline's ``input`` the candidate switches to, or None), the class and
        overall means before/after, ``gain``, ``cases_changed``, ``removed``, ``added``,
        ``accepted`` and ``reason``.
    baseline, final : dict
        Per class mean of the displayed metric, and ``"all"`` (mean over classes).
    metric : str
        Objective label.
    weights : dict
        Metric weights of the objective.
    margin : float
    n_cases : int
    probabilities : bool
        Whether probabilities were used.
    notes : list of str
    max_dice_drop : float or None
        The Dice guard: largest tolerated fall of a class's mean Dice below its value before
        post-processing (None: no guard).
    max_cldice_drop : float or None
        The clDice guard, the same for clDice.
    """

    pipeline: dict
    tried: List[dict]
    baseline: Dict[str, float]
    final: Dict[str, float]
    metric: str
    weights: Dict[str, float]
    margin: float
    n_cases: int
    probabilities: bool
    notes: List[str] = field(default_factory=list)
    max_dice_drop: Optional[float] = None
    max_cldice_drop: Optional[float] = None

    @property
    def accepted(self) -> List[dict]:
        return [t for t in self.tried if t["accepted"]]


def _means(values: List[List[Dict[str, float]]], weights, fn) -> np.ndarray:
    # values[case][class] -> metric dict; returns the per-class mean of fn(weights, metrics)
    return np.array([[fn(weights, v) for v in row] for row in values]).mean(axis=0)


def _step_text(step: dict) -> Tuple[str, str]:
    params = {k: v for k, v in step.items() if k not in ("op", "classes") and v is not None}
    return step["op"], ", ".join(f"{k}={v}" for k, v in params.items()) or "–"


# ---------------------------------------------------------------------------- the search
def determine_postprocessing(
    cases: Sequence[Case],
    dataset_json: Union[str, dict],
    metric: Union[str, Dict[str, float]] = "dice",
    margin: float = DEFAULT_MARGIN,
    use_probabilities: Optional[bool] = None,
    num_processes: int = 1,
    progress: bool = True,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    size_percentiles: Sequence[float] = DEFAULT_SIZE_PERCENTILES,
    max_k: int = DEFAULT_MAX_K,
    plans_file: Optional[str] = None,
    hysteresis: Sequence[Tuple[float, float]] = DEFAULT_HYSTERESIS,
    bridge_lengths: Optional[Sequence[float]] = None,
    bridge_floors: Sequence[float] = DEFAULT_BRIDGE_FLOORS,
    max_dice_drop: Optional[float] = None,
    max_cldice_drop: Optional[float] = None,
) -> Determination:
    """Choose post-processing steps on cross-validation predictions (see the module docstring).

    Parameters
    ----------
    cases : sequence of Case
        Predictions with references (:func:`~.folder.find_cv_cases` / :func:`~.folder.find_cases`).
    dataset_json : str or dict
        The dataset's ``dataset.json`` (classes or regions, ignore label, file ending).
    metric : str or dict
        Objective (:func:`parse_objective`); default Dice; ``"topology"`` for
        ``cldice − 0.1 · betti_0_relative_error − 0.1 · betti_1_relative_error`` with a 1-point
        Dice guard and a no-fall clDice guard.
    margin : float
        Minimum rise of the target classes' mean objective for a step to be accepted; also
        the largest fall of any single class's mean that is tolerated. Default 0.001.
    use_probabilities : bool, optional
        Use the ``.npz`` probabilities (thresholds, nesting from the raw masks). ``None``: when
        every case has one; ``True``: required (missing files are an error).
    num_processes : int
        Cases processed in parallel.
    progress : bool
        Show progress bars.
    thresholds, size_percentiles, max_k
        Candidate grid (:func:`candidate_steps`).
    plans_file : str, optional
        ``plans.json`` naming the reader/writer (default: chosen from the file ending).
    hysteresis, bridge_floors
        Candidate grid of the probability-based connectivity steps (:func:`candidate_steps`).
    bridge_lengths : sequence of float, optional
        ``max_length`` values (physical) tried by ``bridge_gaps``; default
        :data:`DEFAULT_BRIDGE_VOXELS` × the median over cases of the smallest spacing.
    max_dice_drop : float, optional
        Dice guard: refuse a candidate that leaves any class's mean Dice more than this below
        its value before post-processing (0.01 = one point). Default: the named objective's
        (:func:`objective_dice_guard`), i.e. 0.01 for ``topology`` and no guard otherwise.
    max_cldice_drop : float, optional
        clDice guard, the same for clDice. Default: the named objective's (:func:`objective_guards`),
        i.e. 0 for ``topology`` (no step may lower a class's mean clDice) and no guard otherwise.

    Returns
    -------
    Determination
    """
    if not cases:
        raise ValueError("no cases to determine post-processing on")
    if num_processes < 1:
        raise ValueError(f"num_processes must be at least 1, got {num_processes}")
    if not (np.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a non-negative number, got {margin}")
    missing_ref = [c.pred for c in cases if c.ref is None]
    if missing_ref:
        raise FileNotFoundError(f"prediction(s) without reference: {', '.join(missing_ref[:5])}")
    dj = load_dataset_json(dataset_json) if isinstance(dataset_json, str) else dataset_json
    labels = DatasetLabels.from_dataset_json(dj)
    weights = parse_objective(metric)
    defaults = objective_guards(metric)
    given = {"dice": max_dice_drop, "cldice": max_cldice_drop}
    guards = {m: (defaults.get(m) if v is None else v) for m, v in given.items()}
    guards = {m: float(v) for m, v in guards.items() if v is not None}
    for m, v in guards.items():
        if not (np.isfinite(v) and v >= 0):
            raise ValueError(f"max_{m}_drop must be a non-negative number, got {v}")
    for lo, hi in hysteresis:
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"hysteresis candidate ({lo}, {hi}): needs 0 ≤ low < high ≤ 1")
    if bridge_lengths is not None and any(not (np.isfinite(v) and v > 0) for v in bridge_lengths):
        raise ValueError(f"bridge lengths must be positive, got {list(bridge_lengths)}")
    if any(not 0.0 <= f <= 1.0 for f in bridge_floors):
        raise ValueError(f"bridge floors must be in [0, 1], got {list(bridge_floors)}")
    names = labels.names
    notes: List[str] = []
    with_npz = [c for c in cases if c.npz is not None]
    if use_probabilities is None:
        use_probs = len(with_npz) == len(cases)
        if with_npz and not use_probs:
            notes.append(f"probabilities (.npz) exist for only {len(with_npz)} of {len(cases)} "
                         "cases: not used")
    elif use_probabilities:
        if len(with_npz) != len(cases):
            absent = [c.name for c in cases if c.npz is None]
            raise FileNotFoundError(f"probabilities requested but {len(absent)} case(s) have no "
                                    f".npz: {', '.join(absent[:5])}")
        use_probs = True
    else:
        use_probs = False
    if not use_probs:
        notes.append("no probabilities used: no threshold, hysteresis or bridge_gaps candidates")
    reader_cls = reader_writer_class(dj, cases[0].pred, plans_file)
    metric_names = tuple(dict.fromkeys(list(weights) + list(guards)))
    common = {"reader_cls": reader_cls, "labels": labels, "metrics": metric_names,
              "use_probabilities": use_probs, "input": "segmentation", "steps": [],
              "candidates": [], "compute_base": False, "stats_target": None}
    runner = _Runner(cases, common, num_processes, progress)
    try:
        grid = {"thresholds": thresholds, "size_percentiles": size_percentiles, "max_k": max_k,
                "hysteresis": tuple(hysteresis), "bridge_lengths": bridge_lengths,
                "bridge_floors": tuple(bridge_floors)}
        det = _search(runner, labels, weights, margin, use_probs, notes, grid, guards, len(cases))
    except BaseException:
        runner.close(terminate=True)
        raise
    runner.close()
    return det


def _search(runner, labels, weights, margin, use_probs, notes, grid, guards: Dict[str, float],
            n_cases) -> Determination:
    names = labels.names
    first_target = (0,)
    res = runner.run("baseline", compute_base=True, stats_target=first_target)
    values = [r["base"] for r in res]  # values[case][class] -> metrics
    vox_vol = [r["voxel_volume"] for r in res]
    same_spacing = len({tuple(np.round(r["spacing"], 6)) for r in res}) == 1
    baseline_values = [list(v) for v in values]
    # classes whose references have loops: ring-closing bridges are candidates there
    loop_classes = [any(r["ref_loops"][i] for r in res) for i in range(len(names))]
    if grid["bridge_lengths"] is None:  # voxel multiples of the finest axis
        finest = float(np.median([min(r["spacing"]) for r in res]))
        grid = {**grid, "bridge_lengths": tuple(_fmt_size(v * finest)
                                                 for v in DEFAULT_BRIDGE_VOXELS)}
    # per guarded metric: each class's mean before post-processing
    guard_base = {m: np.array([[v[m] for v in row] for row in baseline_values]).mean(axis=0) for m in guards}
    pipeline_input = "segmentation"
    steps: List[Tuple[dict, Tuple[int, ...]]] = []
    tried: List[dict] = []
    round_no = 0

    def evaluate(target_idx, candidates, stats_target):
        """Run one pass with ``candidates`` ({"input", "step", "indices"}); accept the best."""
        nonlocal values, pipeline_input, round_no
        round_no += 1
        out = runner.run(f"round {round_no}", input=pipeline_input, steps=list(steps),
                         candidates=candidates, stats_target=stats_target)
        before_cls = _means(values, weights, _objective)
        before_disp = _means(values, weights, _display)
        rows = []
        for j, cand in enumerate(candidates):
            new_values = [[r["candidates"][j]["values"].get(i, values[k][i])
                           for i in range(len(names))] for k, r in enumerate(out)]
            after_cls = _means(new_values, weights, _objective)
            after_disp = _means(new_values, weights, _display)
            tidx = list(target_idx) if target_idx else list(range(len(names)))
            gain = float(after_cls.mean() - before_cls.mean())
            target_gain = float(after_cls[tidx].mean() - before_cls[tidx].mean())
            drop = after_cls - before_cls
            worst = int(np.argmin(drop))
            per = [r["candidates"][j] for r in out]
            changed = sum(1 for p in per if p["values"] or p["removed"] or p["added"])
            op, params = _step_text(cand["step"])
            guard_hit = None
            for m, limit in guards.items():
                falls = guard_base[m] - np.array([[v[m] for v in row] for row in new_values]).mean(axis=0)
                if falls.max() > limit + 1e-12:
                    i = int(np.argmax(falls))
                    shown = {"dice": "Dice", "cldice": "clDice"}.get(m, m)
                    guard_hit = f"{shown} guard: {names[i]} {shown} {falls[i]:.4g} below baseline > {limit:g}"
                    break
            if target_gain <= margin:
                reason = f"gain {target_gain:+.4g} ≤ margin {margin:g}"
            elif guard_hit is not None:
                reason = guard_hit
            elif drop[worst] < -margin:
                reason = f"{names[worst]} worse by {-drop[worst]:.4g}"
            elif gain <= 0:
                reason = f"mean over all classes {gain:+.4g}"
            else:
                reason = ""
            rows.append({
                "round": round_no, "target": ", ".join(cand["step"].get("classes") or ["all regions"]),
                "op": op, "parameters": params, "step": cand["step"],
                "new_input": cand["input"],
                "target_before": float(np.mean(before_disp[tidx])),
                "target_after": float(np.mean(after_disp[tidx])),
                "all_before": float(before_disp.mean()), "all_after": float(after_disp.mean()),
                "gain": gain, "target_gain": target_gain, "cases_changed": changed,
                "removed": int(sum(p["removed"] for p in per)),
                "added": int(sum(p["added"] for p in per)),
                "accepted": False, "reason": reason, "_values": new_values,
                "_sizes": [p["sizes"] for p in per]})
        ok = [r for r in rows if not r["reason"]]
        best = max(ok, key=lambda r: r["gain"]) if ok else None  # max keeps the first of ties
        for r in rows:
            if r is not best and not r["reason"]:
                r["reason"] = "another candidate gained more"
        if best is not None:
            best["accepted"] = True
            best["reason"] = "accepted"
            values = best["_values"]
            cand = candidates[rows.index(best)]
            if cand["input"]:
                pipeline_input = cand["input"]
            steps.append((cand["step"], cand["indices"]))
        sizes = best["_sizes"] if best is not None else [r.get("sizes") for r in out]
        for r in rows:
            r.pop("_values")
            r.pop("_sizes")
            tried.append(r)
        return best, sizes

    # 1. nesting (regions with probabilities)
    if labels.has_regions:
        nested = any(labels.ancestors)
        if nested and use_probs:
            cands = [{"input": "probabilities",
                      "step": validate_step({"op": "enforce_nesting", "rule": rule}, "candidate"),
                      "indices": ()} for rule in ("intersect", "union")]
            evaluate((), cands, None)
        elif nested:
            notes.append("nesting: the predictions are label maps, whose regions are nested by "
                         "construction (nnU-Net paints them in regions_class_order); enforcement "
                         "needs the probabilities and was not tried")
    # 2. keep the largest component of all foreground (label datasets with several classes)
    if not labels.has_regions and len(names) > 1:
        everything = tuple(range(len(names)))
        step = validate_step({"op": "keep_largest_components", "classes": list(names), "k": 1},
                             "candidate")
        evaluate(everything, [{"input": None, "step": step, "indices": everything}], None)
    # 3. per class / region
    # the baseline pass already measured the first class, valid while nothing was accepted
    sizes = [r["sizes"] for r in res] if not steps else None
    for i, name in enumerate(names):
        target = (i,)
        if sizes is None or i > 0:
            res = runner.run(f"{name}: sizes", input=pipeline_input, steps=list(steps),
                             candidates=[], stats_target=target)
            sizes = [r["sizes"] for r in res]
        done: List[str] = []
        while True:
            cands = candidate_steps([name], sizes, vox_vol, same_spacing, use_probs, done,
                                    close_loops=loop_classes[i] and use_probs, **grid)
            if not cands:
                break
            best, new_sizes = evaluate(target, [{"input": None, "step": s, "indices": target}
                                                for s in cands], target)
            if best is None:
                break
            done.append(best["step"]["op"])
            sizes = new_sizes
    base_disp = _means(baseline_values, weights, _display)
    final_disp = _means(values, weights, _display)
    summary = lambda d: {**{n: float(v) for n, v in zip(names, d)}, "all": float(d.mean())}  # noqa: E731
    metadata = {
        "determined_on": f"{n_cases} cases",
        "metric": objective_label(weights), "weights": weights, "margin": margin,
        "probabilities_used": use_probs, "baseline": summary(base_disp), "final": summary(final_disp),
    }
    for m, limit in guards.items():
        metadata[f"max_{m}_drop"] = limit
    pipeline = make_pipeline([s for s, _ in steps], labels, input=pipeline_input, metadata=metadata)
    return Determination(pipeline=pipeline, tried=tried, baseline=summary(base_disp),
                         final=summary(final_disp), metric=objective_label(weights),
                         weights=weights, margin=margin, n_cases=n_cases,
                         probabilities=use_probs, notes=notes, max_dice_drop=guards.get("dice"),
                         max_cldice_drop=guards.get("cldice"))


def determine_from_folder(
    prediction: str,
    gt_folder: Optional[str] = None,
    dataset_json: Optional[str] = None,
    folds: Optional[Sequence[str]] = None,
    **kwargs,
) -> Tuple[Determination, str]:
    """Run :func:`determine_postprocessing` on an nnU-Net results folder
    (``<Trainer>__<Plans>__<configuration>`` with ``fold_*/validation``) or on a plain folder of
    predictions (``gt_folder`` then required).

    Returns
    -------
    determination, path of the dataset.json used
    """
    if not os.path.isdir(prediction):
        raise FileNotFoundError(f"prediction folder not found: {prediction}")
    is_results = any(
        os.path.isdir(os.path.join(prediction, d, "validation"))
        for d in os.listdir(prediction) if d.startswith("fold_"))
    if is_results:
        cases, dj_path, _ = find_cv_cases(prediction, gt_folder, folds)
        dj_path = dataset_json or dj_path
        plans = os.path.join(prediction, "plans.json")
    else:
        if gt_folder is None:
            raise ValueError(f"{prediction} is not an nnU-Net results folder (no fold_*/validation): "
                             "give the reference folder")
        dj_path = dataset_json or os.path.join(prediction, "dataset.json")
        fe = load_dataset_json(dj_path)["file_ending"]
        cases = find_cases(prediction, gt_folder, fe)
        plans = os.path.join(prediction, "plans.json")
    det = determine_postprocessing(cases, dj_path, plans_file=plans if os.path.isfile(plans) else None,
                                   **kwargs)
    return det, dj_path
