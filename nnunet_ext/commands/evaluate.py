"""`nnunet-ext evaluate`: metrics of a prediction folder against a reference folder;
`nnunet-ext compare`: a report comparing several evaluated results."""
from __future__ import annotations

import argparse

from .convert import positive_int


class MetricNames(argparse.Action):
    """``--metrics a b`` or ``--metrics a,b``: every value must be a metric name, so that folders
    given after the list are not silently taken for metrics (argparse's ``nargs='+'`` swallows them)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from nnunet_ext.evaluation.case import METRICS

        names = [n for v in values for n in v.split(",") if n]
        unknown = [n for n in names if n not in METRICS]
        if unknown:
            parser.error(f"{option_string}: {unknown[0]!r} is not a metric (known: {', '.join(sorted(METRICS))}); "
                         f"give the folders before {option_string}, or end its list with '--'")
        setattr(namespace, self.dest, names)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="per-case metrics (CSV) and a summary with bootstrap CIs (JSON) for a prediction folder",
        description="Evaluate every reference case against the prediction with the same file name. "
        "Classes/regions and the ignore label come from dataset.json; spacing from the images. "
        "Writes metrics_per_case.csv and metrics_summary.json.",
    )
    p.add_argument("pred_folder", help="folder with predicted segmentations")
    p.add_argument("ref_folder", help="folder with reference segmentations (e.g. labelsTr)")
    p.add_argument("-dj", "--dataset-json", required=True, help="the dataset's dataset.json")
    p.add_argument("-o", "--output-folder", default=None,
                   help="where to write the CSV and JSON (default: the prediction folder)")
    p.add_argument("--metrics", nargs="+", default=None, action=MetricNames,
                   help="metric names, space- or comma-separated (default: all except vesuvius_score)")
    p.add_argument("-np", "--num-processes", type=positive_int, default=1, help="cases evaluated in parallel")
    p.add_argument("--overwrite", action="store_true",
                   help="replace metrics_per_case.csv / metrics_summary.json that exist in the output folder")
    p.add_argument("--tolerance", type=float, default=1.0,
                   help="NSD tolerance in the units of the image spacing (default 1.0)")
    p.add_argument("--percentile", type=float, default=95.0,
                   help="percentile of the robust Hausdorff distance (default 95)")
    p.add_argument("--empty-distance", type=float, default=None,
                   help="distance value when exactly one mask is empty (default: image diagonal)")
    p.add_argument("--skeleton", choices=("skimage", "robust"), default="skimage",
                   help="clDice skeletons: scikit-image's 3D thinning (default) or the robust variant "
                        "that never loses a thin object (docs/metrics.md)")
    p.add_argument("--challenge", choices=("vesuvius", "brats2023", "brats2024", "monusac"), default=None,
                   help="score as the challenge's leaderboard does instead (docs/metrics.md, 'Challenge "
                        "scores'); label maps in the challenge's own convention")
    p.add_argument("--brats-subchallenge", choices=("GLI", "SSA", "MEN", "PED", "MET"), default="GLI",
                   help="BraTS sub-challenge of --challenge brats2023/brats2024 (default GLI)")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="processes inside a case for --challenge vesuvius (Betti matching of the octants)")
    p.add_argument("--max-memory-gb", type=float, default=None,
                   help="address-space limit per Betti-matching process (--challenge vesuvius)")
    p.add_argument("--bootstrap", type=int, default=10000, help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.set_defaults(func=_run)
    _register_compare(subparsers)


def _run(args) -> int:
    import sys

    from nnunet_ext.evaluation.folder import evaluate_folders

    if args.num_processes < 1:
        print("error: -np must be at least 1", file=sys.stderr)
        return 2
    if args.challenge is not None:
        return _run_challenge(args)
    try:
        rows, summary = evaluate_folders(
            args.pred_folder, args.ref_folder, args.dataset_json,
            output_folder=args.output_folder, metrics=args.metrics,
            num_processes=args.num_processes, tolerance=args.tolerance,
            percentile=args.percentile, empty_distance=args.empty_distance,
            n_resamples=args.bootstrap, seed=args.seed, skeleton=args.skeleton,
            overwrite=args.overwrite,
        )
    except (OSError, KeyError, ValueError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 1
    for name, entry in summary["classes"].items():
        parts = [f"{m} {entry[m]['mean']:.4f}" for m in summary["settings"]["metrics"][:4]]
        print(f"{name}: " + ", ".join(parts))
    return 0


def _run_challenge(args) -> int:
    import sys

    from nnunet_ext.evaluation.challenge_folder import evaluate_challenge_folders

    try:
        rows, summary = evaluate_challenge_folders(
            args.pred_folder, args.ref_folder, args.dataset_json, args.challenge,
            output_folder=args.output_folder, brats_subchallenge=args.brats_subchallenge,
            workers=args.workers, max_memory_gb=args.max_memory_gb, n_resamples=args.bootstrap,
            seed=args.seed, overwrite=args.overwrite)
    except (OSError, KeyError, ValueError, ImportError, MemoryError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 1
    cols = summary["settings"]["columns"]
    for name, entry in summary["classes"].items():
        print(f"{name}: " + ", ".join(f"{m} {entry[m]['mean']:.4f}" for m in cols[:4]))
    return 0


def _register_compare(subparsers) -> None:
    p = subparsers.add_parser(
        "compare",
        help="compare several evaluated results (trainers): Markdown report, JSON and PNG plots",
        description="Compare results on their common cases. RESULT is a metrics_per_case.csv "
        "written by 'nnunet-ext evaluate', a folder holding one, or an nnU-Net results folder "
        "<Trainer>__<Plans>__<config> whose fold_*/validation folders are evaluated against "
        "$nnUNet_preprocessed/<Dataset>/gt_segmentations (or --gt-folder) with the dataset.json "
        "of the results folder. Writes report.md, comparison.json and PNG plots.",
    )
    p.add_argument("results", nargs="+", metavar="RESULT", help="results to compare")
    p.add_argument("-o", "--output-folder", required=True, help="where to write the report")
    p.add_argument("--names", nargs="+", default=None,
                   help="display names, one per RESULT (default: from the paths)")
    p.add_argument("--metrics", nargs="+", default=None,
                   help="metrics to compare (default: all in every result, volumes excluded)")
    p.add_argument("--worst", type=int, default=5, help="worst cases listed per metric (default 5)")
    p.add_argument("--bootstrap", type=int, default=10000, help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--gt-folder", default=None,
                   help="reference segmentations for nnU-Net results folders "
                   "(default: $nnUNet_preprocessed/<Dataset>/gt_segmentations)")
    p.add_argument("--recompute", action="store_true",
                   help="evaluate nnU-Net validation folders again even if metrics exist")
    p.add_argument("-np", "--num-processes", type=positive_int, default=1,
                   help="cases evaluated in parallel for nnU-Net results folders")
    p.set_defaults(func=_run_compare)


def _run_compare(args) -> int:
    import os
    import sys

    from nnunet_ext.evaluation.compare import write_comparison

    if args.num_processes < 1:
        print("error: -np must be at least 1", file=sys.stderr)
        return 2
    try:
        cmp = write_comparison(
            args.results, args.output_folder, names=args.names, metrics=args.metrics,
            n_worst=args.worst, n_resamples=args.bootstrap, seed=args.seed,
            plots=not args.no_plots, gt_folder=args.gt_folder, recompute=args.recompute,
            num_processes=args.num_processes,
        )
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for c in cmp["classes"]:
        ranks = sorted(cmp["mean_rank"][c].items(), key=lambda kv: kv[1])
        print(f"{c}: mean rank " + ", ".join(f"{n} {r:.2f}" for n, r in ranks))
    print(f"report: {os.path.join(args.output_folder, 'report.md')}")
    return 0
