"""Scans as they come (LPS, int16, .nii, anisotropic, odd sizes), the cache, patches and augmentation."""

import json
import multiprocessing
import os

import nibabel
import numpy as np
import pytest
import torch
from monai.transforms import Invertd

from helpers import TINY_SETTINGS, assert_on_input_grid, edit_config, run, write_config
from unet3d.config.experiment import load_experiment, make_case
from unet3d.config.labels import LabelScheme, label_scheme
from unet3d.config.settings import DatasetSettings, LabelSettings, parse_augmentations
from unet3d.data.brats import brats_cases
from unet3d.data.dataset import SegmentationDataset
from unet3d.data.loaders import batches, make_loader
from unet3d.data.synthetic import write_synthetic_brats
from unet3d.data.transforms import augmentations

PATCH_SETTINGS = {
    "name": "SegmentationDataset", "labels": [2, 1, 4], "setup_label_hierarchy": True,
    "normalization": "NormalizeIntensityd", "normalization_kwargs": {"channel_wise": True, "nonzero": True},
    "crop_foreground": True, "spacing": [1.5, 1.5, 1.5], "patch_size": [16, 16, 16],
    "foreground_oversampling": 0.5, "patches_per_case": 2,
    "spatial_augmentations": [{"name": "RandAffined", "prob": 1.0, "rotate_range": 0.3},
                              {"name": "RandFlipd", "prob": 0.5, "spatial_axis": 0}],
    "intensity_augmentations": [{"name": "RandScaleIntensityd", "factors": 0.1, "prob": 1.0}],
}


def dataset(cases, split=None, cache_dir=None, with_label=True, **changes):
    """A SegmentationDataset of PATCH_SETTINGS with ``changes``, as a config's dataset section builds it."""
    section = {**PATCH_SETTINGS, **changes}
    labels = label_scheme(LabelSettings.parse(section, "dataset", extra_ok=True))
    return SegmentationDataset(cases, DatasetSettings.parse(section, "dataset"), labels, split, cache_dir, with_label)


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """Labelled cases as real data come: LPS int16 .nii anisotropic, RAS float .nii.gz, odd sizes."""
    root = tmp_path_factory.mktemp("scans")
    write_synthetic_brats(root / "train", 2, shape=(27, 23, 13), seed=7, orientation="LPS", dtype="int16",
                          spacing=(1.0, 1.0, 2.5), suffix=".nii", naming="2021")
    write_synthetic_brats(root / "train", 2, shape=(25, 26, 21), seed=8, prefix="Hospital_RAS", spacing=(1.2, 0.9, 1.1))
    write_synthetic_brats(root / "test", 2, shape=(29, 22, 15), seed=9, orientation="LPS", dtype="int16",
                          spacing=(0.9, 1.1, 2.0), naming="2023", with_label=False)
    return root


def with_ids(entries):
    return [make_case(entry) for entry in entries]


