"""Review defects of the evaluation (issue 15, item 4): label maps passed as masks, small-n
confidence intervals, plot layout and units, the overlap docstring, Boundary IoU."""
import doctest
import warnings

import numpy as np
import pytest
from scipy import ndimage

from _evaluation_reference import random_blobs
from nnunet_ext.evaluation import bootstrap_ci, case_metrics, dice_score, paired_bootstrap, summarize


# --- label maps are refused, not silently binarised ------------------------------------------

def test_label_map_with_ignore_label_is_refused_with_a_clear_error():
    ref = np.zeros((4, 8), np.uint8)
    ref[1:3, 1:5] = 1
    ref[1:3, 5:8] = 2  # the ignore label, as in the Vesuvius data
    pred = (ref == 1).astype(np.uint8)
    # counted as foreground, label 2 gave Dice 2*8 / (8 + 14) = 0.727 instead of 1
    with pytest.raises(ValueError, match=r"ref holds values other than 0 and 1 \(2\)"):
        dice_score(pred, ref)
    with pytest.raises(ValueError, match="values other than 0 and 1"):
        case_metrics(pred, ref, metrics=["dice"])
    with pytest.raises(ValueError, match=r"pred holds values other than 0 and 1 \(-1\)"):
        dice_score(np.array([[0, -1]]), np.array([[0, 1]]))
    with pytest.raises(ValueError, match=r"values other than 0 and 1 \(0.5\)"):
        dice_score(np.array([[0.5, 1.0]]), np.array([[0, 1]]))
    # the remedy the message names gives the right value
    valid = ref != 2
    assert dice_score(pred.astype(bool) & valid, (ref == 1) & valid) == 1.0
    # 0/1 numbers of any dtype stay accepted
    assert dice_score(pred.astype(np.float32), (ref == 1).astype(np.int64)) == 1.0


# --- confidence intervals hold at small n --------------------------------------------------

def _coverage(n, method, trials=400, dist="normal"):
    rng = np.random.default_rng(n)
    hit = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(trials):
            v = rng.normal(0.7, 0.1, n) if dist == "normal" else rng.beta(8, 2, n)
            lo, hi = bootstrap_ci(v, n_resamples=1000, seed=i, method=method)
            hit += lo <= (0.7 if dist == "normal" else 0.8) <= hi
    return hit / trials


@pytest.mark.parametrize("n", [3, 5])
def test_default_interval_covers_at_small_n(n):
    # the plain percentile interval: 0.74 at n = 3, 0.84 at n = 5 (the measurement)
    assert _coverage(n, "percentile") < 0.88
    assert _coverage(n, "expanded") >= 0.92
    assert _coverage(n, "expanded", dist="beta") >= 0.9


def test_expanded_interval_contains_students_t_and_approaches_percentile():
    from scipy.stats import t

    v = np.array([0.61, 0.72, 0.90])
    lo, hi = bootstrap_ci(v)
    half = t.ppf(0.975, 2) * v.std(ddof=1) / np.sqrt(3)
    assert lo <= v.mean() - half + 1e-12 and hi >= v.mean() + half - 1e-12
    big = np.random.default_rng(0).normal(0.8, 0.05, 400)
    e, p = bootstrap_ci(big, n_resamples=4000), bootstrap_ci(big, n_resamples=4000, method="percentile")
    assert e == pytest.approx(p, abs=0.1 * (p[1] - p[0]))
    s = summarize(v, n_resamples=500)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx(bootstrap_ci(v, n_resamples=500))
    r = paired_bootstrap(v + 0.05 * np.array([1, -1, 2]), v, n_resamples=500)
    assert r["ci_low"] < 0 < r["ci_high"]
    with pytest.warns(UserWarning, match="one case"):
        assert bootstrap_ci([0.5]) == (0.5, 0.5)
    with pytest.raises(ValueError, match="CI method"):
        bootstrap_ci(v, method="bca")


# --- distribution plots --------------------------------------------------------------------

