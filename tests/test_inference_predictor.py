"""UncertaintyPredictor: identical segmentations to nnU-Net's predictor, maps with the same geometry,
and maps that equal an explicit enumeration of nnU-Net's (tile, fold, mirror) variants."""
from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn

from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.inference.sliding_window_prediction import compute_gaussian
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from acvl_utils.cropping_and_padding.padding import pad_nd_image

from nnunet_ext.discovery import trainer_folder
from nnunet_ext.inference.predictor import SETTINGS_FILE, UncertaintyPredictor
from nnunet_ext.inference.uncertainty import KINDS
from nnunet_ext.inference.untrained import shrink_configuration, write_untrained_model_folder

PLANS = Path(__file__).parent / "data" / "plans_tubes.json"
LABELS = {"channel_names": {"0": "x"}, "labels": {"background": 0, "a": 1, "b": 2}, "numTraining": 0,
          "file_ending": ".nii.gz"}
REGIONS = {"channel_names": {"0": "x"}, "labels": {"background": 0, "whole": [1, 2], "core": 2},
           "regions_class_order": [1, 2], "numTraining": 0, "file_ending": ".nii.gz"}
CPU = torch.device("cpu")


def tiny_plans(configuration="3d_fullres", patch=(8, 16, 16)):
    return shrink_configuration(json.loads(PLANS.read_text()), configuration, patch, (4, 8))


def sharpen(network, fold):
    # a freshly initialised U-Net predicts nearly constant logits; a steeper, centred head (no preferred
    # class) makes every class win somewhere
    head = network.decoder.seg_layers[-1]
    head.weight.sub_(head.weight.mean(1, keepdim=True)).mul_(25.0)
    head.bias.zero_()


def write_images(folder: Path, n=2, shape=(14, 23, 21), seed=0):
    """Cases with a zero border (nnU-Net crops it), spacing off the plan's (it resamples) and a rotated,
    flipped direction (the writer restores it)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for k in range(n):
        arr = np.zeros(shape, np.float32)
        arr[2:-2, 3:-3, 2:-2] = rng.normal(size=(shape[0] - 4, shape[1] - 6, shape[2] - 4)) + 1
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((1.1, 0.9, 1.3))
        img.SetOrigin((3.0, -2.0, 5.0))
        img.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, -1))
        sitk.WriteImage(img, str(folder / f"case{k}_0000.nii.gz"))


@pytest.fixture(scope="module")
def model_and_stock(tmp_path_factory):
    """A 2-fold model folder of a tiny plan, two input cases and nnU-Net's own prediction of them."""
    root = tmp_path_factory.mktemp("infer")
    model = write_untrained_model_folder(str(root / "model"), tiny_plans(), LABELS, "3d_fullres", folds=(0, 1),
                                         modify=sharpen)
    write_images(root / "in")
    (root / "stock").mkdir()
    stock = nnUNetPredictor(device=CPU, allow_tqdm=False)
    stock.initialize_from_trained_model_folder(model, (0, 1))
    stock.predict_from_files_sequential(str(root / "in"), str(root / "stock"), save_probabilities=True)
    return root, model