def test_cached_and_uncached_datasets_give_identical_tensors(scans, tmp_path):
    data = with_ids(brats_cases(scans / "train"))
    plain = dataset(data, split="validation")
    cached = dataset(data, split="validation", cache_dir=tmp_path)
    for index in range(len(data)):
        for item in (cached[index], cached[index]):  # filled, then read back
            reference = plain[index]
            for key in ("image", "label"):
                assert torch.equal(item[key].as_tensor(), reference[key].as_tensor()), key
            assert torch.allclose(item["image"].affine, reference["image"].affine)
    assert len(list(tmp_path.iterdir())) == len(data)
    # The same seed gives the same patches and augmentation, from the cache or not.
    training = dataset(data, split="training")
    cached_training = dataset(data, split="training", cache_dir=tmp_path)
    first, second = training[(1, 99)], cached_training[(1, 99)]
    assert len(first) == 2 and first[0]["image"].shape == (4, 16, 16, 16)
    assert all(torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"]) for a, b in zip(first, second))


def test_a_changed_file_or_setting_makes_a_new_cache_entry(scans, tmp_path):
    data = with_ids(brats_cases(scans / "train"))[:1]
    dataset(data, cache_dir=tmp_path)[0]
    dataset(data, cache_dir=tmp_path, spacing=[2.0, 2.0, 2.0])[0]
    assert len(list(tmp_path.iterdir())) == 2
    mtime = os.stat(data[0].images[0]).st_mtime_ns
    os.utime(data[0].images[0], ns=(mtime, mtime + 10**9))  # as if the file was rewritten
    dataset(data, cache_dir=tmp_path)[0]
    assert len(list(tmp_path.iterdir())) == 3


def test_inversion_puts_labels_back_on_the_lps_input_grid(scans):
    """The preprocessed label, inverted as predictions are, is the input label voxel for voxel."""
    case = with_ids(brats_cases(scans / "train"))[0]
    prediction_data = dataset([case], with_label=False, spacing=None)
    label_data = dataset([case], split="validation", spacing=None)
    item = prediction_data[0]
    item["pred"] = label_data[0]["label"]
    inverted = Invertd("pred", transform=prediction_data.transform, orig_keys="image", nearest_interp=True)(item)["pred"]
    source = nibabel.load(case.label)
    assert inverted.shape[1:] == source.shape
    np.testing.assert_array_equal(LabelScheme.brats().decode(inverted.as_tensor()).numpy(), np.asarray(source.dataobj))


def test_spatial_augmentation_moves_image_and_label_together_and_keeps_labels_binary():
    label = torch.zeros(2, 12, 10, 8)
    label[0, 2:7, 3:9, 1:4] = 1
    label[1, 3:5, 4:6, 2:3] = 1
    item = {"image": label.clone(), "label": label.clone()}
    exact = augmentations(parse_augmentations([{"name": "RandFlipd", "prob": 1.0, "spatial_axis": [0, 1]},
                           {"name": "RandRotate90d", "prob": 1.0, "spatial_axes": [0, 2]}],
                          "dataset.spatial_augmentations"), ["image", "label"])
    for transform in exact:
        item = transform(item)
    assert torch.equal(item["image"], item["label"]) and not torch.equal(item["label"], label)
    interpolating = augmentations(parse_augmentations([{"name": "RandAffined", "prob": 1.0, "rotate_range": 0.5, "scale_range": 0.2},
                                   {"name": "RandZoomd", "prob": 1.0, "min_zoom": 1.2, "max_zoom": 1.3},
                                   {"name": "Rand3DElasticd", "prob": 1.0, "sigma_range": [2, 3], "magnitude_range": [1, 2]}],
                                  "dataset.spatial_augmentations"), ["image", "label"])
    for transform in interpolating:
        item = transform(item)
    assert set(torch.unique(item["label"]).tolist()) == {0.0, 1.0}
    assert len(torch.unique(item["image"])) > 2  # the image was interpolated, the label was not


def test_intensity_augmentation_touches_the_image_only():
    item = {"image": torch.ones(1, 4, 4, 4), "label": torch.ones(1, 4, 4, 4)}
    (shift,) = augmentations(parse_augmentations([{"name": "RandShiftIntensityd", "offsets": 0.5, "prob": 1.0}],
                             "dataset.intensity_augmentations"), "image")
    out = shift(item)
    assert not torch.equal(out["image"], item["image"]) and torch.equal(out["label"], item["label"])


def test_augmentation_is_for_training_unless_a_split_asks(scans):
    data = with_ids(brats_cases(scans / "train"))[:1]
    names = lambda ds: [type(t).__name__ for t in ds.random.transforms]  # noqa: E731
    assert names(dataset(data, split="training")) == [
        "RandForegroundPatchd", "RandAffined", "RandFlipd", "LabelTargetsd", "RandScaleIntensityd"]
    assert names(dataset(data, split="validation")) == ["ExpandCased"]
    override = {"validation": {"intensity_augmentations": [{"name": "RandGaussianNoised", "prob": 1.0}]},
                "training": {"spatial_augmentations": None}}
    assert names(dataset(data, split="validation", **override)) == ["ExpandCased", "RandGaussianNoised"]
    assert names(dataset(data, split="training", **override)) == [
        "RandForegroundPatchd", "RandScaleIntensityd"]


@pytest.mark.parametrize("samples", [None, 5], ids=["each-case-once", "samples_per_epoch"])
def test_batches_repeat_with_any_number_of_persistent_workers(scans, tmp_path, samples):
    data = with_ids(brats_cases(scans / "train"))
    training = dataset(data, split="training", cache_dir=tmp_path)

    def epoch(loader, number):
        loader.generator.manual_seed(number)
        with batches(loader) as iterator:
            return [batch["image"] for batch in iterator]

    serial = make_loader(training, 2, True, num_workers=0, seed=1, samples=samples)
    parallel = make_loader(training, 2, True, num_workers=2, seed=1, samples=samples)
    assert parallel.persistent_workers
    for number in (1, 2):
        expected, got = epoch(serial, number), epoch(parallel, number)
        # 2 cases x 2 patches per batch; 5 samples: batches of 2, 2 and 1 case
        assert [len(batch) for batch in got] == ([4, 4] if samples is None else [4, 4, 2])
        assert got[0].shape == (4, 4, 16, 16, 16) and all(torch.equal(a, b) for a, b in zip(expected, got))
        assert multiprocessing.active_children()  # kept for the next epoch
    assert not torch.equal(epoch(serial, 1)[0], epoch(serial, 2)[0])
    del parallel
    assert multiprocessing.active_children() == []


def test_decathlon_datalist_becomes_filename_lists(tmp_path):
    write_synthetic_brats(tmp_path / "Task01", 3, shape=(8, 8, 8))
    entries = brats_cases(tmp_path / "Task01")
    relative = lambda path: os.path.relpath(path, tmp_path / "Task01")  # noqa: E731
    datalist = {
        "name": "BrainTumour",
        "training": [{"image": relative(e["image"][0]), "label": relative(e["label"])} for e in entries[:2]],
        "test": [relative(entries[2]["image"][0])],
    }
    (tmp_path / "Task01" / "dataset.json").write_text(json.dumps(datalist))
    (tmp_path / "config").mkdir()
    config = {k: TINY_SETTINGS[k] for k in ("model", "optimizer", "loss", "dataset")}
    config["decathlon_datalist"] = "../Task01/dataset.json"
    (tmp_path / "config" / "msd.json").write_text(json.dumps(config))
    loaded = load_experiment(tmp_path / "config" / "msd.json")
    assert "decathlon_datalist" not in loaded.source
    assert [(c.images, c.label) for c in loaded.cases("training")] == [
        ((entries[i]["image"][0],), entries[i]["label"]) for i in (0, 1)]
    assert [(c.images, c.label) for c in loaded.cases("test")] == [((entries[2]["image"][0],), None)]


@pytest.mark.parametrize("mode", ["patches", "whole_volume"])
def test_train_and_predict_real_world_inputs(scans, tmp_path, mode):
    """One epoch on LPS/int16/.nii/anisotropic/odd-sized cases, then predictions on each input's grid."""
    settings = {k: v for k, v in TINY_SETTINGS.items() if k != "cross_validation"}
    if mode == "patches":
        settings["dataset"] = {**PATCH_SETTINGS, "patches_per_case": 1}
    else:
        settings["dataset"] = {**settings["dataset"], "spatial_augmentations": PATCH_SETTINGS["spatial_augmentations"]}
    config_path = write_config(tmp_path / "run.json", scans / "train", [("test", scans / "test")], settings=settings)
    edit_config(config_path, lambda c: c.update(validation_filenames=c["training_filenames"][1:3],
                                                training={**c["training"], "n_epochs": 1}))
    result = run("unet3d-train", "--config_filename", config_path, "--device", "cpu",
                 "--cache_dir", tmp_path / "cache")
    assert "epoch=1" in result.stderr
    assert len(list((tmp_path / "cache").glob("*/meta.json"))) == 4  # 4 labelled cases, train + validation
    experiment = load_experiment(config_path)
    for group in ("validation", "test"):
        for case in experiment.cases(group):
            assert_on_input_grid(tmp_path / "run" / "predictions" / group / f"{case.id}.nii.gz", case.images[0])


def test_a_misspelled_augmentation_is_reported_when_the_config_is_checked():
    from unet3d.errors import UserError

    with pytest.raises(UserError, match=r"'dataset.spatial_augmentations\[0\].name'.*closest matches: RandAffined"):
        dataset([], split="training", spatial_augmentations=[{"name": "RandAfined"}])
    with pytest.raises(UserError, match=r"config key 'dataset.validation.patch_sise' is not known \(did you mean 'patch_size'"):
        dataset([], validation={"patch_sise": 8})
