"""Training-step time and peak memory of our trainers against the stock nnUNetTrainer.

Every trainer is built by nnU-Net itself from the plans of a synthetic tube dataset (written, planned
and preprocessed in a temporary folder), and runs ``train_step`` on the very same batches (images and
segmentations; trainers with auxiliary targets get them computed from those segmentations by their own
transforms, outside the timed step, as nnU-Net's workers do), round-robin in one process. Prints medians
and the ratios trainer / nnUNetTrainer.

Peak memory: on CUDA the peak allocated during a step minus what was allocated before it (so the
resident weights of both networks do not count); on the CPU, in a child process that runs only one
trainer, the peak resident set size sampled during its steps minus the resident size before them.

    python benchmarks/bench_train_step.py                      # CPU, small volumes, every shipped trainer
    python benchmarks/bench_train_step.py --trainers TopoTrainer SkelRecallTrainer
    python benchmarks/bench_train_step.py --device cuda --shape 128 128 128 --repeats 30
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATASET_ID = 987


def _prepare(workdir: Path, shape, spacing) -> None:
    for name in ("raw", "preprocessed", "results"):
        (workdir / name).mkdir(parents=True, exist_ok=True)
    os.environ.update(nnUNet_raw=str(workdir / "raw"), nnUNet_preprocessed=str(workdir / "preprocessed"),
                      nnUNet_results=str(workdir / "results"))
    if (workdir / "preprocessed").joinpath("done").exists():
        return
    from nnunet_ext.synthetic import write_synthetic_dataset
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments, preprocess

    write_synthetic_dataset(workdir / "raw", DATASET_ID, "labels", n_train=4, n_test=0, shape=tuple(shape),
                            spacing=tuple(spacing))
    with contextlib.redirect_stdout(io.StringIO()):
        extract_fingerprints([DATASET_ID], num_processes=2, check_dataset_integrity=False, clean=True, verbose=False)
        plan_experiments([DATASET_ID])
        preprocess([DATASET_ID], configurations=("3d_fullres",), num_processes=(2,), verbose=False)
    (workdir / "preprocessed" / "done").touch()


def _trainer(name: str, device):
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    from nnunet_ext.trainers import trainer_by_name
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    folder = Path(os.environ["nnUNet_preprocessed"]) / maybe_convert_to_dataset_name(DATASET_ID)
    cls = nnUNetTrainer if name == "nnUNetTrainer" else trainer_by_name(name)
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        plans = load_json(folder / "nnUNetPlans.json")
        plans["continue_training"] = False  # nnU-Net >= 2.8 pops this flag in __init__
        # fold "all": the 4 synthetic cases are too few for nnU-Net's 5-fold split, which the soft-skeleton
        # iteration counts chosen from the training labels read
        trainer = cls(plans, "3d_fullres", "all", load_json(folder / "dataset.json"), device)
        trainer.initialize()
    trainer.network.train()
    return trainer


def _raw_batches(trainer, n: int, seed: int = 0):
    """``n`` (noise image, tube labels) pairs of the trainer's patch size and batch size."""
    import numpy as np

    from nnunet_ext.synthetic.tubes import branching_tubes

    patch = tuple(trainer.configuration_manager.patch_size)
    batch_size = trainer.configuration_manager.batch_size
    pairs = []
    for i in range(n):
        rng = np.random.default_rng(seed + i)
        seg = np.stack([branching_tubes(patch, seed=seed + 100 * i + b).mask()[None] for b in range(batch_size)])
        pairs.append(((rng.normal(size=seg.shape) + 2 * seg).astype(np.float32), seg.astype(np.int16)))
    return pairs


def _targets_for(trainer, raw_batches):
    """The batches as ``trainer`` receives them: nnU-Net's DS targets, or, for trainers with auxiliary
    targets, the packed targets of their own transforms (computed here, outside the timed steps)."""
    import torch
    from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform

    scales = trainer._get_deep_supervision_scales()
    layout = trainer.target_layout() if hasattr(trainer, "target_layout") else None
    if layout is not None and layout.auxiliary:
        from nnunet_ext.targets import AppendAuxiliaryTargets, DownsampleSegAndAppendAuxiliaryForDS

        lm, spacing = trainer.label_manager, trainer.configuration_manager.spacing
        steps = [AppendAuxiliaryTargets(layout, lm.has_regions, lm.ignore_label, spacing) if scales is None else
                 DownsampleSegAndAppendAuxiliaryForDS(scales, layout, lm.has_regions, lm.ignore_label, spacing)]
    else:
        steps = [DownsampleSegForDSTransform(scales)]
    batches = []
    for data, seg in raw_batches:
        per_sample = []
        for s in seg:
            out = {"segmentation": torch.from_numpy(s)}
            for step in steps:
                out = step(**out)
            per_sample.append(out["segmentation"])
        target = [torch.stack(list(t)) for t in zip(*per_sample)]
        batches.append({"data": torch.from_numpy(data), "target": target})
    return batches


