"""`nnunet-ext convert {minivess,vesuvius,brats,monusac,brats-back,vesuvius-submission}`.

Argument parsing only; the work happens in :mod:`nnunet_ext.dataset_conversion` (imported lazily).
"""
from __future__ import annotations

import argparse
import sys


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (``-np 0`` is refused by the parser)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _common(p: argparse.ArgumentParser, folds_default=None, seed_default=12345) -> None:
    p.add_argument("source", help="raw dataset folder")
    p.add_argument("--dataset-id", "-d", type=int, required=True, help="nnU-Net dataset id (1-999)")
    p.add_argument("--name", default=None, help="dataset name (DatasetNNN_<name>); default per dataset")
    p.add_argument("--raw-root", default=None, help="output root (default: $nnUNet_raw)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset of the same name")
    p.add_argument("-np", "--num-processes", type=positive_int, default=1,
                   help="parallel workers for conversion and integrity check (default 1): threads for NIfTI/TIFF "
                        "datasets, processes for MoNuSAC")
    p.add_argument("--folds", type=int, default=folds_default,
                   help=f"write splits_final.json with K folds (default: {folds_default or 'none'})")
    p.add_argument("--seed", type=int, default=seed_default, help=f"seed of the folds (default {seed_default})")
    p.add_argument("--no-verify", action="store_true",
                   help="skip nnU-Net's verify_dataset_integrity, its re-read of every written file (the "
                        "converter's own checks of the raw files always run)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def register(subparsers) -> None:
    """Add the ``convert`` command and its per-dataset sub-commands."""
    p = subparsers.add_parser("convert", help="convert a raw dataset to nnU-Net format (or predictions back)",
                              description="Convert raw datasets into $nnUNet_raw/DatasetNNN_<Name>, or nnU-Net "
                                          "predictions back to a dataset's own convention.")
    sub = p.add_subparsers(dest="dataset", metavar="DATASET", required=True)

    mv = sub.add_parser("minivess", help="MiniVess (raw/, seg/, json/)")
    _common(mv, folds_default=3, seed_default=42)

    ve = sub.add_parser("vesuvius", help="Vesuvius Surface Detection (train.csv, train_images/, ...)")
    _common(ve)
    ve.add_argument("--no-test", action="store_true", help="do not convert test_images into imagesTs")
    ve.add_argument("--group-by-scroll", action="store_true", help="keep each scroll in one fold")

    br = sub.add_parser("brats", help="BraTS 2021 / 2023 / 2024 training folder")
    _common(br)
    br.add_argument("--year", type=int, default=None, choices=(2021, 2023, 2024),
                    help="BraTS edition (default: detected from the folder names, 2024 by label 4)")
    br.add_argument("--test-source", default=None, help="folder of unlabelled cases → imagesTs")

    mo = sub.add_parser("monusac", help="MoNuSAC 2020 (MoNuSAC_images_and_annotations/)")
    _common(mo)
    mo.add_argument("--ternary", action="store_true", help="background / inside / boundary labels")
    mo.add_argument("--boundary-width", type=int, default=1, help="boundary width in pixels (with --ternary)")

    bb = sub.add_parser("brats-back", help="nnU-Net BraTS predictions → BraTS labels of their year")
    bb.add_argument("input_folder")
    bb.add_argument("output_folder")
    bb.add_argument("--year", type=int, required=True, choices=(2021, 2023, 2024))
    bb.add_argument("-np", "--num-processes", type=positive_int, default=1)
    bb.add_argument("--overwrite", action="store_true",
                    help="replace existing files in OUTPUT_FOLDER (or convert in place when it is INPUT_FOLDER)")

    vs = sub.add_parser("vesuvius-submission", help="nnU-Net Vesuvius predictions → submission zip")
    vs.add_argument("prediction_folder")
    vs.add_argument("zip_path")
    vs.add_argument("--test-images", default=None, help="test_images/ folder to check ids and shapes against")
    vs.add_argument("--overwrite", action="store_true", help="replace an existing zip file")

    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from nnunet_ext.dataset_conversion import ConversionError

    try:
        if args.dataset == "brats-back":
            from nnunet_ext.dataset_conversion.back_conversion import convert_brats_predictions
            done = convert_brats_predictions(args.input_folder, args.output_folder, args.year, args.num_processes,
                                             overwrite=args.overwrite)
            print(f"converted {len(done)} predictions to BraTS {args.year} labels in {args.output_folder}")
            return 0
        if args.dataset == "vesuvius-submission":
            from nnunet_ext.dataset_conversion.back_conversion import write_vesuvius_submission
            ids = write_vesuvius_submission(args.prediction_folder, args.zip_path, args.test_images,
                                            overwrite=args.overwrite)
            print(f"wrote {len(ids)} volumes to {args.zip_path}")
            return 0
        common = dict(raw_root=args.raw_root, overwrite=args.overwrite, num_processes=args.num_processes,
                      n_folds=args.folds, seed=args.seed, verify=not args.no_verify, progress=not args.no_progress)
        if args.name:
            common["dataset_name"] = args.name
        if args.dataset == "vesuvius" and args.group_by_scroll and not args.folds:
            raise ConversionError(None, "--group-by-scroll groups the folds of splits_final.json: give --folds K too")
        if args.dataset == "minivess":
            from nnunet_ext.dataset_conversion.minivess import convert_minivess
            report = convert_minivess(args.source, args.dataset_id, **common)
        elif args.dataset == "vesuvius":
            from nnunet_ext.dataset_conversion.vesuvius import convert_vesuvius
            report = convert_vesuvius(args.source, args.dataset_id, include_test=not args.no_test,
                                      group_by_scroll=args.group_by_scroll, **common)
        elif args.dataset == "brats":
            from nnunet_ext.dataset_conversion.brats import convert_brats, detect_brats_year
            year = args.year
            if year is None:
                year, how = detect_brats_year(args.source)
                print(f"detected BraTS {year}: {how} (--year overrides)", file=sys.stderr)
            report = convert_brats(args.source, args.dataset_id, year=year, test_source=args.test_source,
                                   **common)
        else:
            from nnunet_ext.dataset_conversion.monusac import convert_monusac
            report = convert_monusac(args.source, args.dataset_id, ternary=args.ternary,
                                     boundary_width=args.boundary_width, **common)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(report.format())
    return 0
