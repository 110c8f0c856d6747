"""Data-augmentation throughput (patches/s) with and without auxiliary targets.

nnU-Net's augmentation workers run the trainer's training transforms on every patch; trainers with
auxiliary targets (skeleton tubes, radius maps, signed distance maps) add their computation there. This
script builds each trainer from the plans of a synthetic tube dataset and runs its *complete* training
transform pipeline (nnU-Net's spatial and intensity augmentation, region conversion, our auxiliary
targets, deep-supervision downsampling) on the same synthetic patches of nnU-Net's initial (pre-crop)
patch size, single process, round-robin, and prints the median patches/s and the ratio to the stock
nnUNetTrainer's pipeline. Multiply by ``nnUNet_n_proc_DA`` for the loader's throughput.

    python benchmarks/bench_data_loader.py --patches 20
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_train_step import _prepare, _trainer  # noqa: E402  (same planned dataset and trainer construction)

AUXILIARY_TRAINERS = ["SkelRecallTrainer", "CbDiceTrainer", "BoundaryTrainer"]


def _pipeline(trainer):
    rotation, dummy_2d, initial_patch, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    lm, cm = trainer.label_manager, trainer.configuration_manager
    transforms = trainer.get_training_transforms(
        cm.patch_size, rotation, trainer._get_deep_supervision_scales(), mirror_axes, dummy_2d,
        use_mask_for_norm=cm.use_mask_for_norm, is_cascaded=False, foreground_labels=lm.foreground_labels,
        regions=lm.foreground_regions if lm.has_regions else None, ignore_label=lm.ignore_label)
    return transforms, tuple(int(s) for s in initial_patch)


def _samples(shape, n: int):
    import numpy as np
    import torch

    from nnunet_ext.synthetic.tubes import branching_tubes

    out = []
    for i in range(n):
        seg = branching_tubes(shape, seed=i).mask()[None].astype(np.int16)
        image = (np.random.default_rng(i).normal(size=seg.shape) + 2 * seg).astype(np.float32)
        out.append((torch.from_numpy(image), torch.from_numpy(seg)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=[32, 64, 64], help="synthetic volume shape (Z Y X)")
    parser.add_argument("--spacing", type=float, nargs=3, default=[1.0, 1.0, 1.0])
    parser.add_argument("--patches", type=int, default=20, help="patches per trainer")
    parser.add_argument("--trainers", nargs="+", default=AUXILIARY_TRAINERS)
    parser.add_argument("--workdir", default=None, help="reuse a planned dataset folder")
    args = parser.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(1)  # as in nnU-Net's augmentation workers
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="nnunet_ext_bench_")
    _prepare(Path(args.workdir), args.shape, args.spacing)
    names = ["nnUNetTrainer", *args.trainers]
    pipelines = {}
    for name in names:
        with contextlib.redirect_stdout(io.StringIO()):
            pipelines[name] = _pipeline(_trainer(name, torch.device("cpu")))
    initial_patch = pipelines["nnUNetTrainer"][1]
    samples = _samples(initial_patch, args.patches)
    times = {name: [] for name in names}
    for i, (image, seg) in enumerate(samples):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            transforms = pipelines[name][0]
            np.random.seed(i)
            torch.manual_seed(i)
            start = time.perf_counter()
            transforms(image=image.clone(), segmentation=seg.clone())
            times[name].append(time.perf_counter() - start)
    print(f"cpu ({os.cpu_count()} cores), torch {torch.__version__}; initial patch {list(initial_patch)}, "
          f"{args.patches} patches per trainer, 1 thread (one augmentation worker)")
    stock = statistics.median(times["nnUNetTrainer"])
    result = {}
    for name in names:
        median = statistics.median(times[name])
        result[name] = {"patches_per_s": 1 / median, "time_ratio": median / stock}
        print(f"{name:<26} {1 / median:8.2f} patches/s   ({median * 1000:7.1f} ms/patch, {median / stock:5.2f}x stock)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