def _time_steps(trainers: dict, batches: dict, repeats: int, device) -> dict:
    import torch

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    times = {name: [] for name in trainers}
    peaks = {name: [] for name in trainers}
    for name, trainer in trainers.items():  # warm-up (cudnn autotuning, allocator)
        for batch in batches[name][:2]:
            trainer.train_step(batch)
    for r in range(repeats):
        order = list(trainers.items()) if r % 2 == 0 else list(trainers.items())[::-1]
        for name, trainer in order:
            batch = batches[name][r % len(batches[name])]
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
            sync()
            start = time.perf_counter()
            trainer.train_step(batch)
            sync()
            times[name].append(time.perf_counter() - start)
            if device.type == "cuda":
                peaks[name].append(torch.cuda.max_memory_allocated() - before)
    return {name: {"median_s": statistics.median(times[name]),
                   "peak_step_bytes": max(peaks[name]) if peaks[name] else None} for name in trainers}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _PeakRss:
    """Samples this process's resident set size every millisecond while the block runs."""

    def __enter__(self):
        import threading

        self.value, self._stop = _rss_bytes(), threading.Event()

        def sample():
            while not self._stop.is_set():
                self.value = max(self.value, _rss_bytes())
                self._stop.wait(0.001)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _child_peak_rss(args, name: str) -> int:
    """Peak RSS (bytes) of a process that only builds ``name`` and runs a few steps."""
    out = subprocess.run([sys.executable, __file__, "--only", name, "--workdir", args.workdir, "--device", args.device,
                          "--repeats", "3", "--shape", *map(str, args.shape), "--spacing", *map(str, args.spacing)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_bytes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--shape", type=int, nargs=3, default=[32, 64, 64], help="synthetic volume shape (Z Y X)")
    parser.add_argument("--spacing", type=float, nargs=3, default=[1.0, 1.0, 1.0])
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per trainer")
    parser.add_argument("--trainers", nargs="+", default=None,
                        help="trainers compared with nnUNetTrainer (default: every shipped trainer)")
    parser.add_argument("--workdir", default=None, help="reuse a planned dataset folder")
    parser.add_argument("--only", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="nnunet_ext_bench_")
    _prepare(Path(args.workdir), args.shape, args.spacing)

    if args.only:  # child process for CPU peak memory
        trainer = _trainer(args.only, device)
        batches = _targets_for(trainer, _raw_batches(trainer, 1))
        trainer.train_step(batches[0])  # first step allocates optimizer state and caches
        before = _rss_bytes()
        with _PeakRss() as peak:
            for _ in range(args.repeats):
                trainer.train_step(batches[0])
        print(json.dumps({"peak_rss_bytes": peak.value - before}))
        return

    from nnunet_ext.trainers import SHIPPED_TRAINERS

    ours = args.trainers or list(SHIPPED_TRAINERS)
    names = ["nnUNetTrainer", *ours]
    trainers = {name: _trainer(name, device) for name in names}
    stock = trainers["nnUNetTrainer"]
    raw = _raw_batches(stock, 4)
    batches = {name: _targets_for(trainer, raw) for name, trainer in trainers.items()}
    results = _time_steps(trainers, batches, args.repeats, device)
    if device.type == "cpu":
        for name in names:
            results[name]["peak_rss_bytes"] = _child_peak_rss(args, name)
    memory_key = "peak_step_bytes" if device.type == "cuda" else "peak_rss_bytes"
    cm = stock.configuration_manager
    print(f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'} ({os.cpu_count()} cores), "
          f"torch {torch.__version__}")
    print(f"patch {list(cm.patch_size)}, batch {cm.batch_size}, {len(cm.pool_op_kernel_sizes)} stages, "
          f"{args.repeats} timed steps each (median)")
    ratios = {}
    for name in names:
        mem = results[name][memory_key]
        t = results[name]["median_s"] / results["nnUNetTrainer"]["median_s"]
        m = mem / results["nnUNetTrainer"][memory_key]
        ratios[name] = {"time": t, "memory": m}
        print(f"{name:<26} {results[name]['median_s'] * 1000:9.1f} ms/step ({t:5.3f}x)   "
              f"{memory_key} {mem / 2**20:8.1f} MiB ({m:5.3f}x)")
    print(json.dumps({"ratios": ratios, "results": results}))


if __name__ == "__main__":
    main()