def _arr(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_files_identical_to_stock_and_maps_share_the_geometry(model_and_stock):
    root, model = model_and_stock
    ours = UncertaintyPredictor(device=CPU, allow_tqdm=False, uncertainty=KINDS)
    ours.initialize_from_trained_model_folder(model, (0, 1))
    ours.predict_from_files_sequential(str(root / "in"), str(root / "ours"), save_probabilities=True)
    settings = json.loads((root / "ours" / SETTINGS_FILE).read_text())
    assert settings["kinds"] == list(KINDS) and settings["num_folds"] == 2 and settings["mirror_axes"] == [0, 1, 2]
    for k in range(2):
        seg_stock = sitk.ReadImage(str(root / "stock" / f"case{k}.nii.gz"))
        seg = sitk.ReadImage(str(root / "ours" / f"case{k}.nii.gz"))
        a, b = sitk.GetArrayFromImage(seg_stock), sitk.GetArrayFromImage(seg)
        assert np.array_equal(a, b)
        assert len(np.unique(a)) == 3  # the comparison is not a trivial all-background one
        np.testing.assert_array_equal(np.load(root / "stock" / f"case{k}.npz")["probabilities"],
                                      np.load(root / "ours" / f"case{k}.npz")["probabilities"])
        for kind in KINDS:
            u = sitk.ReadImage(str(root / "ours" / f"case{k}_uncertainty_{kind}.nii.gz"))
            assert u.GetPixelID() == sitk.sitkFloat32
            assert u.GetSize() == seg.GetSize()
            assert u.GetSpacing() == seg.GetSpacing() and u.GetOrigin() == seg.GetOrigin()
            assert u.GetDirection() == seg.GetDirection()
            v = sitk.GetArrayFromImage(u)
            assert v.min() >= 0 and v.max() > 0
            # nnU-Net cropped the zero border away and predicts background there without looking
            assert np.all(v[:2] == 0) and np.all(v[:, :3] == 0)


def test_continue_prediction_redoes_cases_that_lack_a_map(model_and_stock, tmp_path):
    root, model = model_and_stock
    ours = UncertaintyPredictor(device=CPU, allow_tqdm=False, uncertainty=("variance",))
    ours.initialize_from_trained_model_folder(model, (0, 1))
    out = tmp_path / "out"
    ours.predict_from_files_sequential(str(root / "in"), str(out))
    (out / "case1_uncertainty_variance.nii.gz").unlink()
    before = (out / "case0.nii.gz").stat().st_mtime_ns
    lists, outputs, _ = ours._manage_input_and_output_lists(str(root / "in"), str(out), overwrite=False)
    assert [os.path.basename(o) for o in outputs] == ["case1"]
    ours.predict_from_files_sequential(str(root / "in"), str(out), overwrite=False)
    assert (out / "case1_uncertainty_variance.nii.gz").is_file()
    assert (out / "case0.nii.gz").stat().st_mtime_ns == before


# ------------------------------------------------------------------------------------------- constructed
class Pointwise(nn.Module):
    """1x1x1 convolutions only: every mirror/tile/fold variant is bitwise the same prediction."""

    def __init__(self, n_out=3, dims=3):
        super().__init__()
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        self.a = conv(1, 6, 1)
        self.b = conv(6, n_out, 1)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)) * 4)


class Asymmetric(nn.Module):
    """Pointwise part plus a difference along the last axis, ``x[i-1] - x[i+1]``: zero inside constant
    regions (all variants agree there), sign-flipped by mirroring at intensity steps (they disagree)."""

    def __init__(self):
        super().__init__()
        self.point = Pointwise()
        self.diff = nn.Conv3d(1, 1, (1, 1, 3), padding=(0, 0, 1), bias=False)
        with torch.no_grad():
            self.diff.weight.copy_(torch.tensor([1.0, 0.0, -1.0]).reshape(1, 1, 1, 1, 3))

    def forward(self, x):
        d = self.diff(x)
        return self.point(x) + torch.cat([torch.zeros_like(d), 3 * d, -3 * d], 1)


class Context(nn.Module):
    """A small random CNN with 3x3x3 context: tiles, mirrors and folds all disagree somewhat."""

    def __init__(self, n_out=3, dims=3):
        super().__init__()
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        self.net = nn.Sequential(conv(1, 4, 3, padding=1), nn.LeakyReLU(), conv(4, n_out, 3, padding=1))

    def forward(self, x):
        return 3 * self.net(x)


def constructed_predictor(network, params, dataset_json, configuration="3d_fullres", patch=(8, 16, 16),
                          mirror_axes=(0, 1, 2), kinds=KINDS, fold_weights=None, cls=UncertaintyPredictor, **kw):
    plans = tiny_plans(configuration, patch)
    pm = PlansManager(plans)
    pred = cls(device=CPU, allow_tqdm=False, **({} if cls is nnUNetPredictor else
                                                 dict(uncertainty=kinds, fold_weights=fold_weights)), **kw)
    pred.manual_initialization(network, pm, pm.get_configuration(configuration), params, dataset_json,
                               "nnUNetTrainer", mirror_axes)
    return pred


def test_pointwise_network_gives_exactly_zero_everywhere():
    torch.manual_seed(0)
    net = Pointwise()
    params = [net.state_dict(), net.state_dict()]
    pred = constructed_predictor(net, params, LABELS)
    data = torch.randn(1, 13, 30, 21)  # several tiles, overlapping, and padding on no axis
    logits, maps = pred.predict_logits_and_uncertainty(data)
    assert logits.shape == (3, 13, 30, 21)
    for kind in ("variance", "mutual_information"):
        assert np.count_nonzero(maps[kind]) == 0, kind
    assert maps["entropy"].min() > 0  # the prediction itself is not certain, only the variants agree


