"""`nnunet-ext postprocess determine|apply`: choose post-processing on cross-validation
predictions and apply it to a folder of predictions."""
from __future__ import annotations

from .convert import positive_int


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "postprocess",
        help="choose post-processing on cross-validation predictions (determine) and apply it (apply)",
        description="Connected-component filtering, hole filling, probability thresholds, "
        "hysteresis, bridging of gaps along minimum-cost paths through the probabilities and "
        "nested-region repair, chosen per class/region on cross-validation predictions. "
        "See docs/postprocessing.md.",
    )
    sub = p.add_subparsers(dest="postprocess_command", metavar="SUBCOMMAND")
    _register_determine(sub)
    _register_apply(sub)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _register_determine(sub) -> None:
    p = sub.add_parser(
        "determine",
        help="choose post-processing steps on cross-validation predictions",
        description="PREDICTIONS is an nnU-Net results folder <Trainer>__<Plans>__<config> (its "
        "fold_*/validation predictions are used, references from "
        "$nnUNet_preprocessed/<Dataset>/gt_segmentations or --gt-folder) or a plain folder of "
        "predictions (then --gt-folder is required). Writes pipeline.json, report.md, "
        "determination.json and, where the steps allow it, nnU-Net's postprocessing.pkl.",
    )
    p.add_argument("predictions", metavar="PREDICTIONS", help="results folder or prediction folder")
    p.add_argument("--gt-folder", default=None, help="reference segmentations")
    p.add_argument("-dj", "--dataset-json", default=None,
                   help="dataset.json (default: the one in PREDICTIONS)")
    p.add_argument("-f", "--folds", nargs="+", default=None,
                   help="folds of a results folder to use (default: every fold_*/validation)")
    p.add_argument("-o", "--output-folder", default=None,
                   help="where to write the files (default: PREDICTIONS/postprocessing_ext)")
    p.add_argument("--metric", default="dice",
                   help="objective: a metric (dice, cldice, betti_0_error, ...), several with equal "
                   "weights ('dice,cldice') or weighted ('dice=0.7,betti_0_error=0.05'); "
                   "lower-is-better metrics count negatively; 'topology' = cldice - "
                   "0.1*betti_0_relative_error - 0.1*betti_1_relative_error with a 1-point Dice "
                   "guard and a no-fall clDice guard "
                   "(default: dice)")
    p.add_argument("--max-dice-drop", type=float, default=None,
                   help="refuse a step that leaves a class's mean Dice more than this below its "
                   "value before post-processing (0.01 = one point; default: 0.01 for "
                   "--metric topology, no guard otherwise)")
    p.add_argument("--max-cldice-drop", type=float, default=None,
                   help="the same for clDice (default: 0 for --metric topology, no guard otherwise)")
    p.add_argument("--margin", type=float, default=None,
                   help="minimum gain of the mean objective of a step's classes (default 0.001)")
    p.add_argument("--probabilities", choices=("auto", "yes", "no"), default="auto",
                   help="use the .npz probabilities: auto = when every case has one (default)")
    p.add_argument("--thresholds", type=float, nargs="+", default=None,
                   help="probability thresholds tried (default 0.3 0.4 0.6 0.7)")
    p.add_argument("--max-k", type=int, default=None,
                   help="largest k tried for keep-largest-k (default 3)")
    p.add_argument("--hysteresis", type=_low_high, nargs="+", default=None, metavar="LOW:HIGH",
                   help="hysteresis (low, high) pairs tried, or 'none' "
                   "(default 0.2:0.5 0.3:0.5 0.4:0.5 0.3:0.7)")
    p.add_argument("--bridge-lengths", type=_float_or_none, nargs="+", default=None,
                   help="longest gaps (physical units of the spacing) tried by bridge_gaps, or "
                   "'none' (default: 3 and 6 times the finest voxel size)")
    p.add_argument("--bridge-floors", type=float, nargs="+", default=None,
                   help="floors of the mean probability on a bridged gap (default 0.1 0.25)")
    p.add_argument("-np", "--num-processes", type=positive_int, default=1, help="cases processed in parallel")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=_run_determine)


