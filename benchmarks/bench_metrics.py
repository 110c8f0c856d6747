"""Benchmark: the full evaluation metric set against the straightforward implementation.

The straightforward implementation is what the reference tools do: scipy distance transforms over
the whole volume for the surface metrics, scikit-image skeletons of the whole volume for clDice,
scipy labelling and scikit-image Euler numbers for the Betti numbers, scikit-image VOI. Its
default variant computes the two distance transforms once for the five surface metrics (as
MetricsReloaded does within one ``BinaryPairwiseMeasures`` object, which caches them);
``--baseline per-metric`` computes them again for each surface metric (one object per metric).
Everything runs in the same process on the same synthetic vessel-like pairs, each repeat timing
every variant once; the script prints medians over repeats, the ratios, and the largest
difference between the values.

    python benchmarks/bench_metrics.py                       # 512 x 512 x 64 (z = 64), both pairs
    python benchmarks/bench_metrics.py --workers 1 2 --baseline both --families
    python benchmarks/bench_metrics.py --prediction realistic --shape 64 256 256 --repeats 5
    python benchmarks/bench_metrics.py --prediction noisy tree --workers 1 2 --skeleton-check \
        --compare 4                              # the single-large-component table

``--skeleton-check`` times scikit-image's whole-array ``skeletonize`` against ours per mask, both
standalone (``skeletonize_mask``, which labels the components itself) and with the labels that
``case_metrics`` shares with the other metrics; ``--compare N`` scores N predictions against one
reference (what ``compare`` of N trainers does per case) with and without a
``PreparedReference``. Wall-clock and CPU seconds (``time.process_time``, this process only;
steadier than wall time on a loaded machine) are printed for the single-process timings.
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


def tree_pair(shape, n_branches=60, seed=0):
    """Single-component pair: a branching vessel tree (one 26-connected component, radii 4
    shrinking to 1.5 voxels) as reference, and a prediction with radii varying smoothly by ±15 %
    and spurious blobs all over the volume (thousands of small components beside the tree)."""
    rng = np.random.default_rng(seed)
    centre = np.zeros(shape, bool)
    radius = np.zeros(shape, np.float32)
    starts = [(np.array(shape) / 2.0, 4.0)]
    for _ in range(n_branches):
        pos, r = starts[rng.integers(len(starts))]
        pos, step = pos.copy(), rng.normal(size=3)
        for _ in range(int(max(shape) * 0.6)):
            step = 0.9 * step + 0.3 * rng.normal(size=3)
            step /= np.linalg.norm(step)
            pos = np.clip(pos + step, 0, np.array(shape) - 1)
            idx = tuple(int(p) for p in pos)
            centre[idx] = True
            radius[idx] = max(r, 1.5)
            if rng.random() < 0.02:
                starts.append((pos.copy(), max(r * 0.85, 1.5)))
    dist, ind = ndimage.distance_transform_edt(~centre, return_indices=True)
    near_radius = radius[tuple(ind)]
    ref = dist <= near_radius
    rng = np.random.default_rng(seed + 1)
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 4)
    noise /= noise.std()
    pred = dist <= near_radius * (1 + 0.15 * noise)
    pred |= ndimage.gaussian_filter(rng.random(shape).astype(np.float32), 2) > 0.53
    return pred, ref


SURFACE = ("assd", "masd", "hd", "hd95", "nsd")
METRICS = ["dice", *SURFACE, "cldice", "betti_0_error", "betti_1_error", "betti_2_error", "voi"]


def straightforward(ref_mod, pred, ref, spacing, tolerance, per_metric=False):
    """The full metric set the straightforward way (whole-volume scipy distance transforms and
    scikit-image skeletons). ``per_metric``: the two distance transforms are computed again for
    every surface metric (MetricsReloaded with one ``BinaryPairwiseMeasures`` object per metric;
    within one object it caches them, which the default, shared variant renders)."""
    import cc3d
    from skimage.metrics import variation_of_information

    out = {"dice": float(ref_mod.dice(pred, ref))}
    if per_metric:
        for name in SURFACE:
            out[name] = float(ref_mod.surface(pred, ref, spacing, tolerance)[name])
    else:
        out.update({k: float(v) for k, v in ref_mod.surface(pred, ref, spacing, tolerance).items()})
    out["cldice"] = float(ref_mod.cldice(pred, ref))
    bp, br = ref_mod.betti(pred), ref_mod.betti(ref)
    for k in range(3):
        out[f"betti_{k}_error"] = float(abs(bp[k] - br[k]))
    h = variation_of_information(cc3d.connected_components(pred), cc3d.connected_components(ref))
    out["voi"] = float(h.sum())
    return out


def families(pred, ref, spacing, tolerance):
    """Seconds per metric family of nnunet_ext's implementation, all in this process."""
    from nnunet_ext.evaluation._prepared import prepare_mask
    from nnunet_ext.evaluation.overlap import overlap_metrics
    from nnunet_ext.evaluation.skeleton import start_skeleton_coordinates
    from nnunet_ext.evaluation.surface import surface_metrics_prepared
    from nnunet_ext.evaluation.topology import betti_numbers_prepared
    from nnunet_ext.evaluation.voi import voi_prepared

    t = {}

    def timed(name, f):
        t0 = time.perf_counter()
        out = f()
        t[name] = t.get(name, 0.0) + time.perf_counter() - t0
        return out

    timed("overlap", lambda: overlap_metrics(pred, ref))
    pp = timed("crop + labels", lambda: prepare_mask(pred))
    pr = timed("crop + labels", lambda: prepare_mask(ref))
    timed("surface (5 metrics)", lambda: surface_metrics_prepared(pp, pr, spacing, tolerance))
    timed("betti", lambda: (betti_numbers_prepared(pp), betti_numbers_prepared(pr)))
    timed("voi", lambda: voi_prepared(pp, pr))
    timed("skeletons (clDice)", lambda: start_skeleton_coordinates([pp, pr])())
    return t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(64, 512, 512), help="array shape (z y x)")
    ap.add_argument("--spacing", type=float, nargs=3, default=(1.5, 0.7, 0.7))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tolerance", type=float, default=1.0)
    ap.add_argument("--prediction", choices=("noisy", "realistic", "tree", "both", "all"),
                    nargs="+", default=["both"],
                    help="which synthetic pairs to evaluate: noisy / realistic (many components), "
                         "tree (one connected vessel tree), both (noisy + realistic, default) or "
                         "all; several may be given")
    ap.add_argument("--workers", type=int, nargs="+", default=[1],
                    help="workers of nnunet_ext's case_metrics, each timed in the same run")
    ap.add_argument("--baseline", choices=("shared", "per-metric", "both", "none"),
                    default="shared",
                    help="straightforward implementation: distance transforms shared by the five "
                         "surface metrics (default) or computed per metric, or both, or none "
                         "(values then compared among nnunet_ext's variants only)")
    ap.add_argument("--skeleton-check", action="store_true",
                    help="also time scikit-image's whole-array skeletonize against skeletonize_mask "
                         "per mask and check that the skeletons are identical")
    ap.add_argument("--compare", type=int, default=0, metavar="N",
                    help="also time N predictions (the pair's and N-1 shifted copies) scored "
                         "against the same reference with and without a PreparedReference, "
                         "with the largest --workers")
    ap.add_argument("--families", action="store_true",
                    help="also time nnunet_ext's metric families one by one (one process)")
    args = ap.parse_args(argv)

    from nnunet_ext.evaluation import case_metrics

    ref_mod = _load_reference()
    shape, sp = tuple(args.shape), tuple(args.spacing)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}; load average {_load()}")
    groups = {"both": ("noisy", "realistic"), "all": ("noisy", "realistic", "tree")}
    kinds = list(dict.fromkeys(k for p in args.prediction for k in groups.get(p, (p,))))
    pairs = {"noisy": vessel_pair, "realistic": realistic_pair, "tree": tree_pair}
    worst_diff = 0.0
    summary = {}
    for kind in kinds:
        pred, ref = pairs[kind](shape)
        diff, summary[kind] = _compare(ref_mod, case_metrics, kind, pred, ref, sp, args)
        worst_diff = max(worst_diff, diff)
    _print_summary(summary, args)
    print(f"load average at the end: {_load()}")
    return 0 if worst_diff <= 1e-6 else 1