def test_asymmetric_network_zero_where_variants_agree_positive_where_they_differ():
    torch.manual_seed(1)
    net = Asymmetric()
    pred = constructed_predictor(net, [net.state_dict()], LABELS, mirror_axes=(2,))
    data = torch.ones(1, 8, 16, 16)
    data[..., 8:] = 3.0  # one intensity step along the last axis; the image is one tile
    _, maps = pred.predict_logits_and_uncertainty(data)
    var = maps["variance"]
    disagree = np.zeros(var.shape, bool)
    disagree[..., [0, 7, 8, 15]] = True  # the step and the image borders (zero padding) of that axis
    assert np.all(var[disagree] > 1e-3)
    assert np.count_nonzero(var[~disagree]) == 0
    assert np.count_nonzero(maps["mutual_information"][~disagree]) == 0
    assert np.all(maps["mutual_information"][disagree] > 0)


@torch.no_grad()
def _reference_maps(pred, network, params, data, weights=None, regions=False):
    """Enumerate nnU-Net's variants explicitly: every fold, tile and mirror combination, each weighted by
    the float16 gaussian of its tile (times the fold weight); float64 two-pass moments."""
    cm = pred.configuration_manager
    padded, revert = pad_nd_image(data, cm.patch_size, "constant", {"value": 0}, True, None)
    slicers = pred._internal_get_sliding_window_slicers(padded.shape[1:])
    g = compute_gaussian(tuple(cm.patch_size), sigma_scale=1. / 8, value_scaling_factor=10, device=CPU).double()
    spatial = padded.shape[1:]
    axes = [a + 2 for a in pred.allowed_mirroring_axes]
    combos = [()] + [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]
    weights = [1.0] * len(params) if weights is None else weights
    s0 = torch.zeros(spatial, dtype=torch.float64)
    s1 = s2 = sh = None
    for w_f, p in zip(weights, params):
        network.load_state_dict(p)
        for sl in slicers:
            x = padded[sl][None]
            for c in combos:
                out = network(torch.flip(x, c) if c else x)
                out = (torch.flip(out, c) if c else out)[0].double()
                prob = torch.sigmoid(out) if regions else torch.softmax(out, 0)
                if regions:
                    h = -(prob * torch.log(prob) + (1 - prob) * torch.log(1 - prob)).mean(0)
                else:
                    h = -(prob * torch.log(prob.clamp_min(1e-300))).sum(0)
                if s1 is None:
                    s1 = torch.zeros((prob.shape[0], *spatial), dtype=torch.float64)
                    s2, sh = torch.zeros_like(s1), torch.zeros(spatial, dtype=torch.float64)
                w = g * w_f
                s0[sl[1:]] += w
                s1[sl] += w * prob
                s2[sl] += w * prob ** 2
                sh[sl[1:]] += w * h
    mu = s1 / s0
    var = (s2 / s0 - mu ** 2).mean(0)
    if regions:
        h_mu = -(mu * torch.log(mu) + (1 - mu) * torch.log(1 - mu)).mean(0)
    else:
        h_mu = -(mu * torch.log(mu.clamp_min(1e-300))).sum(0)
    maps = {"variance": var, "entropy": h_mu, "mutual_information": h_mu - sh / s0}
    return {k: v[revert[1:]].numpy() for k, v in maps.items()}


@pytest.mark.parametrize("dataset_json", [LABELS, REGIONS], ids=["labels", "regions"])
def test_maps_equal_explicit_enumeration_of_variants_3d(dataset_json):
    torch.manual_seed(2)
    n_out = 3 if dataset_json is LABELS else 2
    net = Context(n_out)
    params = [{k: v.clone() for k, v in Context(n_out).state_dict().items()} for _ in range(2)]
    pred = constructed_predictor(net, params, dataset_json)
    data = torch.randn(1, 6, 25, 19)  # axis 0 is padded to the patch, axes 1-2 need 3 and 2 tiles
    logits, maps = pred.predict_logits_and_uncertainty(data)
    ref = _reference_maps(pred, net, params, data, regions=dataset_json is REGIONS)
    for kind in KINDS:
        np.testing.assert_allclose(maps[kind], ref[kind], atol=2e-6, rtol=1e-4, err_msg=kind)
        assert maps[kind].shape == tuple(data.shape[1:])
    stock = constructed_predictor(net, params, dataset_json, cls=nnUNetPredictor)
    assert torch.equal(logits, stock.predict_logits_from_preprocessed_data(data))


