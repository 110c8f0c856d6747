"""Benchmark: BraTS 2021 conversion against nnU-Net's own Dataset137_BraTS21 procedure, same run.

Builds a synthetic BraTS 2021 training folder (full 240 x 240 x 155 volumes, smooth int16 intensities
that compress like MRI), runs every variant once untimed (imports, page cache), then ``--repeats``
interleaved rounds; the median of each variant is reported, as wall time and as CPU time (this
process's threads plus reaped child processes; steadier than wall time on a shared machine):

* ``nnunet_dataset137``: nnU-Net's procedure (copy four modalities, its label conversion function,
  ``generate_dataset_json``), serial as in its script, no validation;
* ``nnunet_dataset137_verify``: the same followed by nnU-Net's ``verify_dataset_integrity`` as
  ``nnUNetv2_plan_and_preprocess --verify_dataset_integrity -np 1`` runs it (a spawned worker);
* ``ours_np{N}``: :func:`nnunet_ext.dataset_conversion.brats.convert_brats` with ``N`` workers and
  ``verify=False`` (all of its own checks: gzip stream and CRC, header, data size, grid, labels);
* ``ours_np{N}_verify``: the same plus nnU-Net's integrity check (re-reads every written file).

Usage::

    python benchmarks/bench_convert_brats.py --cases 6 --repeats 3 --processes 1 2 [--json out.json]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODALITIES = ("t1", "t1ce", "t2", "flair")


def make_dataset(root: Path, n_cases: int, shape=(240, 240, 155), seed: int = 0) -> int:
    """Synthetic BraTS 2021 training folder; returns its size in bytes."""
    import nibabel as nib
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    affine = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
    zz = np.indices(shape, dtype=np.float32)
    for i in range(n_cases):
        case = f"BraTS2021_{i:05d}"
        (root / case).mkdir(parents=True)
        brain = ((zz[0] - 120) / 80) ** 2 + ((zz[1] - 120) / 95) ** 2 + ((zz[2] - 77) / 65) ** 2 < 1
        for m in MODALITIES:
            coarse = rng.normal(800, 200, [s // 8 + 1 for s in shape]).astype(np.float32)
            img = ndimage.zoom(coarse, 8, order=1)[: shape[0], : shape[1], : shape[2]]
            img = (img * brain + rng.normal(0, 5, shape).astype(np.float32) * brain).clip(0).astype(np.int16)
            nib.save(nib.Nifti1Image(img, affine), str(root / case / f"{case}_{m}.nii.gz"))
        c = rng.integers(60, 180, 3)
        r = np.sqrt(sum((zz[k] - c[k]) ** 2 for k in range(3)))
        seg = np.zeros(shape, np.uint8)
        seg[r < 25] = 2
        seg[r < 15] = 4
        seg[r < 8] = 1
        nib.save(nib.Nifti1Image(seg, affine), str(root / case / f"{case}_seg.nii.gz"))
    return sum(f.stat().st_size for f in root.rglob("*.nii.gz"))


def run_nnunet_dataset137(src: Path, out: Path) -> None:
    """nnU-Net's Dataset137_BraTS21 procedure, through its own functions."""
    from nnunetv2.dataset_conversion.Dataset137_BraTS21 import copy_BraTS_segmentation_and_convert_labels_to_nnUNet
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    (out / "imagesTr").mkdir(parents=True)
    (out / "labelsTr").mkdir()
    cases = sorted(p.name for p in src.iterdir() if p.name.startswith("BraTS"))
    for c in cases:
        for i, m in enumerate(MODALITIES):
            shutil.copy(src / c / f"{c}_{m}.nii.gz", out / "imagesTr" / f"{c}_{i:04d}.nii.gz")
        copy_BraTS_segmentation_and_convert_labels_to_nnUNet(str(src / c / f"{c}_seg.nii.gz"),
                                                             str(out / "labelsTr" / f"{c}.nii.gz"))
    generate_dataset_json(str(out), channel_names={0: "T1", 1: "T1ce", 2: "T2", 3: "Flair"},
                          labels={"background": 0, "whole tumor": (1, 2, 3), "tumor core": (2, 3),
                                  "enhancing tumor": (3,)},
                          num_training_cases=len(cases), file_ending=".nii.gz", regions_class_order=(1, 2, 3))


def run_nnunet_dataset137_verify(src: Path, out: Path) -> None:
    """nnU-Net's procedure followed by its own integrity check with one (spawned) worker."""
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    run_nnunet_dataset137(src, out)
    with contextlib.redirect_stdout(io.StringIO()):
        verify_dataset_integrity(str(out), 1)


