"""Benchmark: the full evaluation metric set against the straightforward implementation.

The straightforward implementation is what the reference tools do: scipy distance transforms over
the whole volume for the surface metrics, scikit-image skeletons of the whole volume for clDice,
scipy labelling and scikit-image Euler numbers for the Betti numbers, scikit-image VOI. Both run
in the same process on the same synthetic vessel-like pairs; the script prints medians over
repeats, the ratio, and the largest difference between the two sets of values.

    python benchmarks/bench_metrics.py                       # 512 x 512 x 64 (z = 64), both pairs
    python benchmarks/bench_metrics.py --prediction realistic --workers 2
    python benchmarks/bench_metrics.py --shape 64 256 256 --repeats 5
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import time

import numpy as np
from scipy import ndimage

_REF_PATH = os.path.join(os.path.dirname(__file__), os.pardir, "tests", "_evaluation_reference.py")


def _load_reference():
    spec = importlib.util.spec_from_file_location("_evaluation_reference", _REF_PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def vessel_reference(shape, n_tubes=40, seed=0):
    """A vessel-like reference: random smooth tubes of radius 1.5-4 voxels.

    Returns the mask, the distance of every voxel to the nearest centreline voxel and that
    centreline voxel's tube radius, and the random generator (for the noisy prediction)."""
    rng = np.random.default_rng(seed)
    centre = np.zeros(shape, bool)
    radius = np.zeros(shape, np.float32)
    for _ in range(n_tubes):
        pos = rng.uniform(0, 1, 3) * np.array(shape)
        step = rng.normal(size=3)
        r = rng.uniform(1.5, 4.0)
        for _ in range(int(max(shape) * 1.5)):
            step = 0.9 * step + 0.3 * rng.normal(size=3)
            step /= np.linalg.norm(step)
            pos = pos + step
            idx = tuple(int(np.clip(p, 0, s - 1)) for p, s in zip(pos, shape))
            centre[idx] = True
            radius[idx] = r
    dist, ind = ndimage.distance_transform_edt(~centre, return_indices=True)
    near_radius = radius[tuple(ind)]
    return dist <= near_radius, dist, near_radius, rng


def vessel_pair(shape, n_tubes=40, seed=0):
    """Noisy pair: the reference of :func:`vessel_reference` and a prediction shifted by one
    voxel, with gaps and spurious blobs all over the volume (about 1.1 M border voxels at
    512 x 512 x 64, 4.5 x the reference's)."""
    ref, _, _, rng = vessel_reference(shape, n_tubes, seed)
    pred = np.roll(ref, 1, axis=2)
    for _ in range(30):
        c = [rng.integers(0, s) for s in shape]
        sl = tuple(slice(max(ci - 4, 0), ci + 4) for ci in c)
        pred[sl] = False
    blobs = ndimage.gaussian_filter(rng.random(shape).astype(np.float32), 2) > 0.5 + 0.0225
    return pred | blobs, ref


def realistic_pair(shape, n_tubes=40, seed=0):
    """Realistic pair: the same reference and a prediction whose tube radii vary smoothly by
    about ±15 %, with 8 gaps in the tubes and 8 false-positive blobs next to them."""
    ref, dist, near_radius, _ = vessel_reference(shape, n_tubes, seed)
    rng = np.random.default_rng(seed + 1)
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 4)
    noise /= noise.std()
    pred = dist <= near_radius * (1 + 0.15 * noise)
    centre = np.argwhere(dist == 0)
    for c in centre[rng.choice(len(centre), 8, replace=False)]:
        pred[tuple(slice(max(ci - 3, 0), ci + 3) for ci in c)] = False
    near = np.argwhere((dist > 6) & (dist < 10))
    grid = np.indices((7, 7, 7)).reshape(3, -1).T - 3
    ball = grid[(grid ** 2).sum(axis=1) <= 9]
    for c in near[rng.choice(len(near), 8, replace=False)]:
        pts = np.clip(c + ball, 0, np.array(shape) - 1)
        pred[tuple(pts.T)] = True
    return pred, ref


def straightforward(ref_mod, pred, ref, spacing, tolerance):
    import cc3d
    from skimage.metrics import variation_of_information

    out = {"dice": float(ref_mod.dice(pred, ref))}
    out.update({k: float(v) for k, v in ref_mod.surface(pred, ref, spacing, tolerance).items()})
    out["cldice"] = float(ref_mod.cldice(pred, ref))
    bp, br = ref_mod.betti(pred), ref_mod.betti(ref)
    for k in range(3):
        out[f"betti_{k}_error"] = float(abs(bp[k] - br[k]))
    h = variation_of_information(cc3d.connected_components(pred), cc3d.connected_components(ref))
    out["voi"] = float(h.sum())
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(64, 512, 512), help="array shape (z y x)")
    ap.add_argument("--spacing", type=float, nargs=3, default=(1.5, 0.7, 0.7))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tolerance", type=float, default=1.0)
    ap.add_argument("--prediction", choices=("noisy", "realistic", "both"), default="both",
                    help="which synthetic prediction to evaluate (default: both)")
    ap.add_argument("--workers", type=int, default=1,
                    help="workers of nnunet_ext's case_metrics (threads / processes)")
    args = ap.parse_args(argv)

    from nnunet_ext.evaluation import case_metrics

    ref_mod = _load_reference()
    shape, sp = tuple(args.shape), tuple(args.spacing)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}; case_metrics workers={args.workers}")
    kinds = ("noisy", "realistic") if args.prediction == "both" else (args.prediction,)
    worst_diff = 0.0
    for kind in kinds:
        pred, ref = (vessel_pair if kind == "noisy" else realistic_pair)(shape)
        worst_diff = max(worst_diff, _compare(ref_mod, case_metrics, kind, pred, ref, sp, args))
    return 0 if worst_diff <= 1e-6 else 1


def _compare(ref_mod, case_metrics, kind, pred, ref, sp, args):
    from nnunet_ext.evaluation.surface import border_mask

    metrics = ["dice", "assd", "masd", "hd", "hd95", "nsd", "cldice",
               "betti_0_error", "betti_1_error", "betti_2_error", "voi"]
    print(f"\n== {kind} prediction: shape {shape_str(pred.shape)}, spacing {sp}, foreground "
          f"ref {ref.mean():.3%}, pred {pred.mean():.3%}; border voxels ref "
          f"{int(border_mask(ref).sum())}, pred {int(border_mask(pred).sum())}")
    t_fast, t_slow = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        fast = case_metrics(pred, ref, sp, metrics=metrics, tolerance=args.tolerance,
                            workers=args.workers)
        t_fast.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        slow = straightforward(ref_mod, pred, ref, sp, args.tolerance)
        t_slow.append(time.perf_counter() - t0)
    diff = max(abs(fast[m] - slow[m]) for m in metrics)
    worst = max(metrics, key=lambda m: abs(fast[m] - slow[m]))
    mf, ms = statistics.median(t_fast), statistics.median(t_slow)
    print(f"{'metric':<15}{'nnunet_ext':>16}{'straightforward':>18}")
    for m in metrics:
        print(f"{m:<15}{fast[m]:>16.6f}{slow[m]:>18.6f}")
    print(f"median time over {args.repeats} repeats: nnunet_ext {mf:.2f} s, "
          f"straightforward {ms:.2f} s, ratio {ms / mf:.1f}x")
    print(f"largest absolute difference: {diff:.2e} ({worst})")
    return diff


def shape_str(shape):
    return " x ".join(map(str, shape))


if __name__ == "__main__":
    raise SystemExit(main())
