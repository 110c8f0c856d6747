"""Prediction with uncertainty maps against plain nnU-Net prediction: same model, same cases, same run.

The model is the 3d_fullres configuration of a real plan (``tests/data/plans_tubes.json``: 4-stage
PlainConvUNet, 32-256 features, patch 16 x 48 x 48) with freshly initialised weights in nnU-Net's
checkpoint format; the cases are synthetic volumes of ``--shape``. Every repeat runs nnU-Net's
``nnUNetPredictor`` and our ``UncertaintyPredictor`` on all cases (preprocessing, mirrored sliding
window, resampling, export), alternating which goes first; the script prints the medians and the
ratio ours / stock of the wall time and of the CPU time of this process (all its threads; the
robust figure on a machine shared with other jobs, with ``--workers 0``), and checks that the
segmentations are identical.

    python benchmarks/bench_predict_uncertainty.py                         # CPU, 2 cases of 32 x 96 x 96
    python benchmarks/bench_predict_uncertainty.py --kinds variance entropy mutual_information
    python benchmarks/bench_predict_uncertainty.py --device cuda --shape 128 256 256 --folds 5 --repeats 5
    python benchmarks/bench_predict_uncertainty.py --workers 2             # nnU-Net's worker processes
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

PLANS = Path(__file__).resolve().parent.parent / "tests" / "data" / "plans_tubes.json"
DATASET_JSON = {"channel_names": {"0": "x"}, "labels": {"background": 0, "vessel": 1}, "numTraining": 0,
                "file_ending": ".nii.gz"}


def _write_cases(folder: Path, n: int, shape, seed: int = 0) -> None:
    import numpy as np
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for k in range(n):
        z, y, x = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
        arr = np.sin(6 * x + 3 * k) * np.cos(5 * y) + 0.5 * z + 0.3 * rng.normal(size=shape)
        img = sitk.GetImageFromArray(arr.astype(np.float32))
        img.SetSpacing((1.0, 1.0, 1.0))
        sitk.WriteImage(img, str(folder / f"case{k:03d}_0000.nii.gz"))


def _predictor(kind: str, model: str, folds, device, kinds):
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunet_ext.inference.predictor import UncertaintyPredictor

    with contextlib.redirect_stdout(io.StringIO()):
        if kind == "stock":
            p = nnUNetPredictor(device=torch.device(device), allow_tqdm=False)
        else:
            p = UncertaintyPredictor(device=torch.device(device), allow_tqdm=False, uncertainty=kinds)
        p.initialize_from_trained_model_folder(model, folds)
    return p


def _run(predictor, inputs: str, output: str, workers: int):
    """(wall seconds, CPU seconds of this process) of one prediction of all cases."""
    import torch

    shutil.rmtree(output, ignore_errors=True)
    os.makedirs(output)
    if predictor.device.type == "cuda":
        torch.cuda.synchronize()
    start, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):
        if workers == 0:
            predictor.predict_from_files_sequential(inputs, output)
        else:
            predictor.predict_from_files(inputs, output, num_processes_preprocessing=workers,
                                         num_processes_segmentation_export=workers)
    if predictor.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - cpu


def _same_segmentations(a: str, b: str) -> bool:
    import numpy as np
    import SimpleITK as sitk

    names = sorted(f for f in os.listdir(a) if f.endswith(".nii.gz") and "_uncertainty_" not in f)
    return all(np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(a, n))),
                              sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(b, n)))) for n in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--shape", type=int, nargs=3, default=[32, 96, 96], help="case shape (Z Y X)")
    parser.add_argument("--cases", type=int, default=2)
    parser.add_argument("--folds", type=int, default=1, help="fold models ensembled (default 1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kinds", nargs="+", default=["variance"], help="uncertainty maps (default variance)")
    parser.add_argument("--workers", type=int, default=0,
                        help="nnU-Net preprocessing/export worker processes (0: none, sequential)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all CPUs)")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()

    import importlib.metadata

    import torch

    from nnunet_ext.inference.untrained import write_untrained_model_folder

    if args.device == "cpu":
        torch.set_num_threads(args.threads or os.cpu_count() or 1)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="nnunet_ext_bench_predict_"))
    plans = json.loads(PLANS.read_text())
    plans["configurations"] = {"3d_fullres": plans["configurations"]["3d_fullres"]}
    model = str(work / "model")
    write_untrained_model_folder(model, plans, DATASET_JSON, "3d_fullres", folds=tuple(range(args.folds)))
    _write_cases(work / "in", args.cases, args.shape)
    folds = tuple(range(args.folds))
    predictors = {"stock": _predictor("stock", model, folds, args.device, args.kinds),
                  "ours": _predictor("ours", model, folds, args.device, args.kinds)}
    # warm-up (allocator, cudnn autotuning, lazy imports)
    for name, p in predictors.items():
        _run(p, str(work / "in"), str(work / f"out_{name}"), args.workers)
    times = {name: [] for name in predictors}
    for r in range(args.repeats):
        order = list(predictors) if r % 2 == 0 else list(predictors)[::-1]
        for name in order:
            times[name].append(_run(predictors[name], str(work / "in"), str(work / f"out_{name}"), args.workers))
    wall = {name: statistics.median(t[0] for t in ts) for name, ts in times.items()}
    cpu = {name: statistics.median(t[1] for t in ts) for name, ts in times.items()}
    same = _same_segmentations(str(work / "out_stock"), str(work / "out_ours"))
    cfg = plans["configurations"]["3d_fullres"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}, Python "
          f"{platform.python_version()}, torch {torch.__version__}, nnunetv2 {importlib.metadata.version('nnunetv2')}, "
          f"device {args.device}")
    print(f"model: 3d_fullres of plans_tubes.json (patch {cfg['patch_size']}, features "
          f"{cfg['architecture']['arch_kwargs']['features_per_stage']}), {args.folds} fold(s), mirroring (0, 1, 2)")
    print(f"cases: {args.cases} x {tuple(args.shape)}; workers {args.workers}; maps {', '.join(args.kinds)}; "
          f"{args.repeats} repeats; torch threads {torch.get_num_threads()}")
    for name in predictors:
        print(f"{name:>5}: median wall {wall[name]:.2f} s, CPU {cpu[name]:.2f} s  (wall: "
              f"{', '.join(f'{t[0]:.2f}' for t in times[name])}; CPU: {', '.join(f'{t[1]:.2f}' for t in times[name])})")
    print(f"ratio ours / stock: wall {wall['ours'] / wall['stock']:.3f}x, CPU {cpu['ours'] / cpu['stock']:.3f}x; "
          f"segmentations identical: {same}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