def cpu_seconds() -> float:
    """CPU time of this process (all threads) plus its reaped child processes."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def gzip_decoder() -> str:
    """Which decompressor the converter's fast path uses here."""
    try:
        import imagecodecs
        if imagecodecs.GZIP.available:
            return f"{imagecodecs.gzip_version()} (imagecodecs {imagecodecs.__version__})"
    except ImportError:
        pass
    return "zlib (streaming only)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-nnunet-verify", action="store_true",
                    help="leave out nnU-Net's procedure + its integrity check (the slowest variant)")
    ap.add_argument("--workdir", default=None, help="scratch folder (default: a temporary folder)")
    ap.add_argument("--source", default=None,
                    help="synthetic folder to reuse between runs (built there first if it does not exist)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)

    from nnunet_ext.dataset_conversion.brats import convert_brats

    work = Path(tempfile.mkdtemp(prefix="bench_brats_", dir=args.workdir))
    try:
        src = Path(args.source) if args.source else work / "BraTS2021_Training_Data"
        t = time.perf_counter()
        if not src.exists():
            make_dataset(src, args.cases)
        args.cases = len([p for p in src.iterdir() if p.name.startswith("BraTS2021_")])
        nbytes = sum(f.stat().st_size for f in src.rglob("*.nii.gz"))
        print(f"synthetic set: {args.cases} cases, {nbytes / 1e6:.1f} MB ({time.perf_counter() - t:.0f} s to build)",
              file=sys.stderr)

        def timed(fn) -> tuple[float, float]:
            out = work / "raw"
            out.mkdir()
            c0, t0 = cpu_seconds(), time.perf_counter()
            fn(out)
            dt, dc = time.perf_counter() - t0, cpu_seconds() - c0
            shutil.rmtree(out)
            return dt, dc

        variants = {"nnunet_dataset137": lambda out: run_nnunet_dataset137(src, out / "Dataset137_BraTS2021")}
        if not args.no_nnunet_verify:
            variants["nnunet_dataset137_verify"] = lambda out: run_nnunet_dataset137_verify(
                src, out / "Dataset137_BraTS2021")
        for np_ in args.processes:
            for verify in (False, True):
                variants[f"ours_np{np_}{'_verify' if verify else ''}"] = (
                    lambda out, np_=np_, verify=verify: convert_brats(
                        src, 137, year=2021, raw_root=out, num_processes=np_, verify=verify, progress=False))
        load_before = os.getloadavg()
        for fn in variants.values():  # warm-up: imports (PyTorch for the integrity check), page cache
            timed(fn)
        times = {k: [] for k in variants}
        for _ in range(args.repeats):  # interleaved, so drifts in machine load hit every variant alike
            for name, fn in variants.items():
                times[name].append(timed(fn))
        load_after = os.getloadavg()
        results = {}
        base = statistics.median(w for w, _ in times["nnunet_dataset137"])
        base_cpu = statistics.median(c for _, c in times["nnunet_dataset137"])
        for name, ts in times.items():
            med = statistics.median(w for w, _ in ts)
            cpu = statistics.median(c for _, c in ts)
            results[name] = {"median_s": round(med, 3), "cases_per_s": round(args.cases / med, 3),
                             "MB_per_s": round(nbytes / 1e6 / med, 2), "speed_vs_nnunet": round(base / med, 2),
                             "median_cpu_s": round(cpu, 3), "cpu_vs_nnunet": round(base_cpu / cpu, 2),
                             "runs_s": [round(w, 3) for w, _ in ts], "runs_cpu_s": [round(c, 3) for _, c in ts]}
        meta = {"cases": args.cases, "input_MB": round(nbytes / 1e6, 1), "repeats": args.repeats,
                "gzip_decoder": gzip_decoder(),
                "load_average_1min": [round(load_before[0], 2), round(load_after[0], 2)],
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                           f"Python {platform.python_version()}"}
        print(f"{'variant':<26}{'median s':>9}{'cases/s':>9}{'MB/s':>8}{'vs nnU-Net':>11}"
              f"{'CPU s':>8}{'CPU vs nnU-Net':>16}")
        for name, r in results.items():
            print(f"{name:<26}{r['median_s']:>9.2f}{r['cases_per_s']:>9.2f}{r['MB_per_s']:>8.1f}"
                  f"{r['speed_vs_nnunet']:>10.2f}x{r['median_cpu_s']:>8.2f}{r['cpu_vs_nnunet']:>15.2f}x")
        print(json.dumps(meta))
        if args.json:
            Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
