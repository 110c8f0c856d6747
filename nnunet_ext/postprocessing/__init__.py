"""Post-processing of nnU-Net predictions, chosen on cross-validation (``docs/postprocessing.md``).

* :mod:`.operations` — pure functions on one mask: remove small components, keep the k largest,
  fill holes, threshold a probability map;
* :mod:`.connectivity` — from the probabilities: hysteresis thresholding, bridging gaps between
  component end points along minimum-cost paths;
* :mod:`.regions` — nested regions (ET ⊂ TC ⊂ WT): violations and their repair;
* :mod:`.pipeline` — the JSON pipeline: validate, load, save, apply to arrays;
* :mod:`.determine` — greedy search of a pipeline on cross-validation predictions;
* :mod:`.report` — its files (pipeline JSON, Markdown report, nnU-Net ``postprocessing.pkl``);
* :mod:`.nnunet_pkl` — export to nnU-Net's ``postprocessing.pkl`` where expressible;
* :mod:`.folder` — cases on disk, apply a pipeline to a folder.
"""
from .connectivity import Bridge, bridge_gaps, find_bridges, hysteresis_threshold, \
    skeleton_end_points
from .determine import Determination, candidate_steps, determine_from_folder, \
    determine_postprocessing, parse_objective
from .folder import Case, apply_pipeline_to_folder, find_cases, find_cv_cases
from .labels import DatasetLabels
from .nnunet_pkl import NotExpressible, nnunet_steps, to_nnunet_postprocessing, write_nnunet_pkl
from .operations import component_sizes, fill_holes, hole_mask, keep_largest_components, \
    label_components, remove_small_components, threshold_probability
from .pipeline import OPS, PipelineError, apply_pipeline, load_pipeline, make_pipeline, \
    save_pipeline, validate_pipeline
from .regions import enforce_nesting, nesting_violations, region_ancestors
from .report import render_report, write_determination
from .state import CaseState

__all__ = [
    "label_components", "component_sizes", "remove_small_components", "keep_largest_components",
    "hole_mask", "fill_holes", "threshold_probability",
    "hysteresis_threshold", "bridge_gaps", "find_bridges", "skeleton_end_points", "Bridge",
    "region_ancestors", "nesting_violations", "enforce_nesting",
    "DatasetLabels", "CaseState",
    "OPS", "PipelineError", "validate_pipeline", "make_pipeline", "load_pipeline", "save_pipeline",
    "apply_pipeline",
    "Case", "find_cases", "find_cv_cases", "apply_pipeline_to_folder",
    "Determination", "parse_objective", "candidate_steps", "determine_postprocessing",
    "determine_from_folder", "render_report", "write_determination",
    "NotExpressible", "nnunet_steps", "to_nnunet_postprocessing", "write_nnunet_pkl",
]