def _register_apply(sub) -> None:
    p = sub.add_parser(
        "apply",
        help="apply a pipeline.json to a folder of predictions",
        description="Applies the steps of a pipeline.json (from 'postprocess determine' or "
        "written by hand) to every segmentation of a folder, keeping the image geometry. "
        "Never replaces an existing output file without --overwrite.",
    )
    p.add_argument("-i", "--input-folder", required=True, help="predicted segmentations")
    p.add_argument("-o", "--output-folder", required=True, help="where to write the results")
    p.add_argument("-pp", "--pipeline", required=True, help="pipeline JSON file")
    p.add_argument("-dj", "--dataset-json", default=None,
                   help="dataset.json (default: the one in the input folder)")
    p.add_argument("--probabilities-folder", default=None,
                   help="folder with the <case>.npz probabilities written by nnUNetv2_predict "
                   "--save_probabilities (default: the input folder); needed by pipelines with "
                   "threshold, hysteresis or bridge_gaps steps or input 'probabilities'")
    p.add_argument("-np", "--num-processes", type=positive_int, default=1, help="cases processed in parallel")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=_run_apply)


def _low_high(text: str):
    import argparse

    if text.strip().lower() == "none":
        return None
    lo, sep, hi = text.partition(":")
    try:
        pair = (float(lo), float(hi))
    except ValueError:
        pair = None
    if not sep or pair is None or not 0.0 <= pair[0] < pair[1] <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LOW:HIGH with 0 <= LOW < HIGH <= 1")
    return pair


def _float_or_none(text: str):
    import argparse

    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _grid(values, default):
    """A candidate list from the command line: default when absent, empty for 'none'."""
    if values is None:
        return default
    return tuple(v for v in values if v is not None)


def _run_determine(args) -> int:
    import os
    import sys

    from nnunet_ext.postprocessing.determine import (
        DEFAULT_BRIDGE_FLOORS, DEFAULT_HYSTERESIS, DEFAULT_MARGIN, DEFAULT_MAX_K,
        DEFAULT_THRESHOLDS, determine_from_folder,
    )
    from nnunet_ext.postprocessing.pipeline import PipelineError
    from nnunet_ext.postprocessing.report import OUTPUT_FILES, steps_table, write_determination

    if args.num_processes < 1:
        print("error: -np must be at least 1", file=sys.stderr)
        return 2
    out = args.output_folder or os.path.join(args.predictions, "postprocessing_ext")
    if not args.overwrite:
        existing = [f for f in OUTPUT_FILES if os.path.exists(os.path.join(out, f))]
        if existing:  # refuse before the (long) search, not after it
            print(f"error: {out} already holds {', '.join(existing)} (use --overwrite)",
                  file=sys.stderr)
            return 1
    try:
        det, dj_path = determine_from_folder(
            args.predictions, gt_folder=args.gt_folder, dataset_json=args.dataset_json,
            folds=args.folds, metric=args.metric,
            margin=DEFAULT_MARGIN if args.margin is None else args.margin,
            use_probabilities={"auto": None, "yes": True, "no": False}[args.probabilities],
            num_processes=args.num_processes,
            thresholds=tuple(args.thresholds) if args.thresholds else DEFAULT_THRESHOLDS,
            max_k=DEFAULT_MAX_K if args.max_k is None else args.max_k,
            hysteresis=_grid(args.hysteresis, DEFAULT_HYSTERESIS),
            bridge_lengths=_grid(args.bridge_lengths, None),
            bridge_floors=tuple(args.bridge_floors) if args.bridge_floors else DEFAULT_BRIDGE_FLOORS,
            max_dice_drop=args.max_dice_drop, max_cldice_drop=args.max_cldice_drop)
        paths = write_determination(det, out, dj_path, overwrite=args.overwrite)
    except (OSError, KeyError, ValueError, PipelineError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 1
    if det.accepted:
        print("\n".join(steps_table(det.accepted, det.metric, with_status=False)))
    else:
        print("no post-processing step improved the objective")
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def _run_apply(args) -> int:
    import sys

    from nnunet_ext.postprocessing.folder import apply_pipeline_to_folder
    from nnunet_ext.postprocessing.pipeline import PipelineError

    if args.num_processes < 1:
        print("error: -np must be at least 1", file=sys.stderr)
        return 2
    try:
        res = apply_pipeline_to_folder(
            args.input_folder, args.output_folder, args.pipeline, dataset_json=args.dataset_json,
            num_processes=args.num_processes, overwrite=args.overwrite,
            probabilities_folder=args.probabilities_folder)
    except (OSError, KeyError, ValueError, PipelineError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 1
    for s in res["steps"]:
        target = ", ".join(s["classes"]) if s["classes"] else "all regions"
        print(f"step {s['step']} {s['op']} ({target}): {s['cases_changed']} case(s) changed, "
              f"{s['removed']} voxels removed, {s['added']} added")
    print(f"{len(res['files'])} case(s) written to {args.output_folder} "
          f"({len(res['changed'])} changed)")
    return 0