def test_maps_equal_explicit_enumeration_2d_configuration_with_fold_weights():
    torch.manual_seed(3)
    net = Context(3, dims=2)
    params = [{k: v.clone() for k, v in Context(3, dims=2).state_dict().items()} for _ in range(2)]
    pred = constructed_predictor(net, params, LABELS, configuration="2d", patch=(16, 16), mirror_axes=(0, 1),
                                 fold_weights=(3.0, 1.0))
    data = torch.randn(1, 3, 20, 27)  # 3 slices, each 2 x 3 tiles
    logits, maps = pred.predict_logits_and_uncertainty(data)
    ref = _reference_maps(pred, net, params, data, weights=(3.0, 1.0))
    for kind in KINDS:
        np.testing.assert_allclose(maps[kind], ref[kind], atol=2e-6, rtol=1e-4, err_msg=kind)
    # weighted fold logits: (3 * fold0 + 1 * fold1) / 4 of nnU-Net's per-fold logits
    stock = constructed_predictor(net, params[:1], LABELS, configuration="2d", patch=(16, 16), mirror_axes=(0, 1),
                                  cls=nnUNetPredictor)
    per_fold = []
    for p in params:
        stock.list_of_parameters = [p]
        per_fold.append(stock.predict_logits_from_preprocessed_data(data).float())
    torch.testing.assert_close(logits, (3 * per_fold[0] + per_fold[1]) / 4, atol=1e-6, rtol=0)


def test_no_kinds_and_disabled_tta_match_stock():
    torch.manual_seed(4)
    net = Context()
    params = [net.state_dict()]
    data = torch.randn(1, 9, 17, 20)
    for use_mirroring in (True, False):
        ours = constructed_predictor(net, params, LABELS, kinds=(), use_mirroring=use_mirroring)
        stock = constructed_predictor(net, params, LABELS, cls=nnUNetPredictor, use_mirroring=use_mirroring)
        logits, maps = ours.predict_logits_and_uncertainty(data)
        assert maps == {}
        assert torch.equal(logits, stock.predict_logits_from_preprocessed_data(data))
    ours = constructed_predictor(net, params, LABELS, use_mirroring=False)
    logits, maps = ours.predict_logits_and_uncertainty(data)
    assert torch.equal(logits, stock.predict_logits_from_preprocessed_data(data))
    assert maps["variance"].max() > 0  # without mirroring only overlapping tiles disagree
    assert np.count_nonzero(maps["variance"][:, :8, :8] == 0) > 0  # ... and only where tiles overlap


# ----------------------------------------------------------------------------------- loading, -chk, trainers
def _preprocessed(seed=5, shape=(1, 10, 20, 18)):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


