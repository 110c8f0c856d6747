"""`nnunet-ext predict`: nnU-Net prediction plus uncertainty maps;
`nnunet-ext ensemble`: weighted ensembles of probability folders, weights given or fitted on CV predictions."""
from __future__ import annotations

from .convert import positive_int

_KINDS = ("variance", "entropy", "mutual_information")


def register(subparsers) -> None:
    _register_predict(subparsers)
    _register_ensemble(subparsers)


def _register_predict(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="nnUNetv2_predict with mirrored TTA plus per-voxel uncertainty maps (variance/entropy/MI)",
        description="Predict like nnUNetv2_predict (same preprocessing, sliding window, mirroring, fold averaging "
        "and export: the segmentations are identical) and write, beside each <case><ending>, "
        "<case>_uncertainty_<kind><ending> in the same format and geometry. The uncertainty is taken over "
        "every (tile, fold, mirror) prediction nnU-Net averages into a voxel, weighted as nnU-Net weights "
        "them (see docs/inference.md). Works with stock trainers and those of nnunet-ext.",
    )
    p.add_argument("-i", required=True, help="input folder (files <case>_<XXXX><ending>, as for nnUNetv2_predict)")
    p.add_argument("-o", required=True, help="output folder (created if needed)")
    p.add_argument("-d", default=None, help="dataset name or id (with -c, -tr, -p; needs nnUNet_results)")
    p.add_argument("-c", default=None, help="configuration, e.g. 3d_fullres (required with -d)")
    p.add_argument("-tr", default="nnUNetTrainer", help="trainer class (default nnUNetTrainer)")
    p.add_argument("-p", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    p.add_argument("-m", default=None, help="model folder <Trainer>__<Plans>__<config> instead of -d/-c/-tr/-p")
    p.add_argument("-f", nargs="+", default=["0", "1", "2", "3", "4"],
                   help="folds to ensemble (default 0 1 2 3 4; 'all' for fold_all)")
    p.add_argument("-chk", default="checkpoint_final.pth",
                   help="checkpoint file name in each fold folder (default checkpoint_final.pth)")
    p.add_argument("-step_size", type=float, default=0.5, help="sliding window step as a fraction of the patch "
                   "(default 0.5)")
    p.add_argument("--disable_tta", action="store_true", help="no mirroring (the uncertainty is then over folds "
                   "and overlapping tiles only)")
    p.add_argument("--uncertainty", nargs="+", default=["variance"], metavar="KIND",
                   help=f"maps to write: any of {', '.join(_KINDS)}, or 'none' (default: variance)")
    p.add_argument("--uncertainty_folder", default=None,
                   help="write the maps there instead of beside the segmentations (keeps -o a pure "
                   "segmentation folder for nnUNetv2_evaluate_folder)")
    p.add_argument("--fold_weights", nargs="+", type=float, default=None,
                   help="one weight per fold in -f: weighted mean of the fold logits (default: equal)")
    p.add_argument("--save_probabilities", action="store_true",
                   help="also write nnU-Net's <case>.npz/.pkl (needed for 'nnunet-ext ensemble')")
    p.add_argument("--continue_prediction", action="store_true",
                   help="skip cases whose outputs (segmentation, maps, .npz) all exist")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (otherwise an error)")
    p.add_argument("-npp", type=int, default=3, help="preprocessing processes (default 3; -npp 0 -nps 0: "
                   "no worker processes at all)")
    p.add_argument("-nps", type=int, default=3, help="export processes (default 3)")
    p.add_argument("-prev_stage_predictions", default=None, help="previous stage's segmentations (cascade)")
    p.add_argument("-device", default="cuda", choices=("cuda", "cpu", "mps"), help="default cuda")
    p.add_argument("--not_on_device", action="store_true", help="keep the result arrays on the CPU")
    p.add_argument("--disable_progress_bar", action="store_true")
    p.add_argument("--verbose", action="store_true")
    p.set_defaults(func=_run_predict)


def _register_ensemble(subparsers) -> None:
    p = subparsers.add_parser(
        "ensemble",
        help="weighted ensemble of probability folders (like nnUNetv2_ensemble); weights given or fitted",
        description="Average the .npz probabilities of several prediction folders (folds, trainers, "
        "configurations) with weights and write segmentations as nnUNetv2_ensemble does (equal weights give "
        "its output exactly). --fit-on finds the weights that maximise the mean Dice of the ensemble on "
        "cross-validation predictions, by a grid search over the weight simplex.",
    )
    p.add_argument("-i", nargs="+", default=None, metavar="FOLDER",
                   help="prediction folders with <case>.npz/.pkl (omit with --fit-on to only fit the weights)")
    p.add_argument("-o", required=True, help="output folder (gets ensemble_weights.json too)")
    p.add_argument("--weights", nargs="+", default=None, metavar="W",
                   help="one weight per -i folder, or an ensemble_weights.json written by a previous fit")
    p.add_argument("--fit-on", nargs="+", default=None, metavar="CV",
                   help="per member (same order as -i): a folder of CV .npz, or a model folder with "
                   "fold_*/validation/*.npz (nnUNetv2_train ... --val --npz)")
    p.add_argument("--gt", default=None, help="reference segmentations for --fit-on "
                   "(e.g. nnUNet_preprocessed/<Dataset>/gt_segmentations)")
    p.add_argument("--grid-step", type=float, default=0.1, help="weight grid step for --fit-on (default 0.1)")
    p.add_argument("--folds", nargs="+", default=None, help="folds used from model folders (default: all found)")
    p.add_argument("-dj", "--dataset-json", default=None, help="dataset.json (default: from the first folder)")
    p.add_argument("-pj", "--plans-json", default=None, help="plans.json (default: from the first folder)")
    p.add_argument("-np", "--num-processes", type=positive_int, default=1, help="cases merged in parallel (default 1)")
    p.add_argument("--save_npz", action="store_true", help="also write the ensembled probabilities")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (otherwise an error)")
    p.set_defaults(func=_run_ensemble)


# ---------------------------------------------------------------------------------------------- predict
def _ensure_ext_trainers_findable() -> None:
    # nnU-Net builds the network through the checkpoint's trainer class; make ours findable for this
    # process (and the workers it spawns) even when nnUNet_extTrainer was not exported
    import os

    from nnunet_ext.discovery import EXT_TRAINER_VARIABLE, trainer_folder

    ours = str(trainer_folder())
    current = os.environ.get(EXT_TRAINER_VARIABLE, "")
    entries = [e for e in current.split(os.pathsep) if e.strip()]
    if ours not in entries:
        os.environ[EXT_TRAINER_VARIABLE] = os.pathsep.join(entries + [ours])


def _model_folder(args) -> str:
    if args.m is not None:
        if args.d is not None:
            raise ValueError("give either -m or -d/-c, not both")
        return args.m
    if args.d is None or args.c is None:
        raise ValueError("give -d and -c (or -m MODEL_FOLDER)")
    import os

    if not os.environ.get("nnUNet_results"):
        raise ValueError("nnUNet_results is not set; export it or give the model folder with -m")
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    return get_output_folder(args.d, args.tr, args.p, args.c)


def _device(name: str):
    import multiprocessing

    import torch

    if name == "cpu":
        torch.set_num_threads(multiprocessing.cpu_count())
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("-device cuda: no CUDA device is available; use -device cpu")
        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)
        return torch.device("cuda")
    return torch.device("mps")


