"""Benchmark: the auxiliary ground-truth targets against the straightforward whole-patch computation.

The straightforward computation (kept here as the reference, not in the package) runs every scipy
distance transform and the skeletonisation on the whole patch, per class. The package crops all of
that to the structure's bounding box grown by one voxel, except the outside distance of the signed
distance map, which is wanted on every voxel. Both run in the same process, on the same patches (two
classes of random branching tubes, MiniVess-like), one thread as in one augmentation worker; every
repeat times each variant once. The script prints the median seconds per patch, the ratio, and the
largest difference between the outputs, for the full patch and for the deep-supervision levels
(the patch downsampled by 2, 4, 8 with ``max``, as the targets will also be computed there).

    python benchmarks/bench_targets.py                    # 96 x 128 x 128, 5 repeats
    python benchmarks/bench_targets.py --repeats 11 --spacing 2 0.7 0.7
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from nnunet_ext.synthetic.tubes import branching_tubes  # noqa: E402
from nnunet_ext.targets import ground_truth  # noqa: E402


def _load_reference():
    """The whole-patch computation, shared with the tests (tests/_target_reference.py)."""
    path = Path(__file__).resolve().parent.parent / "tests" / "_target_reference.py"
    spec = importlib.util.spec_from_file_location("_target_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_REFERENCE = _load_reference()

TARGETS = {
    "skeleton_tube_target": (ground_truth.skeleton_tube_target, _REFERENCE.whole_patch_tube),
    "signed_distance_target": (ground_truth.signed_distance_target, _REFERENCE.whole_patch_signed_distance),
    "centerline_radius_target": (ground_truth.centerline_radius_target, _REFERENCE.whole_patch_centerline_radius),
}


def tube_patch(shape, spacing, seed):
    """Two classes: a tree of tubes (radius 1-3.5 mm) and a thinner second tree (1-2.5 mm)."""
    first = branching_tubes(shape, spacing, n_roots=2, depth=3, radius_range=(1.0, 3.5), seed=seed).mask()
    second = branching_tubes(shape, spacing, n_roots=1, depth=2, radius_range=(1.0, 2.5), seed=seed + 1).mask()
    return np.stack([first, second & ~first])


def downsample(labels, factor):
    """Deep-supervision level: ``max`` over factor^d blocks (any voxel of the class in the block)."""
    if factor == 1:
        return labels
    c, *shape = labels.shape
    blocks = [c] + [x for n in shape for x in (n // factor, factor)]
    cut = (slice(None),) + tuple(slice(0, (n // factor) * factor) for n in shape)
    return labels[cut].reshape(blocks).any(axis=tuple(range(2, 2 + 2 * len(shape), 2)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(96, 128, 128))
    parser.add_argument("--spacing", type=float, nargs=3, default=(1.0, 1.0, 1.0))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--patches", type=int, default=3, help="different random patches, used in turn")
    parser.add_argument("--levels", type=int, nargs="+", default=(1, 2, 4, 8),
                        help="downsampling factors (deep-supervision levels) to time")
    args = parser.parse_args()
    spacing = tuple(args.spacing)
    patches = [tube_patch(tuple(args.shape), spacing, seed=10 * i) for i in range(args.patches)]
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}; shape {tuple(args.shape)}, spacing {spacing}, "
          f"foreground {np.mean([p.mean(axis=(1, 2, 3)) for p in patches], axis=0).round(4).tolist()} per class")
    print(f"{'target':26s} {'level':>5s} {'reference':>10s} {'ours':>9s} {'ratio':>7s}  max |diff|")
    for name, (ours, reference) in TARGETS.items():
        for factor in args.levels:
            level_spacing = tuple(s * factor for s in spacing)
            inputs = [downsample(p, factor) for p in patches]
            valid = np.ones(inputs[0].shape[1:], bool)
            times = {"reference": [], "ours": []}
            worst = 0.0
            for r in range(args.repeats):
                labels = inputs[r % len(inputs)]
                t = time.perf_counter()
                expected = reference(labels, valid, level_spacing)
                times["reference"].append(time.perf_counter() - t)
                t = time.perf_counter()
                got = ours(labels, None, level_spacing)
                times["ours"].append(time.perf_counter() - t)
                worst = max(worst, float(np.abs(got - expected).max()))
            ref, new = statistics.median(times["reference"]), statistics.median(times["ours"])
            print(f"{name:26s} {'1/' + str(factor):>5s} {ref:9.4f}s {new:8.4f}s {ref / new:6.1f}x  {worst:.2g}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
