"""`nnunet-ext evaluate`: metrics of a prediction folder against a reference folder."""
from __future__ import annotations


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
    p.add_argument("--metrics", nargs="+", default=None,
                   help="metric names (default: all except vesuvius_score)")
    p.add_argument("-np", "--num-processes", type=int, default=1, help="cases evaluated in parallel")
    p.add_argument("--tolerance", type=float, default=1.0,
                   help="NSD tolerance in the units of the image spacing (default 1.0)")
    p.add_argument("--percentile", type=float, default=95.0,
                   help="percentile of the robust Hausdorff distance (default 95)")
    p.add_argument("--empty-distance", type=float, default=None,
                   help="distance value when exactly one mask is empty (default: image diagonal)")
    p.add_argument("--bootstrap", type=int, default=10000, help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.set_defaults(func=_run)


def _run(args) -> int:
    import sys

    from nnunet_ext.evaluation.folder import evaluate_folders

    if args.num_processes < 1:
        print("error: -np must be at least 1", file=sys.stderr)
        return 2
    try:
        rows, summary = evaluate_folders(
            args.pred_folder, args.ref_folder, args.dataset_json,
            output_folder=args.output_folder, metrics=args.metrics,
            num_processes=args.num_processes, tolerance=args.tolerance,
            percentile=args.percentile, empty_distance=args.empty_distance,
            n_resamples=args.bootstrap, seed=args.seed,
        )
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name, entry in summary["classes"].items():
        parts = [f"{m} {entry[m]['mean']:.4f}" for m in summary["settings"]["metrics"][:4]]
        print(f"{name}: " + ", ".join(parts))
    return 0
