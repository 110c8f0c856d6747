"""Benchmark: the full evaluation metric set against the straightforward implementation.

The straightforward implementation is what the reference tools do: scipy distance transforms over
the whole volume for the surface metrics, scikit-image skeletons of the whole volume for clDice,
scipy labelling and scikit-image Euler numbers for the Betti numbers, scikit-image VOI. Both run
in the same process on the same synthetic vessel-like pairs; the script prints medians over
repeats, the ratio, and the largest difference between the two sets of values.

    python benchmarks/bench_metrics.py                       # 512 x 512 x 64 (z = 64)
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


def vessel_pair(shape, n_tubes=40, seed=0):
    """A vessel-like reference (random tubes of radius 1.5-4 voxels) and a perturbed prediction
    (shifted, with gaps and spurious blobs)."""
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
    ref = dist <= radius[tuple(ind)]
    pred = np.roll(ref, 1, axis=2)
    # gaps in the prediction and spurious blobs
    for _ in range(30):
        c = [rng.integers(0, s) for s in shape]
        sl = tuple(slice(max(ci - 4, 0), ci + 4) for ci in c)
        pred[sl] = False
    blobs = ndimage.gaussian_filter(rng.random(shape).astype(np.float32), 2) > 0.5 + 0.0225
    return pred | blobs, ref


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
    args = ap.parse_args(argv)

    from nnunet_ext.evaluation import case_metrics

    ref_mod = _load_reference()
    shape, sp = tuple(args.shape), tuple(args.spacing)
    pred, ref = vessel_pair(shape)
    metrics = ["dice", "assd", "masd", "hd", "hd95", "nsd", "cldice",
               "betti_0_error", "betti_1_error", "betti_2_error", "voi"]
    print(f"shape {shape}, spacing {sp}, foreground ref {ref.mean():.3%}, pred {pred.mean():.3%}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}")
    t_fast, t_slow = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        fast = case_metrics(pred, ref, sp, metrics=metrics, tolerance=args.tolerance)
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
    return 0 if diff <= 1e-6 else 1


if __name__ == "__main__":
    raise SystemExit(main())