def test_distribution_plot_title_clear_of_panels_and_axes_labelled(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nnunet_ext.evaluation.compare import compare_results, plot_comparison

    rng = np.random.default_rng(0)
    results = {name: [{"case": f"c{i}", "class": "vessel", "dice": float(rng.uniform()),
                       "hd95": float(rng.uniform(0, 9)), "voi": float(rng.uniform(0, 2))}
                      for i in range(6)] for name in ("A", "B")}
    cmp = compare_results(results, n_resamples=200)
    captured = {}
    real_savefig = plt.Figure.savefig

    def keep(fig, *args, **kwargs):
        captured.setdefault("figs", []).append(fig)
        return real_savefig(fig, *args, **kwargs)

    plt.Figure.savefig = keep
    try:
        files = plot_comparison(results, cmp, str(tmp_path))
    finally:
        plt.Figure.savefig = real_savefig
    assert (tmp_path / files["vessel"][0]).is_file()
    fig = captured["figs"][0]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()  # plt.close() detached the figure's canvas
    title = fig._suptitle.get_window_extent(renderer)
    axes = [ax for ax in fig.axes if ax.axison]
    for ax in axes:
        assert not title.overlaps(ax.title.get_window_extent(renderer)), ax.get_title()
    labels = {ax.get_title().split()[0]: ax.get_ylabel() for ax in axes}
    assert "mm" in labels["hd95"] and "bits" in labels["voi"] and labels["dice"]


# --- the overlap module states the recall convention the code follows ---------------------

def test_overlap_module_docstring_examples_match_the_code():
    import nnunet_ext.evaluation.overlap as overlap

    assert "recall is 0.0 either way" in overlap.__doc__
    examples = doctest.DocTestParser().get_examples(overlap.__doc__)
    assert any("recall_score" in e.source for e in examples)
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner()
    for test in finder.find(overlap, "overlap", globs=vars(overlap).copy()):
        runner.run(test)
    assert runner.failures == 0 and runner.tries >= 2


# --- Boundary IoU ------------------------------------------------------------------------------

def _boundary_iou_reference(pred, ref, distance=1.0, spacing=None):
    """MetricsReloaded's definition, whole array: border = mask − erosion (6/4-neighbourhood,
    outside = background), band = mask voxels with distance to the border < d."""
    def band(m):
        border = m & ~ndimage.binary_erosion(m)
        return m & (ndimage.distance_transform_edt(~border, sampling=spacing) < distance)
    bp, br = band(pred), band(ref)
    union = (bp | br).sum()
    return 1.0 if union == 0 else (bp & br).sum() / union


def test_boundary_iou_hand_computed_and_empty_cases():
    from nnunet_ext.evaluation import boundary_iou

    a = np.zeros((6, 6), bool)
    a[1:5, 1:5] = True  # border: the 12 pixels of the 4x4 square's rim
    b = np.zeros((6, 6), bool)
    b[1:5, 2:5] = True  # border: 10 pixels, 8 of them on a's rim
    assert boundary_iou(a, b) == pytest.approx(8 / 14)
    assert boundary_iou(a, a) == 1.0
    assert boundary_iou(np.zeros_like(a), np.zeros_like(a)) == 1.0
    assert boundary_iou(a, np.zeros_like(a)) == 0.0
    # distance 2: the 4x4 square is all band
    assert boundary_iou(a, b, distance=2.0) == pytest.approx(12 / 16)
    r = case_metrics(a, b, metrics=["boundary_iou", "dice"])
    assert r["boundary_iou"] == pytest.approx(8 / 14)


@pytest.mark.parametrize("seed", [0, 1])
def test_boundary_iou_equals_whole_array_reference(seed):
    from nnunet_ext.evaluation import boundary_iou

    rng = np.random.default_rng(seed)
    shape = (14, 20, 18)
    p, r = random_blobs(rng, shape, 0.3), random_blobs(rng, shape, 0.25)
    for distance, spacing in ((1.0, None), (2.0, None), (1.6, (1.5, 0.7, 0.7))):
        assert boundary_iou(p, r, distance, spacing) == pytest.approx(
            _boundary_iou_reference(p, r, distance, spacing), abs=1e-12)