def _print_summary(summary, args):
    """One Markdown table over all pairs: medians of the same run."""
    cols = [f"w={w}" for w in args.workers]
    head = ["pair", *[f"full set {c}" for c in cols]]
    if args.skeleton_check:
        head += ["skeleton pred: whole / ours / ours, shared labels (CPU s)",
                 "skeleton ref: whole / ours / ours, shared labels (CPU s)"]
    if args.compare:
        head += [f"compare of {args.compare}, w=1: uncached / cached (CPU s)",
                 f"compare of {args.compare}, w={max(args.workers)}: uncached / cached"]
    print("\n| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for kind, s in summary.items():
        row = [kind, *[f"{s['full'][c]:.2f} s" for c in cols]]
        if args.skeleton_check:
            for name in ("pred", "ref"):
                k = s["skeleton"][name]
                row.append(f"{k['whole']:.2f} / {k['ours']:.2f} / {k['shared']:.2f} "
                           f"({k['whole_cpu']:.2f} / {k['ours_cpu']:.2f} / {k['shared_cpu']:.2f})")
        if args.compare:
            c1, cw = s["compare"][1], s["compare"][max(args.workers)]
            row.append(f"{c1['uncached']:.2f} / {c1['cached']:.2f} s "
                       f"({c1['uncached_cpu']:.2f} / {c1['cached_cpu']:.2f}; "
                       f"{c1['uncached_cpu'] / c1['cached_cpu']:.2f}x)")
            row.append(f"{cw['uncached']:.2f} / {cw['cached']:.2f} s "
                       f"({cw['uncached'] / cw['cached']:.2f}x)")
        print("| " + " | ".join(row) + " |")


def _load():
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _compare(ref_mod, case_metrics, kind, pred, ref, sp, args):
    from nnunet_ext.evaluation.surface import border_mask

    print(f"\n== {kind} prediction: shape {shape_str(pred.shape)}, spacing {sp}, foreground "
          f"ref {ref.mean():.3%}, pred {pred.mean():.3%}; border voxels ref "
          f"{int(border_mask(ref).sum())}, pred {int(border_mask(pred).sum())}")
    baselines = {"both": ("shared", "per-metric"), "none": ()}.get(args.baseline,
                                                                    (args.baseline,))
    times = {}
    values = {}
    # one repeat times every variant once, so that all of them see the same machine load
    for _ in range(args.repeats):
        for w in args.workers:
            t0 = time.perf_counter()
            values[f"nnunet_ext w={w}"] = case_metrics(
                pred, ref, sp, metrics=METRICS, tolerance=args.tolerance, workers=w)
            times.setdefault(f"nnunet_ext w={w}", []).append(time.perf_counter() - t0)
        for b in baselines:
            t0 = time.perf_counter()
            values[b] = straightforward(ref_mod, pred, ref, sp, args.tolerance,
                                        per_metric=b == "per-metric")
            times.setdefault(b, []).append(time.perf_counter() - t0)
    reference = values[baselines[0] if baselines else f"nnunet_ext w={args.workers[0]}"]
    print(f"{'metric':<15}{'nnunet_ext':>16}{'straightforward' if baselines else 'nnunet_ext':>18}")
    first = f"nnunet_ext w={args.workers[0]}"
    for m in METRICS:
        print(f"{m:<15}{values[first][m]:>16.6f}{reference[m]:>18.6f}")
    diff, worst = 0.0, METRICS[0]
    for name, vals in values.items():
        for m in METRICS:
            if abs(vals[m] - reference[m]) > diff:
                diff, worst = abs(vals[m] - reference[m]), m
    print(f"median seconds over {args.repeats} repeats (load average after: {_load()}):")
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, t in med.items():
        ratios = ", ".join(f"{med[b] / t:.1f}x vs {b}" for b in baselines)
        extra = "" if name in baselines or not baselines else f"  ({ratios})"
        print(f"  {name:<18}{t:>8.2f} s  [{', '.join(f'{x:.2f}' for x in times[name])}]{extra}")
    print(f"largest absolute difference: {diff:.2e} ({worst})")
    summary = {"full": {k.split()[-1]: med[k] for k in med if k.startswith("nnunet_ext")}}
    if args.skeleton_check:
        summary["skeleton"] = {name: _skeleton_check(name, m, args.repeats)
                               for name, m in (("pred", pred), ("ref", ref))}
    if args.compare:
        summary["compare"] = _compare_many(case_metrics, pred, ref, sp, args)
        diff = max(diff, summary["compare"]["diff"])
    if args.families:
        fam = families(pred, ref, sp, args.tolerance)
        print("nnunet_ext per metric family (one process): "
              + ", ".join(f"{k} {v:.2f} s" for k, v in fam.items()))
    return diff, summary


def _skeleton_check(name, m, repeats):
    """scikit-image's whole-array skeleton against ours (standalone, and on a prepared mask whose
    labels case_metrics shares with the other metrics), interleaved per repeat."""
    from skimage.morphology import skeletonize

    from nnunet_ext.evaluation import skeletonize_mask
    from nnunet_ext.evaluation._prepared import prepare_mask
    from nnunet_ext.evaluation.skeleton import start_skeleton_coordinates

    prep = prepare_mask(m)
    wall, cpu = {}, {}
    for _ in range(repeats):
        for variant in ("whole", "ours", "shared"):
            t0, c0 = time.perf_counter(), time.process_time()
            if variant == "whole":
                whole = skeletonize(m).astype(bool)
            elif variant == "ours":
                ours = skeletonize_mask(m)
            else:
                coords = start_skeleton_coordinates([prep])()[0]
            wall.setdefault(variant, []).append(time.perf_counter() - t0)
            cpu.setdefault(variant, []).append(time.process_time() - c0)
    shared = np.zeros(m.shape, bool)
    shared[tuple(coords.T)] = True
    same = bool(np.array_equal(whole, ours) and np.array_equal(whole, shared))
    out = {k: statistics.median(v) for k, v in wall.items()}
    out.update({f"{k}_cpu": statistics.median(v) for k, v in cpu.items()})
    print(f"skeleton of {name} ({prep.n_components} components; medians, wall / CPU s): "
          f"whole-array skimage {out['whole']:.2f} / {out['whole_cpu']:.2f}, skeletonize_mask "
          f"{out['ours']:.2f} / {out['ours_cpu']:.2f}, with shared labels {out['shared']:.2f} / "
          f"{out['shared_cpu']:.2f} (identical: {same})")
    if not same:
        raise SystemExit(f"skeleton of {name} differs from scikit-image's")
    return out


def _compare_many(case_metrics, pred, ref, sp, args):
    """N predictions against one reference: each scored from scratch, and with the reference
    prepared once (its preparation timed with the cached run). Same repeat, same workers; with
    one worker also in CPU seconds of this process (steady under load)."""
    from nnunet_ext.evaluation import prepare_reference

    preds = [pred] + [np.roll(pred, k, axis=-1) for k in range(1, args.compare)]
    workers = sorted({1, max(args.workers)})
    t, cpu = {}, {}
    diff = 0.0
    for _ in range(args.repeats):
        for w in workers:
            for variant in ("uncached", "cached"):
                t0, c0 = time.perf_counter(), time.process_time()
                against = prepare_reference(ref, sp) if variant == "cached" else ref
                got = [case_metrics(p, against, sp, metrics=METRICS, tolerance=args.tolerance,
                                    workers=w) for p in preds]
                t.setdefault((w, variant), []).append(time.perf_counter() - t0)
                cpu.setdefault((w, variant), []).append(time.process_time() - c0)
                if variant == "uncached":
                    plain = got
                elif got != plain:
                    diff = 1.0  # not bit-identical: fail the run
    out = {"diff": diff}
    for w in workers:
        u, c = (statistics.median(t[(w, v)]) for v in ("uncached", "cached"))
        uc, cc = (statistics.median(cpu[(w, v)]) for v in ("uncached", "cached"))
        out[w] = {"uncached": u, "cached": c, "uncached_cpu": uc, "cached_cpu": cc}
        cpu_note = f"; CPU {uc:.2f} / {cc:.2f} s ({uc / cc:.2f}x)" if w == 1 else ""
        print(f"compare of {args.compare} predictions against one reference, workers={w} "
              f"(medians of {args.repeats}): without / with a prepared reference {u:.2f} / "
              f"{c:.2f} s ({u / c:.2f}x) [{', '.join(f'{x:.2f}' for x in t[(w, 'uncached')])}"
              f" / {', '.join(f'{x:.2f}' for x in t[(w, 'cached')])}]{cpu_note}")
    print(f"compare: bit-identical with and without the prepared reference: {diff == 0.0}")
    return out


def shape_str(shape):
    return " x ".join(map(str, shape))


if __name__ == "__main__":
    raise SystemExit(main())
