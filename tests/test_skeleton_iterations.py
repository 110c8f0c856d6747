"""Soft-skeleton iteration counts chosen from the training labels (issue: clDice/cbDice were blind to
structures thicker than their hard-coded 3 iterations)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from nnunet_ext.losses import CenterlineBoundaryDiceLoss, SoftClDiceLoss
from nnunet_ext.losses.soft_skeleton import soft_skeleton
from nnunet_ext.targets.ground_truth import centerline_radius_target
from nnunet_ext.targets.structure_width import (iterations_from_histogram, nearest_exact_downsample, ridge_depth_histogram,
                                                ridge_depths)
from nnunet_ext.trainers import skeleton_iterations as module
from nnunet_ext.trainers.skeleton_iterations import derive_iterations, parse_iterations, resolve_skeleton_iterations


def tube(radius: float, length: int = 24, shape=None) -> np.ndarray:
    """A straight 3D tube of round cross-section along the last axis."""
    n = shape or int(2 * radius + 7)
    z, y = np.mgrid[:n, :n] - (n - 1) / 2
    disk = z ** 2 + y ** 2 <= radius ** 2
    out = np.zeros((n, n, length), bool)
    out[:, :, 2:-2] = disk[..., None]
    return out


# ------------------------------------------------------------------ the measurement
def test_ridge_depth_of_a_bar_is_its_half_width_in_erosion_steps():
    bar = np.zeros((11, 20), bool)
    bar[2:9, 1:19] = True  # 7 wide: 3 erosions leave its centre line, the 4th removes it
    assert set(ridge_depths(bar).tolist()) == {4}
    assert ridge_depths(np.zeros((4, 4), bool)).size == 0


@pytest.mark.parametrize("radius", [1.0, 2.0, 3.0, 4.5, 6.0])
def test_the_depth_measured_is_what_the_soft_skeleton_needs(radius):
    """ridge depth D of a tube's centre line ⇒ the soft skeleton is empty up to D - 2 iterations and
    appears at D - 1 (checked against the soft skeleton itself, not against the formula)."""
    mask = tube(radius)
    depth = int(np.bincount(ridge_depths(mask)).argmax())
    x = torch.from_numpy(mask.astype(np.float32))[None, None]
    middle = (..., slice(8, 16))
    assert soft_skeleton(x, depth - 1)[middle].sum() > 0
    if depth >= 2:
        assert soft_skeleton(x, depth - 2)[middle].sum() == 0


def test_depth_is_the_taxicab_distance_at_the_centre():
    mask = tube(4.0)
    reference = ndimage.distance_transform_cdt(np.pad(mask, 1), metric="taxicab")[1:-1, 1:-1, 1:-1]
    centre = tuple(s // 2 for s in mask.shape)
    assert ridge_depths(mask).max() == reference[centre] == reference.max()


def test_iterations_from_histogram_is_a_nearest_rank_percentile_with_limits():
    histogram = ridge_depth_histogram([tube(1.0)] * 9 + [tube(5.0)])  # thin tubes dominate the ridge
    assert iterations_from_histogram(histogram, 50) == 2
    assert iterations_from_histogram(histogram, 100) == 6
    assert iterations_from_histogram(histogram, 100, maximum=4) == 4
    assert iterations_from_histogram([0], 95) == 1  # nothing to measure: the minimum
    with pytest.raises(ValueError):
        iterations_from_histogram([1, 2], 0)


@pytest.mark.parametrize("scale", [(1, 1, 1), (0.5, 0.5, 0.5), (1, 0.5, 0.25), (0.5, 1, 0.5)])
def test_nearest_exact_downsampling_is_nnunets(scale):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, (6, 10, 12))
    shape = [int(round(n * s)) for n, s in zip(labels.shape, scale)]
    reference = F.interpolate(torch.from_numpy(labels)[None, None].float(), shape, mode="nearest-exact")[0, 0]
    assert np.array_equal(nearest_exact_downsample(labels, scale), reference.numpy().astype(labels.dtype))


def test_every_level_gets_the_count_of_its_own_resolution():
    seg = np.concatenate([tube(6.0, 32, 20).astype(np.int16), 2 * tube(1.0, 32, 20).astype(np.int16)], axis=2)
    record = derive_iterations([seg], [1, 2], False, [[1, 1, 1], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]],
                               percentile=100)
    full, half, quarter = record["iterations"]
    assert full >= 6 and full > half > quarter >= 1  # the thick tube sets every level's count
    assert record["cases"] == 1 and len(record["histograms"]) == 3


def test_regions_are_measured_per_region():
    seg = np.zeros((20, 20, 30), np.int16)
    seg[tube(6.0, 30, 20)] = 1
    seg[tube(1.0, 30, 20)] = 2  # region (1, 2) is the thick tube, region (2,) the thin core
    thick = derive_iterations([seg], [(1, 2)], True, [[1, 1, 1]], percentile=100)["iterations"]
    thin = derive_iterations([seg], [(2,)], True, [[1, 1, 1]], percentile=100)["iterations"]
    assert thick[0] >= 6 and thin[0] <= 2


# ------------------------------------------------------------------ what it fixes
@pytest.mark.parametrize("radius", [4.0, 6.0])
def test_a_missed_thick_structure_is_penalised_with_iterations_from_the_data(radius):
    mask = tube(radius)
    target = torch.from_numpy(mask.astype(np.float64))[None, None]
    missed = torch.full_like(target, 0.02, requires_grad=True)
    blind = SoftClDiceLoss(iterations=3)(missed, target)
    assert blind.item() == pytest.approx(0, abs=1e-3)  # the default of the reference code sees nothing
    k = iterations_from_histogram(ridge_depth_histogram([mask]))
    loss = SoftClDiceLoss(iterations=k)(missed, target)
    assert loss.item() > 0.5
    loss.backward()
    inside = missed.grad[target.bool()]
    assert inside.max() <= 0 and inside.min() < 0  # the tube is pushed up (along its centre line), never down


def test_cbdice_sees_a_missed_thick_structure_with_iterations_from_the_data():
    mask = tube(5.0)
    target = torch.from_numpy(mask.astype(np.float64))[None, None]
    auxiliary = torch.from_numpy(centerline_radius_target(mask[None])).double()[None]
    missed = torch.full_like(target, 0.02)
    k = iterations_from_histogram(ridge_depth_histogram([mask]))
    assert CenterlineBoundaryDiceLoss(iterations=k)(missed, target, None, auxiliary).item() > 0.5
    assert CenterlineBoundaryDiceLoss(iterations=k, formulation="shi2024")(missed, target, None,
                                                                             auxiliary).item() > 0.5


def test_per_level_iterations_select_by_level():
    mask = tube(4.0)
    target = torch.from_numpy(mask.astype(np.float64))[None, None]
    missed = torch.full_like(target, 0.02)
    loss = SoftClDiceLoss(iterations=(6, 2))
    assert loss(missed, target, level=0).item() > 0.5
    assert loss(missed, target, level=1).item() == pytest.approx(0, abs=1e-3)
    assert loss(missed, target, level=5).item() == pytest.approx(0, abs=1e-3)  # beyond: the last entry


# ------------------------------------------------------------------ the run's choice
def test_parse_iterations():
    assert parse_iterations("auto", "x") == "auto" and parse_iterations(" 7 ", "x") == 7
    assert parse_iterations("7,4,2", "x") == (7, 4, 2) and parse_iterations([3, 2], "x") == (3, 2)
    for bad in ("2.5", "-1", "", "seven", True, 2.5, -1, [], [1, True]):
        with pytest.raises(ValueError, match="where"):
            parse_iterations(bad, "where")


class FakeTrainer(SimpleNamespace):
    """What resolve_skeleton_iterations reads of an nnUNetTrainer."""

    def __init__(self, folder, scales=([1, 1, 1], [0.5, 0.5, 0.5])):
        super().__init__(output_folder=str(folder), fold=0, local_rank=0, preprocessed_dataset_folder=str(folder),
                         configuration_manager=SimpleNamespace(patch_size=(16, 16, 16)),
                         label_manager=SimpleNamespace(has_regions=False, foreground_labels=[1]), log=[])
        self._scales = [list(s) for s in scales]

    def _get_deep_supervision_scales(self):
        return self._scales

    def print_to_log_file(self, *args):
        self.log.append(" ".join(str(a) for a in args))


@pytest.fixture
def labels(monkeypatch):
    calls = []

    def segmentations(trainer, max_cases):
        calls.append(max_cases)
        yield tube(5.0).astype(np.int16)

    monkeypatch.setattr(module, "_training_segmentations", segmentations)
    monkeypatch.delenv(module.ENVIRONMENT_VARIABLE, raising=False)
    return calls


def test_auto_derives_stores_logs_and_reads_back(tmp_path, labels):
    trainer = FakeTrainer(tmp_path)
    levels = resolve_skeleton_iterations(trainer, "auto")
    record = json.loads((tmp_path / module.FILE_NAME).read_text())
    assert list(levels) == record["iterations"] and levels[0] >= 6 and levels[0] > levels[1] >= 1
    assert any("95th percentile" in line and str(list(levels)) in line for line in trainer.log)
    # a continued run reads the stored choice, even if the data changed
    (tmp_path / module.FILE_NAME).write_text(json.dumps({**record, "iterations": [9, 5]}))
    again = FakeTrainer(tmp_path)
    assert resolve_skeleton_iterations(again, "auto") == (9, 5) and len(labels) == 1
    assert "as chosen when this run started" in again.log[0]


def test_explicit_settings_win(tmp_path, labels, monkeypatch):
    assert resolve_skeleton_iterations(FakeTrainer(tmp_path), 4) == (4, 4)
    assert resolve_skeleton_iterations(FakeTrainer(tmp_path), (6, 3, 1)) == (6, 3)
    monkeypatch.setenv(module.ENVIRONMENT_VARIABLE, "8,2")
    trainer = FakeTrainer(tmp_path)
    assert resolve_skeleton_iterations(trainer, 4) == (8, 2) and module.ENVIRONMENT_VARIABLE in trainer.log[0]
    monkeypatch.setenv(module.ENVIRONMENT_VARIABLE, "lots")
    with pytest.raises(ValueError, match=module.ENVIRONMENT_VARIABLE):
        resolve_skeleton_iterations(FakeTrainer(tmp_path), 4)
    assert labels == [] and not (tmp_path / module.FILE_NAME).exists()


def test_without_preprocessed_data_the_error_says_how_to_set_it(tmp_path, monkeypatch):
    monkeypatch.delenv(module.ENVIRONMENT_VARIABLE, raising=False)
    trainer = FakeTrainer(tmp_path / "run")
    trainer.preprocessed_dataset_folder = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="nnunet_ext_skeleton_iterations"):
        resolve_skeleton_iterations(trainer, "auto")


def test_topo_trainer_builds_its_clDice_term_with_the_chosen_counts(tmp_path, monkeypatch, labels):
    from test_topo_trainer_loss import make_trainer

    trainer = make_trainer(tmp_path, monkeypatch, "labels", False, "3d_fullres", skeleton_iterations=None)
    loss = trainer._build_loss()
    cldice = loss.loss.term_specs[0].loss
    stored = json.loads((tmp_path / module.FILE_NAME).read_text()) if (tmp_path / module.FILE_NAME).exists() \
        else json.loads(next(tmp_path.rglob(module.FILE_NAME)).read_text())
    assert isinstance(cldice.iterations, tuple) and list(cldice.iterations) == stored["iterations"]
    assert len(cldice.iterations) == len(trainer._get_deep_supervision_scales())


def test_a_2d_configuration_measures_the_slices_of_nnunets_3d_label_maps(tmp_path, monkeypatch):
    """nnU-Net keeps label maps 3D (one slice for a 2D dataset, all slices of a 3D one in its 2d
    configuration) while the 2D network's scales have two entries: this crashed every 2d training."""
    disk = tube(5.0)[:, :, 10]  # a 2D disk of radius 5
    volume = np.stack([disk * 0, disk, disk]).astype(np.int16)  # (Z, Y, X), one empty slice

    def segmentations(trainer, max_cases):
        yield disk[None].astype(np.int16)  # a 2D dataset: one slice
        yield volume

    monkeypatch.setattr(module, "_training_segmentations", segmentations)
    monkeypatch.delenv(module.ENVIRONMENT_VARIABLE, raising=False)
    trainer = FakeTrainer(tmp_path, scales=([1, 1], [0.5, 0.5]))
    trainer.configuration_manager.patch_size = (32, 32)
    levels = resolve_skeleton_iterations(trainer, "auto")
    record = json.loads((tmp_path / module.FILE_NAME).read_text())
    assert record["cases"] == 3  # the 2D case and the two non-empty slices
    depth = int(np.bincount(ridge_depths(disk)).argmax())
    assert levels[0] == depth and levels[0] > levels[1] >= 1