def _existing_outputs(predictor, input_folder: str, output_folder: str, save_probabilities: bool) -> list:
    import os

    from nnunetv2.utilities.utils import create_lists_from_splitted_dataset_folder

    ending = predictor.dataset_json["file_ending"]
    lists = create_lists_from_splitted_dataset_folder(input_folder, ending)
    cases = [os.path.basename(x[0])[:-(len(ending) + 5)] for x in lists]
    found = []
    for c in cases:
        found += [f for f in predictor.expected_outputs(os.path.join(output_folder, c), save_probabilities)
                  if os.path.exists(f)]
    return found


def _run_predict(args) -> int:
    import os
    import sys

    kinds = [] if [k.lower() for k in args.uncertainty] == ["none"] else args.uncertainty
    try:
        if args.overwrite and args.continue_prediction:
            raise ValueError("--overwrite and --continue_prediction exclude each other")
        if not os.path.isdir(args.i):
            raise FileNotFoundError(f"input folder {args.i} does not exist")
        if args.npp < 0 or args.nps < 0:
            raise ValueError("-npp and -nps must be >= 0")
        if args.step_size <= 0 or args.step_size > 1:
            raise ValueError(f"-step_size must be in (0, 1], got {args.step_size}")
        model = _model_folder(args)
        if not os.path.isdir(model):
            raise FileNotFoundError(f"model folder {model} does not exist")
        _ensure_ext_trainers_findable()
        device = _device(args.device)
        folds = [f if f == "all" else int(f) for f in args.f]

        from nnunet_ext.inference.predictor import UncertaintyPredictor

        predictor = UncertaintyPredictor(
            tile_step_size=args.step_size, use_gaussian=True, use_mirroring=not args.disable_tta,
            perform_everything_on_device=not args.not_on_device, device=device, verbose=args.verbose,
            verbose_preprocessing=args.verbose, allow_tqdm=not args.disable_progress_bar, uncertainty=kinds,
            fold_weights=args.fold_weights, uncertainty_folder=args.uncertainty_folder)
        predictor.initialize_from_trained_model_folder(model, folds, checkpoint_name=args.chk)
        if not args.overwrite and not args.continue_prediction:
            existing = _existing_outputs(predictor, args.i, args.o, args.save_probabilities)
            if existing:
                raise FileExistsError(f"{len(existing)} outputs exist already (e.g. {existing[0]}); pass "
                                      f"--overwrite to replace them or --continue_prediction to skip finished cases")
        os.makedirs(args.o, exist_ok=True)
        overwrite = not args.continue_prediction
        if args.npp == 0 and args.nps == 0:
            predictor.predict_from_files_sequential(args.i, args.o, save_probabilities=args.save_probabilities,
                                                    overwrite=overwrite,
                                                    folder_with_segs_from_prev_stage=args.prev_stage_predictions)
        else:
            predictor.predict_from_files(args.i, args.o, save_probabilities=args.save_probabilities,
                                         overwrite=overwrite, num_processes_preprocessing=max(1, args.npp),
                                         num_processes_segmentation_export=args.nps,
                                         folder_with_segs_from_prev_stage=args.prev_stage_predictions)
    except (FileNotFoundError, FileExistsError, KeyError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    where = args.uncertainty_folder or args.o
    print(f"segmentations in {args.o}" + (f"; uncertainty maps ({', '.join(kinds)}) in {where}" if kinds else ""))
    return 0


# ---------------------------------------------------------------------------------------------- ensemble
def _weights_arg(values):
    if values is None:
        return None
    if len(values) == 1 and values[0].endswith(".json"):
        from nnunet_ext.inference.ensemble import read_weights_file

        return [float(w) for w in read_weights_file(values[0])["weights"]]
    try:
        return [float(v) for v in values]
    except ValueError:
        raise ValueError(f"--weights takes numbers or one ensemble_weights.json, got {' '.join(values)}") from None


def _run_ensemble(args) -> int:
    import os
    import sys

    try:
        if args.i is None and args.fit_on is None:
            raise ValueError("give prediction folders with -i, or --fit-on to fit weights")
        if args.weights is not None and args.fit_on is not None:
            raise ValueError("--weights and --fit-on exclude each other")
        if args.fit_on is not None and args.gt is None:
            raise ValueError("--fit-on needs the reference segmentations (--gt)")
        if args.i is not None and args.fit_on is not None and len(args.fit_on) != len(args.i):
            raise ValueError(f"--fit-on needs one CV source per -i folder ({len(args.i)}), got {len(args.fit_on)}")
        for folder in (args.i or []):
            if not os.path.isdir(folder):
                raise FileNotFoundError(f"-i {folder}: prediction folder does not exist")
        weights = _weights_arg(args.weights)
        first = args.i[0] if args.i is not None else args.fit_on[0]
        dataset_json = args.dataset_json or os.path.join(first, "dataset.json")
        plans_json = args.plans_json or os.path.join(first, "plans.json")
        for path, flag in ((dataset_json, "-dj"), (plans_json, "-pj")):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path} does not exist; give it with {flag}")
        if args.fit_on is not None:
            from nnunet_ext.inference.fit_weights import fit_ensemble_weights

            result = fit_ensemble_weights(args.fit_on, args.gt, dataset_json, plans_json, step=args.grid_step,
                                          folds=args.folds)
            weights = result.weights
            os.makedirs(args.o, exist_ok=True)
            fit_file = os.path.join(args.o, "fitted_weights.json")
            result.save(fit_file)
            print(f"fitted weights {weights} on {result.n_cases} cases: mean Dice {result.score:.4f} "
                  f"(equal weights {result.equal_weights_score:.4f}); details in {fit_file}")
        if args.i is not None:
            from nnunet_ext.inference.ensemble import ensemble_folders_weighted

            cases = ensemble_folders_weighted(args.i, args.o, weights, args.save_npz, args.num_processes,
                                              dataset_json, plans_json, overwrite=args.overwrite)
            print(f"ensembled {len(cases)} cases into {args.o}")
    except (OSError, KeyError, ValueError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) and e.args else e}", file=sys.stderr)
        return 1
    return 0