def test_checkpoint_name_and_package_trainer(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_extTrainer", str(trainer_folder()))
    model = str(tmp_path / "TopoTrainer__nnUNetPlans__3d_fullres")
    write_untrained_model_folder(model, tiny_plans(), LABELS, "3d_fullres", folds=(0,), trainer_name="TopoTrainer",
                                 modify=sharpen)
    write_untrained_model_folder(model, tiny_plans(), LABELS, "3d_fullres", folds=(0,), trainer_name="TopoTrainer",
                                 checkpoint_name="checkpoint_best.pth", seed=9, modify=sharpen)
    data = _preprocessed()
    results = {}
    for chk in ("checkpoint_final.pth", "checkpoint_best.pth"):
        ours = UncertaintyPredictor(device=CPU, allow_tqdm=False)
        ours.initialize_from_trained_model_folder(model, (0,), chk)
        stock = nnUNetPredictor(device=CPU, allow_tqdm=False)
        stock.initialize_from_trained_model_folder(model, (0,), chk)
        assert ours.trainer_name == "TopoTrainer"
        results[chk] = ours.predict_logits_from_preprocessed_data(data)
        assert torch.equal(results[chk], stock.predict_logits_from_preprocessed_data(data))
    assert not torch.equal(results["checkpoint_final.pth"], results["checkpoint_best.pth"])


def test_bad_model_folders_give_clear_errors(tmp_path):
    model = str(tmp_path / "m")
    write_untrained_model_folder(model, tiny_plans(), LABELS, "3d_fullres", folds=(0,))
    pred = UncertaintyPredictor(device=CPU, allow_tqdm=False)
    with pytest.raises(FileNotFoundError, match=r"fold_1.checkpoint_final.pth"):
        pred.initialize_from_trained_model_folder(model, (0, 1))
    with pytest.raises(FileNotFoundError, match=r"fold_0.checkpoint_best.pth"):
        pred.initialize_from_trained_model_folder(model, (0,), "checkpoint_best.pth")
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        pred.initialize_from_trained_model_folder(str(tmp_path), (0,))
    ckpt = torch.load(os.path.join(model, "fold_0", "checkpoint_final.pth"), weights_only=False)
    del ckpt["network_weights"]
    torch.save(ckpt, os.path.join(model, "fold_0", "checkpoint_final.pth"))
    with pytest.raises(ValueError, match="missing key 'network_weights'"):
        pred.initialize_from_trained_model_folder(model, (0,))
    with pytest.raises(ValueError, match="2 fold weights given for 1 folds"):
        UncertaintyPredictor(device=CPU, fold_weights=(1, 2)).initialize_from_trained_model_folder(model, (0,))
    with pytest.raises(ValueError, match="non-negative"):
        UncertaintyPredictor(device=CPU, fold_weights=(1, -2))
    with pytest.raises(ValueError, match="unknown uncertainty kind"):
        UncertaintyPredictor(device=CPU, uncertainty=("varience",))


# ------------------------------------------------------------------------------------------- writers
def _writers():
    from nnunetv2.imageio.nibabel_reader_writer import NibabelIO, NibabelIOWithReorient
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO, SimpleITKIOWithReorient
    from nnunetv2.imageio.tif_reader_writer import Tiff3DIO

    return [SimpleITKIO, SimpleITKIOWithReorient, NibabelIO, NibabelIOWithReorient, Tiff3DIO]


@pytest.mark.parametrize("writer", _writers(), ids=lambda c: c.__name__)
def test_float_maps_get_the_writers_segmentation_geometry(tmp_path, writer):
    """A map written by write_float_image reads back as float32 with the geometry write_seg gives the
    segmentation of the same case (re-orientation included)."""
    import tifffile

    from nnunet_ext.inference.export import uncertainty_file_name, write_float_image

    shape = (5, 6, 7)
    arr = np.random.default_rng(0).uniform(size=shape).astype(np.float32)
    if writer.__name__ == "Tiff3DIO":
        ending = ".tif"
        tifffile.imwrite(tmp_path / "img_0000.tif", arr)
        (tmp_path / "img.json").write_text(json.dumps({"spacing": [2.0, 1.0, 0.5]}))
    else:
        ending = ".nii.gz"
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((0.5, 1.0, 2.0))
        img.SetOrigin((1.0, 2.0, 3.0))
        img.SetDirection((0, -1, 0, 1, 0, 0, 0, 0, 1))  # not RAS: the re-orienting writers must undo their turn
        sitk.WriteImage(img, str(tmp_path / f"img_0000{ending}"))
    rw = writer()
    image, props = rw.read_images([str(tmp_path / f"img_0000{ending}")])
    values = image[0] / image[0].max()  # a float volume in the reader's axis order
    seg_file = str(tmp_path / f"seg{ending}")
    rw.write_seg((values > 0.5).astype(np.uint8), seg_file, props)
    map_file = uncertainty_file_name(str(tmp_path / "seg"), "variance", ending, rw)
    assert map_file == str(tmp_path / f"seg_uncertainty_variance{ending}")
    write_float_image(rw, values, map_file, props)
    seg_back, seg_props = rw.read_seg(seg_file)
    map_back, map_props = rw.read_seg(map_file)  # read_seg: Tiff3DIO looks for <file>.json beside it
    np.testing.assert_allclose(map_back[0], values, rtol=0, atol=0)
    assert np.array_equal(seg_back[0] > 0, values > 0.5)
    if ending == ".nii.gz":
        s, m = sitk.ReadImage(seg_file), sitk.ReadImage(map_file)
        assert m.GetPixelID() == sitk.sitkFloat32 and m.GetSize() == s.GetSize()
        np.testing.assert_allclose(m.GetSpacing(), s.GetSpacing())
        np.testing.assert_allclose(m.GetOrigin(), s.GetOrigin(), atol=1e-6)
        np.testing.assert_allclose(m.GetDirection(), s.GetDirection(), atol=1e-6)
    else:
        assert map_props["spacing"] == seg_props["spacing"]


def test_natural_image_maps_are_float_tiffs(tmp_path):
    import tifffile
    from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO

    from nnunet_ext.inference.export import uncertainty_file_name, write_float_image

    rw = NaturalImage2DIO()
    name = uncertainty_file_name(str(tmp_path / "c"), "entropy", ".png", rw)
    assert name.endswith("c_uncertainty_entropy.tif")
    values = np.random.default_rng(1).uniform(size=(1, 4, 5)).astype(np.float32)
    write_float_image(rw, values, name, {"spacing": (999, 1, 1)})
    np.testing.assert_array_equal(tifffile.imread(name), values[0])
