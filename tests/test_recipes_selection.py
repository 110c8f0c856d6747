"""Pure parts of recipe training: LR schedules and their resume, metric expressions, best/early-stop
trackers on synthetic metric streams, patch metrics, class weights, term history, weight averaging."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

from nnunet_ext.lr_schedules import (EpochLRScheduler, LRScheduleError, Plateau, PlateauState, lr_schedule_from_spec)
from nnunet_ext.recipes import auto_class_weights, describe_class_weights, label_fractions
from nnunet_ext.trainers.checkpoints import (BestTracker, EarlyStopping, MetricExpression, MetricExpressionError,
                                             class_variables, default_mode, patch_metric_values)
from nnunet_ext.trainers.swa import WeightAverage, has_running_statistics, recompute_batch_norm
from nnunet_ext.trainers.term_logging import TermHistory, format_terms, plot_term_history


def optimizer(lr=0.01):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


# ------------------------------------------------------------------ learning rate
def test_default_poly_is_exactly_nnunets_poly_scheduler():
    ours = EpochLRScheduler(optimizer(), lr_schedule_from_spec(None), 0.01, 1000)
    stock_optimizer = optimizer()
    stock = PolyLRScheduler(stock_optimizer, 0.01, 1000)
    for epoch in (0, 1, 500, 999):
        ours.step(epoch)
        stock.step(epoch)
        assert ours.optimizer.param_groups[0]["lr"] == pytest.approx(stock_optimizer.param_groups[0]["lr"], rel=1e-12)


def test_warmup_cosine_restarts_and_constant_math():
    warm = lr_schedule_from_spec({"type": "cosine", "warmup_epochs": 10, "min_lr": 1e-4})
    assert [warm.lr(e, 0.01, 100) for e in (0, 4, 9)] == pytest.approx([0.01 / 11, 0.005 / 1.1, 0.01 * 10 / 11])
    assert warm.lr(10, 0.01, 100) == pytest.approx(0.01)
    assert warm.lr(55, 0.01, 100) == pytest.approx(1e-4 + (0.01 - 1e-4) / 2)
    restarts = lr_schedule_from_spec({"type": "cosine_restarts", "period": 10, "period_mult": 2, "restart_decay": 0.5})
    assert restarts.lr(0, 1.0, 100) == 1.0 and restarts.lr(5, 1.0, 100) == pytest.approx(0.5)
    assert restarts.lr(10, 1.0, 100) == pytest.approx(0.5)  # second period: 20 epochs from 0.5
    assert restarts.lr(20, 1.0, 100) == pytest.approx(0.25)
    assert restarts.lr(30, 1.0, 100) == pytest.approx(0.25)  # third period starts at 10 + 20
    constant = lr_schedule_from_spec({"type": "constant", "warmup_epochs": 1})
    assert (constant.lr(0, 0.1, 5), constant.lr(3, 0.1, 5)) == (0.05, 0.1)
    with pytest.raises(LRScheduleError, match="lr_schedule.period: expected an integer >= 1"):
        lr_schedule_from_spec({"type": "cosine_restarts", "period": 0})


def test_plateau_reduces_after_patience_and_respects_cooldown_and_min_lr():
    plateau = Plateau(factor=0.5, patience=2, cooldown=1, min_lr=0.003, threshold=0.0)
    state, scales = PlateauState(), []
    for epoch, value in enumerate([1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]):
        state = plateau.update(state, value, epoch)
        scales.append(state.scale)
    assert scales == [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert plateau.lr(20, 0.01, 100, 0.25) == pytest.approx(0.003)  # floored at min_lr
    assert plateau.update(PlateauState(), math.nan, 0).best is None  # NaN is a stall, never a best


def test_lr_resume_gives_the_uninterrupted_sequence_including_plateau_state():
    spec = {"type": "plateau", "factor": 0.5, "patience": 1, "warmup_epochs": 2}
    values = [3.0, 2.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.4]

    def run(epochs, scheduler):
        rates = []
        for epoch in epochs:
            scheduler.step(epoch)
            rates.append(scheduler.optimizer.param_groups[0]["lr"])
            scheduler.observe(values[epoch], epoch)
        return rates

    uninterrupted = run(range(10), EpochLRScheduler(optimizer(), lr_schedule_from_spec(spec), 0.01, 10))
    first = EpochLRScheduler(optimizer(), lr_schedule_from_spec(spec), 0.01, 10)
    head = run(range(6), first)
    saved = first.state_dict()  # what the checkpoint of epoch 5 holds
    second = EpochLRScheduler(optimizer(), lr_schedule_from_spec(spec), 0.01, 10)
    second.load_state_dict(saved)
    assert head + run(range(6, 10), second) == uninterrupted
    assert min(uninterrupted) < 0.01  # the plateau did act


def test_swa_learning_rate_override():
    scheduler = EpochLRScheduler(optimizer(), lr_schedule_from_spec(None), 0.01, 100, override_from=80,
                                 override_lr=0.002)
    assert scheduler.lr_at(79) > 0.002 and scheduler.lr_at(80) == scheduler.lr_at(99) == 0.002


# ------------------------------------------------------------------ metric expressions
def test_expressions_evaluate_the_seed_metrics():
    topo = MetricExpression.parse("0.5 * (1 - min(masd, 50) / 50) + 0.5 * cldice")
    assert topo({"masd": 10.0, "cldice": 0.8}) == pytest.approx(0.8)
    assert topo({"masd": 80.0, "cldice": 0.8}) == pytest.approx(0.4)
    mix = MetricExpression.parse("0.7 * dice_inside + 0.3 * dice_boundary")
    assert mix({"dice_inside": 1.0, "dice_boundary": 0.0}) == pytest.approx(0.7)
    assert math.isnan(topo({"masd": math.nan, "cldice": 1.0}))
    assert math.isnan(MetricExpression.parse("dice / val_loss")({"dice": 1, "val_loss": 0}))
    assert MetricExpression.parse("clip(x, 0, 1) + abs(-y) + 2 ** 2")({"x": 3, "y": 1}) == 6
    assert default_mode("val_loss") == "min" and default_mode("masd_2") == "min" and default_mode("-val_loss") == "max"


@pytest.mark.parametrize("source", ["__import__('os').system('true')", "dice.real", "dice[0]", "dice if 1 else 0",
                                    "(lambda: 1)()", "dice > 0.5", "'text'", "max(dice)", "min(a=1, b=2)", "dice // 2"])
def test_expressions_reject_everything_but_arithmetic(source):
    with pytest.raises(MetricExpressionError, match="^key: "):
        MetricExpression.parse(source, "key")


def test_class_variables_by_index_and_name():
    values = class_variables("dice", [0.5, math.nan], ["whole tumor", "core"])
    assert values["dice"] == 0.5 and values["dice_1"] == values["dice_whole_tumor"] == 0.5
    assert math.isnan(values["dice_core"])


# ------------------------------------------------------------------ selection on synthetic metric streams
def test_best_trackers_pick_the_right_epochs_on_a_synthetic_stream():
    stream = [(0, {"val_loss": 1.0, "dice": 0.2}), (1, {"val_loss": 0.8, "dice": 0.5}),
              (2, {"val_loss": 0.9, "dice": math.nan}), (3, {"val_loss": 0.7, "dice": 0.3}),
              (4, {"val_loss": 0.75, "dice": 0.6})]
    expressions = {"val_loss": MetricExpression.parse("val_loss"), "dice": MetricExpression.parse("dice"),
                   "mix": MetricExpression.parse("dice - val_loss")}
    trackers = {"val_loss": BestTracker("min"), "dice": BestTracker("max"), "mix": BestTracker("max")}
    saved = {name: [] for name in trackers}
    for epoch, values in stream:
        for name, expression in expressions.items():
            if trackers[name].update(expression(values), epoch):
                saved[name].append(epoch)
    assert saved == {"val_loss": [0, 1, 3], "dice": [0, 1, 4], "mix": [0, 1, 4]}
    assert trackers["val_loss"].best == 0.7 and trackers["dice"].best_epoch == 4
    restored = BestTracker("min")
    restored.load_state_dict(trackers["val_loss"].state_dict())
    assert not restored.update(0.71, 5) and restored.update(0.69, 5)


def test_min_delta_and_early_stopping_with_patience():
    stopper = EarlyStopping(patience=3, mode="max", min_delta=0.01)
    stops = [stopper.update(value, epoch) for epoch, value in enumerate([0.5, 0.6, 0.605, 0.61, 0.3, 0.6, 0.9])]
    # patience counts from epoch 1 (0.605 and 0.61 are within min_delta of 0.6): stops at epoch 4 and stays stopped
    assert stops == [False, False, False, False, True, True, True] and stopper.stopped_epoch == 4
    assert (stopper.reference, stopper.reference_epoch) == (0.6, 1)
    every_other = EarlyStopping(patience=4, mode="min")
    for epoch in (1, 3, 5):  # metrics every 2 epochs: patience counts epochs, not evaluations
        stopped = every_other.update(1.0 if epoch == 1 else 2.0, epoch)
    assert stopped and every_other.stopped_epoch == 5
    restored = EarlyStopping(patience=3, mode="max", min_delta=0.01)
    restored.load_state_dict(EarlyStopping(3, "max", 0.01, 0.6, 1, None).state_dict())
    assert restored.update(0.605, 3) is False and restored.update(0.605, 4) is True


def test_min_delta_does_not_change_the_best_epoch_only_when_patience_resets():
    """Issue 13, item 2: dice 0.50, 0.54, 0.53, 0.52 with min_delta 0.05 kept epoch 0 as the best."""
    tracker, stopper = BestTracker("max"), EarlyStopping(patience=3, mode="max", min_delta=0.05)
    for epoch, value in enumerate([0.50, 0.54, 0.53, 0.52]):
        tracker.update(value, epoch)
        stopped = stopper.update(value, epoch)
    assert (tracker.best, tracker.best_epoch) == (0.54, 1)  # any improvement moves the checkpoint
    assert stopped and stopper.reference_epoch == 0  # 0.54 is not 0.05 better than 0.50: patience ran out


def test_patch_metrics_skip_empty_patches_and_respect_the_ignore_mask():
    prediction = np.zeros((2, 2, 6, 12, 12), bool)
    reference = np.zeros_like(prediction)
    reference[0, 0, 3, 6, 2:10] = True
    prediction[0, 0, 3, 6, 2:10] = True  # perfect on patch 0, class 1
    reference[1, 0, 3, 6, 2:10] = True  # missed on patch 1
    prediction[0, 1, 1, 1, 1] = True  # class 2 predicted where it is ignored
    valid = np.ones((2, 1, 6, 12, 12), bool)
    valid[0, 0, 1, 1, 1] = False
    values = patch_metric_values(prediction, reference, valid, (1.0, 1.0, 1.0), ["cldice", "masd"])
    assert values["cldice"] == [[1.0, 0.0], []] and values["masd"][0][0] == 0.0 and len(values["masd"][1]) == 0


# ------------------------------------------------------------------ class weights
def test_auto_class_weights_formula_and_plain_words():
    segmentations = [np.array([0] * 90 + [1] * 9 + [2] * 1 + [3] * 50 + [-1] * 7)]
    fractions = label_fractions(segmentations, [0, 1, 2], regions=False, ignore_label=3)
    assert fractions == pytest.approx([0.9, 0.09, 0.01])
    weights = auto_class_weights(fractions, power=1.0, max_weight=20.0)
    assert weights == pytest.approx([1.0, 10.0, 20.0])  # 0.9 / 0.01 = 90, clipped at 20
    assert auto_class_weights(fractions, power=0.5, max_weight=20.0) == pytest.approx([1.0, 10 ** 0.5, 90 ** 0.5])
    assert auto_class_weights([0.5, 0.5, 0.0], max_weight=7.0) == [1.0, 1.0, 7.0]
    lines = describe_class_weights(weights, ["background", "vessel", "wall"], fractions, "auto", regions=False)
    assert "background 1 (90 % of labelled voxels)" in lines[0]
    assert lines[1] == "'wall' is up-weighted: an error on a 'wall' voxel counts 20× an error on a 'background' voxel"
    assert len(lines) == 2


def test_reversed_manual_class_weights_are_flagged():
    lines = describe_class_weights([10.0, 1.0], ["background", "vessel"], [0.97, 0.03], "manual", regions=False)
    assert lines[1].startswith("'background' is up-weighted") and lines[2].startswith("WARNING: 'background' is the most")
    regions = label_fractions([np.array([0, 1, 1, 2, 2, 2])], [(1, 2), (2,)], regions=True)
    assert regions == pytest.approx([5 / 6, 3 / 6])


# ------------------------------------------------------------------ term history
def test_term_history_resumes_and_plots(tmp_path):
    history = TermHistory()
    history.record(0, 0.01, {"base": 1, "cldice": 0}, {"base": 0.9})
    history.record(1, 0.009, {"base": 1, "cldice": 0.5}, {"base": 0.8, "cldice": 0.4})
    assert history.values["cldice"][0] != history.values["cldice"][0]  # NaN: not computed at weight 0
    resumed = TermHistory()
    resumed.load_state_dict(history.state_dict())
    resumed.record(1, 0.009, {"base": 1, "cldice": 0.5}, {"base": 0.7, "cldice": 0.4})  # epoch 1 again
    assert resumed.epochs == [0, 1] and resumed.values["base"] == [0.9, 0.7]
    history.write_json(tmp_path / "terms.json")
    assert "null" in (tmp_path / "terms.json").read_text()
    plot_term_history(history, tmp_path / "terms.png")
    assert (tmp_path / "terms.png").stat().st_size > 1000
    assert format_terms({"base": 0.8}, {"base": 1.0, "cldice": 0.0}) == "base 0.8 ×1, cldice not computed ×0"


# ------------------------------------------------------------------ weight averaging
def test_weight_average_is_the_mean_of_the_averaged_epochs_and_resumes():
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 1), torch.nn.InstanceNorm3d(2, affine=True))
    average, snapshots = WeightAverage(start_epoch=2, every=2), []
    for epoch in range(7):
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(float(epoch))
        if average.update(net, epoch):
            snapshots.append(epoch)
        if epoch == 4:
            state = average.state_dict()
    assert snapshots == [2, 4, 6] and average.n_averaged == 3
    assert torch.allclose(average.average["0.weight"], torch.full_like(net[0].weight, 4.0))
    resumed = WeightAverage(2, 2)
    resumed.load_state_dict(state)
    resumed.update(net, 6)
    assert torch.allclose(resumed.average["0.weight"], average.average["0.weight"])
    assert not has_running_statistics(net)


def test_batch_norm_statistics_are_recomputed_for_averaged_weights():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    assert has_running_statistics(net)
    batches = [torch.randn(4, 1, 5, 5) + 3 for _ in range(3)]
    assert recompute_batch_norm(net, iter(batches)) == 3
    outputs = torch.cat([net[0](b) for b in batches]).detach()
    assert torch.allclose(net[1].running_mean, outputs.mean((0, 2, 3)), atol=1e-5)
    assert not net.training and net[1].momentum == 0.1


def test_weight_average_keeps_one_copy_per_storage_on_the_cpu(tmp_path):
    """Issue 13, item 6: nnU-Net's decoder reaches the encoder too (one tensor, several state-dict keys);
    the average used to clone every key (≈ 3.25× the network) on the network's device."""
    class Shared(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Conv3d(1, 8, 3)
            self.decoder = torch.nn.Module()
            self.decoder.encoder = self.encoder
            self.head = torch.nn.Conv3d(8, 2, 1)

    net = Shared()
    distinct = sum(p.numel() * p.element_size() for p in net.parameters())
    average = WeightAverage(start_epoch=0)
    for epoch in range(3):
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(float(epoch))
        average.update(net, epoch)
    assert len(net.state_dict()) == 6 and len(average.average) == 4 and average.nbytes() == distinct
    assert all(v.device.type == "cpu" for v in average.average.values())
    full = average.full_state()
    assert set(full) == set(net.state_dict()) and full["decoder.encoder.weight"] is full["encoder.weight"]
    assert torch.allclose(full["head.weight"], torch.ones_like(net.head.weight))  # mean of 0, 1, 2
    torch.save(average.state_dict(), tmp_path / "swa.pth")
    assert (tmp_path / "swa.pth").stat().st_size < distinct + 4000
    restored = WeightAverage(0)
    restored.load_state_dict(torch.load(tmp_path / "swa.pth", weights_only=False))
    fresh = Shared()
    fresh.load_state_dict(restored.full_state())
    assert torch.equal(fresh.encoder.weight, torch.ones_like(fresh.encoder.weight))
