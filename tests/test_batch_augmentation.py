"""Batched augmentation (``dataset.batch_augmentation``): the presets' draws, valid labels, identity, seeds, resume."""

import math

import numpy as np
import pytest
import torch
from monai.transforms import Affine, Compose
from scipy import stats
from torch.nn import functional as F

from helpers import assert_same_weights, edit_config
from unet3d.config.batch_augmentation import parse_batch_augmentation
from unet3d.config.experiment import load_experiment
from unet3d.config.labels import LabelScheme
from unet3d.config.settings import DatasetSettings, parse_augmentations
from unet3d.data.batch_augmentation import (BatchAugmentation, draw_parameters, label_targets, larger_patch, resample,
                                            sampling_grid)
from unet3d.data.patches import RandForegroundPatchd
from unet3d.data.resample import affine_grid, sample_nearest
from unet3d.data.transforms import augmentations, sampling, seed_transforms
from unet3d.errors import UserError
from unet3d.plan import sections
from unet3d.train import loop
from unet3d.train.loop import fit

DRAWS = 1500
ALL_ON = {name: {"prob": 1.0} for name in ("rotation", "scaling", "elastic", "noise", "blur", "brightness", "shift",
                                           "contrast", "low_resolution", "inverted_gamma", "gamma")}


def recipe(value):
    """The parsed setting."""
    return parse_batch_augmentation(value, "dataset.batch_augmentation")


def monai_draws(n):
    """``n`` draws of the MONAI augmentations' own ``randomize``: whether each fired and its parameters. The
    augmentations are those of planned configs with long schedules (and of the CPU recipe until 2026-12)."""
    dataset = sections.augmentations([1.0, 1.0, 1.0], sections.SHORT_SCHEDULE_STEPS + 1)
    affine, flip = augmentations(parse_augmentations(dataset["spatial_augmentations"], "s"), ["image", "label"])
    scale, shift, noise = augmentations(parse_augmentations(dataset["intensity_augmentations"], "i"), "image")
    image = torch.ones(1, 16, 16, 16)
    draws = {key: [] for key in ("affine", "angles", "zoom", "flip", "scale", "factor", "shift", "offset", "noise",
                                 "std")}
    chain = Compose([affine, flip, scale, shift, noise])
    for seed in range(n):
        seed_transforms(chain, seed)  # as SegmentationDataset seeds an item's transforms
        for transform in chain.transforms:
            transform.randomize(None)
        draws["affine"].append(affine._do_transform)
        if affine._do_transform:
            grid = affine.rand_affine.rand_affine_grid
            grid.randomize()
            draws["angles"].append(grid.rotate_params)
            draws["zoom"].append(grid.scale_params)
        draws["flip"].append(flip._do_transform)
        draws["scale"].append(scale._do_transform)
        if scale._do_transform:
            scale.scaler.randomize(image)
            draws["factor"].append(1 + scale.scaler.factor)
        draws["shift"].append(shift._do_transform)
        if shift._do_transform:
            shift.shifter.randomize(image)
            draws["offset"].append(shift.shifter._offset)
        draws["noise"].append(noise._do_transform)
        if noise._do_transform:
            noise.rand_gaussian_noise.randomize(image)
            draws["std"].append(float(np.std(noise.rand_gaussian_noise.noise)))
    return {key: np.array(values, dtype=float) for key, values in draws.items()}


def same_rate(ours, theirs):
    """Two firing rates agree within 4 standard errors."""
    rate = (ours.mean() + theirs.mean()) / 2
    assert abs(ours.mean() - theirs.mean()) < 4 * math.sqrt(2 * rate * (1 - rate) / len(ours))


def same_distribution(ours, theirs):
    """Two samples pass a two-sample Kolmogorov-Smirnov test at 0.1%."""
    assert stats.ks_2samp(np.ravel(ours), np.ravel(theirs)).pvalue > 1e-3


def test_default_preset_draws_as_the_monai_augmentation_of_long_planned_schedules():
    theirs = monai_draws(DRAWS)
    drawn = draw_parameters(recipe("default"), DRAWS, 4, torch.Generator().manual_seed(0))
    rotated = (drawn["angles"] != 0).any(1)
    same_rate(rotated.numpy(), theirs["affine"])
    # Both draw the uniform [-0.26, 0.26] the recipe asks for (seed_transforms gives RandAffine and RandAffineGrid
    # seeds of their own: with RandAffined's, the first angle repeated the draw that decided to rotate).
    assert stats.kstest(drawn["angles"][rotated][:, 0].numpy(), stats.uniform(-0.26, 0.52).cdf).pvalue > 1e-3
    same_distribution(drawn["angles"][rotated].numpy(), theirs["angles"])
    same_distribution(drawn["zoom"][rotated].numpy(), theirs["zoom"])
    assert torch.equal(rotated, (drawn["zoom"] != 1).any(1))  # one probability for both, as RandAffine's
    flips = drawn["flips"].numpy()
    assert (flips == flips[:, :1]).all()  # all three axes at once, as RandFlipd's spatial_axis [0, 1, 2]
    same_rate(flips[:, 0], theirs["flip"])
    for name, fired, values in (("brightness", "scale", "factor"), ("shift", "shift", "offset")):
        on = drawn[name]["on"]
        same_rate(on.numpy(), theirs[fired])
        value = drawn[name]["value"][on]
        assert (value == value[:, :1]).all()  # one factor for all channels
        same_distribution(value[:, 0].numpy(), theirs[values])
    on = drawn["noise"]["on"]
    same_rate(on.numpy(), theirs["noise"])
    # MONAI's noise std is seen through 4096 voxels of noise: compare the means, within 2% and 4 standard errors.
    ours, monai = drawn["noise"]["std"][on].numpy(), theirs["std"]
    error = math.sqrt(ours.var() / len(ours) + monai.var() / len(monai))
    assert abs(ours.mean() - monai.mean()) < 4 * error + 0.02 * monai.mean()


def test_nnunet_preset_draws_nnunets_rates_and_ranges():
    drawn = draw_parameters(recipe("nnunet"), DRAWS, 4, torch.Generator().manual_seed(1))
    rotated = (drawn["angles"] != 0).any(1)
    same_rate(rotated.numpy(), np.full(DRAWS, 0.2))
    assert drawn["angles"].abs().max() <= math.pi / 6
    scaled = (drawn["zoom"] != 1).any(1)
    same_rate(scaled.numpy(), np.full(DRAWS, 0.2))
    assert (drawn["zoom"][scaled] == drawn["zoom"][scaled][:, :1]).all()  # isotropic
    assert 0.7 <= drawn["zoom"].min() and drawn["zoom"].max() <= 1.4
    same_rate(drawn["flips"].numpy().ravel(), np.full(3 * DRAWS, 0.5))  # each axis on its own
    brightness = drawn["brightness"]["value"][drawn["brightness"]["on"]].ravel().numpy()
    same_rate(brightness < 1, np.full(len(brightness), 0.5))  # nnU-Net's BGContrast: half below 1
    for name, rate in (("noise", 0.1), ("blur", 0.2), ("contrast", 0.15), ("low_resolution", 0.25),
                       ("inverted_gamma", 0.1), ("gamma", 0.3)):
        same_rate(drawn[name]["on"].numpy(), np.full(DRAWS, rate))
    assert not drawn["field"].any()  # no elastic deformation, as nnU-Net v2


def test_labels_stay_label_values_and_targets_binary():
    generator = torch.Generator().manual_seed(0)
    label = torch.tensor([0.0, 1, 2, 4])[torch.randint(4, (3, 1, 14, 14, 14), generator=generator)]
    image = torch.randn(3, 2, 14, 14, 14, generator=generator)
    strong = recipe({"preset": "nnunet", **ALL_ON, "elastic": {"prob": 1.0, "range": [1.0, 2.0]}})
    _, moved = BatchAugmentation(strong, None, (10, 10, 10)).augment(image.clone(), label, generator)
    assert moved.shape == (3, 1, 10, 10, 10)
    assert set(moved.unique().tolist()) <= {0.0, 1.0, 2.0, 4.0}
    labels = LabelScheme.brats()
    augmented, targets = BatchAugmentation(strong, labels, (10, 10, 10)).augment(image, label, generator)
    assert augmented.shape == (3, 2, 10, 10, 10) and augmented.isfinite().all()
    assert targets.shape == (3, 3, 10, 10, 10) and set(targets.unique().tolist()) <= {0.0, 1.0}


def test_identity_parameters_give_the_input_back():
    generator = torch.Generator().manual_seed(0)
    image, label = torch.randn(2, 3, 12, 10, 8, generator=generator), torch.randint(3, (2, 1, 12, 10, 8)).float()
    off = recipe({"preset": "nnunet", **{name: {"prob": 0.0} for name in ALL_ON}, "flip": {"prob": 0.0}})
    same = BatchAugmentation(off).augment(image.clone(), label, generator)
    assert torch.equal(same[0], image) and torch.equal(same[1], label)
    cut = BatchAugmentation(off, patch_size=(8, 6, 4)).augment(image.clone(), label, generator)
    assert torch.equal(cut[0], image[:, :, 2:10, 2:8, 2:6])  # the centre of a larger patch
    # The sampling grid itself, with identity parameters, lands on the voxels.
    parameters = draw_parameters(off, 2, 3, generator)
    parameters["moved"][:] = True
    resampled, relabelled = resample(image, label, parameters, (12, 10, 8))
    assert torch.allclose(resampled, image, atol=1e-5) and torch.equal(relabelled, label)


def test_one_grid_sample_matches_monais_affine():
    image = torch.randn(1, 2, 13, 11, 9, generator=torch.Generator().manual_seed(0))
    angles, zoom = (0.3, -0.2, 0.1), (1.1, 0.9, 1.05)
    parameters = draw_parameters(recipe("default"), 1, 2, torch.Generator())
    parameters.update(angles=torch.tensor([angles]), zoom=torch.tensor([zoom]), moved=torch.tensor([True]))
    ours, _ = resample(image, torch.zeros(1, 1, 13, 11, 9), parameters, (13, 11, 9))
    theirs, _ = Affine(rotate_params=angles, scale_params=zoom, padding_mode="zeros", image_only=False)(image[0])
    assert torch.allclose(ours[0], theirs.as_tensor(), atol=1e-4)


def test_the_same_seed_gives_the_same_batch():
    image, label = torch.randn(2, 2, 12, 12, 12), torch.randint(3, (2, 1, 12, 12, 12)).float()
    augmentation = BatchAugmentation(recipe({"preset": "nnunet", **ALL_ON}), None, (8, 8, 8), seed=3)
    first, again = augmentation(image.clone(), label, 1, 5), augmentation(image.clone(), label, 1, 5)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], augmentation(image.clone(), label, 1, 6)[0])
    assert not torch.equal(first[0], augmentation(image.clone(), label, 2, 5)[0])


def test_workers_read_a_larger_patch_of_label_values():
    settings = DatasetSettings.parse({"patch_size": [16, 16, 16], "batch_augmentation": "nnunet"}, "dataset")
    assert settings.for_split("validation").batch_augmentation is None
    steps = sampling(settings.for_split("training"), LabelScheme.brats()).transforms
    assert [type(step).__name__ for step in steps] == ["RandForegroundPatchd"]
    assert steps[0].labels is None and steps[0].read_size == larger_patch((16, 16, 16), settings.batch_augmentation)
    assert steps[0].read_size == (32, 32, 32)  # 16 (cos 30° + sin 30°) / 0.7, made even
    default = DatasetSettings.parse({"patch_size": [16, 16, 16], "batch_augmentation": "default"}, "dataset")
    assert sampling(default.for_split("training"), LabelScheme.brats()).transforms[0].read_size == (16,) * 3
    # Near the volume's edge the larger patch is padded with zeros: its middle is the patch the sampling chose.
    generator = np.random.default_rng(0)
    label = generator.choice(np.array([0, 1, 2], dtype=np.uint8), size=(20, 18, 24))
    stored = {"image": generator.normal(size=(2, 20, 18, 24)).astype(np.float16), "label": label,
              "affine": torch.eye(4, dtype=torch.float64), "id": "case",
              "locations": {value: (np.argwhere(label == value)[:50], int((label == value).sum())) for value in (1, 2)}}
    plain, larger = RandForegroundPatchd(None, (16, 16, 16), 0.5), RandForegroundPatchd(None, (16, 16, 16), 0.5,
                                                                                       read_size=(32, 32, 32))
    for seed in range(5):
        expected, got = plain.set_random_state(seed)(stored)[0], larger.set_random_state(seed)(stored)[0]
        assert got["image"].shape == (2, 32, 32, 32) and got["label"].shape == (1, 32, 32, 32)
        assert torch.equal(got["image"][:, 8:24, 8:24, 8:24], expected["image"])
        assert torch.equal(got["label"][:, 8:24, 8:24, 8:24], expected["label"])
        assert torch.equal(got["image"].affine[:3, 3], expected["image"].affine[:3, 3] - 8)  # the box's corner


@pytest.mark.parametrize("value, message", [
    ({"preset": "nnunet", "rotaton": {}}, "'dataset.batch_augmentation.rotaton' is not known (did you mean 'rotation'?)"),
    ({"preset": "nnunet", "gamma": {"probability": 1}}, "'dataset.batch_augmentation.gamma.probability' is not known"),
    ("nnUNet", "names the preset 'nnUNet'; expected one of default, nnunet"),
    ({"preset": "default", "noise": {"range": [0.1]}}, "'dataset.batch_augmentation.noise.range' must be a range"),
])
def test_unknown_keys_and_bad_values_fail_in_one_line(value, message):
    with pytest.raises(UserError) as error:
        DatasetSettings.parse({"batch_augmentation": value}, "dataset")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_resumed_run_equals_an_uninterrupted_one(single_config, tmp_path, monkeypatch):
    edit_config(single_config, lambda c: (c["dataset"].update(
        patch_size=[8, 8, 8], batch_augmentation={"preset": "nnunet", **ALL_ON}),
        c["training"].update(n_epochs=2, batch_size=2), c.pop("validation_filenames")))
    cache = tmp_path / "cache"  # the cases are preprocessed once for the three runs
    fit(load_experiment(single_config), tmp_path / "straight", torch.device("cpu"), cache_dir=cache)

    steps = {"count": 0}
    train_step = loop.train_step

    def interrupted(parts, image, label):
        """The step, stopped like a killed run at the first batch of epoch 2."""
        steps["count"] += 1
        if steps["count"] == 3:  # the first batch of epoch 2
            raise KeyboardInterrupt
        return train_step(parts, image, label)

    monkeypatch.setattr(loop, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit(load_experiment(single_config), tmp_path / "resumed", torch.device("cpu"), cache_dir=cache)
    monkeypatch.setattr(loop, "train_step", train_step)
    fit(load_experiment(single_config), tmp_path / "resumed", torch.device("cpu"), cache_dir=cache)
    assert_same_weights(tmp_path / "straight" / "model.pth", tmp_path / "resumed" / "model.pth")


def test_the_planners_step_measurement_includes_the_batched_augmentation(monkeypatch):
    from helpers import tiny_settings
    from unet3d.config.experiment import experiment_from_dict
    from unet3d.plan import speed

    config = tiny_settings()
    config["dataset"].update(patch_size=[8, 8, 8], batch_augmentation="nnunet")
    calls = []
    augment = BatchAugmentation.augment
    monkeypatch.setattr(BatchAugmentation, "augment", lambda self, *args: calls.append(1) or augment(self, *args))
    monkeypatch.setattr(speed, "MEASURED_SECONDS", 0.0)
    seconds, _ = speed.measure_step(experiment_from_dict(config, cases_required=False), torch.device("cpu"), repeats=1)
    assert seconds > 0 and len(calls) >= 2


def test_intensity_pieces_against_references():
    from scipy import ndimage

    from unet3d.data.batch_augmentation import contrast, gamma, gaussian_blur, low_resolution

    volume = torch.randn(1, 1, 12, 11, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    blurred = gaussian_blur(volume[0], torch.tensor([[1.0, 0.5, 0.8]], dtype=torch.float64))
    reference = ndimage.gaussian_filter(volume[0, 0].numpy(), sigma=(1.0, 0.5, 0.8), mode="nearest", radius=3)
    assert np.allclose(blurred[0].numpy(), reference)  # the radius of the largest sigma (3) on all three axes
    for inverted in (False, True):
        moved = gamma(volume, torch.tensor(1.4, dtype=torch.float64).view(1, 1, 1, 1, 1), inverted)
        assert not torch.allclose(moved, volume)
        assert torch.allclose(moved.mean(), volume.mean(), atol=1e-6) and torch.allclose(moved.std(), volume.std())
    assert torch.allclose(gamma(volume, torch.ones(1, 1, 1, 1, 1, dtype=torch.float64), False), volume)
    stretched = contrast(volume, torch.tensor(1.5, dtype=torch.float64).view(1, 1, 1, 1, 1))
    assert stretched.min() == volume.min() and stretched.max() == volume.max()
    assert torch.allclose(low_resolution(volume[0, 0], 1.0), volume[0, 0])
    assert low_resolution(volume[0, 0], 0.5).std() < 0.8 * volume.std()  # half the resolution: smoother


def random_theta(count, generator, spread=0.6, shift=0.5):
    """``count`` random affine matrices (count, 3, 4) in ``grid_sample``'s normalised coordinates: near the identity,
    with translations that put part of the grid outside the volume."""
    theta = torch.eye(3, 4).repeat(count, 1, 1) + spread * torch.randn(count, 3, 4, generator=generator)
    theta[:, :, 3] = shift * torch.randn(count, 3, generator=generator)
    return theta


@pytest.mark.parametrize("size", [(13, 11, 9), (6, 1, 5), (2, 3, 4)])
def test_affine_grid_matches_torchs(size):
    theta = random_theta(3, torch.Generator().manual_seed(len(size) + size[1]))
    expected = F.affine_grid(theta, (3, 1, *size), align_corners=True)
    assert torch.allclose(affine_grid(theta, size), expected, atol=1e-6)


def test_nearest_sampling_matches_grid_sample():
    generator = torch.Generator().manual_seed(0)
    volume = torch.randint(0, 7, (3, 2, 9, 5, 9), generator=generator)
    grid = affine_grid(random_theta(3, generator), (10, 6, 7))
    assert ((grid.abs() > 1).any(-1)).float().mean() > 0.2  # a good part of the points lie outside the volume
    # Points exactly halfway between voxels (an axis of 2**k + 1 voxels makes them exact): rounded half to even, as
    # the kernel's nearbyint.
    halves = torch.arange(-2, 10) + 0.5
    grid[0, :, 0, 0, 2] = halves[:10] / 4 - 1  # z: 9 voxels, coordinate (g + 1) * 4
    grid[0, 0, :, 0, 1] = halves[:6] / 2 - 1  # y: 5 voxels, coordinate (g + 1) * 2
    grid[0, 0, 0, :, 0] = halves[:7] / 4 - 1  # x: 9 voxels
    for kind in (torch.float32, torch.uint8):
        expected = F.grid_sample(volume.float(), grid, mode="nearest", padding_mode="zeros", align_corners=True)
        got = sample_nearest(volume.to(kind), grid)
        assert got.dtype == kind and torch.equal(got.float(), expected)


def test_a_partly_moved_batch_samples_only_its_moved_elements():
    generator = torch.Generator().manual_seed(1)
    image = torch.randn(3, 2, 12, 12, 12, generator=generator)
    label = torch.tensor([0.0, 1, 2, 4])[torch.randint(4, (3, 1, 12, 12, 12), generator=generator)]
    given = label.clone()
    parameters = draw_parameters(recipe("default"), 3, 2, generator)
    parameters.update(angles=torch.tensor([[0.0] * 3, [0.3, -0.2, 0.1], [0.0] * 3], dtype=torch.float64),
                      zoom=torch.tensor([[1.0] * 3, [1.1, 0.9, 1.2], [1.0] * 3], dtype=torch.float64),
                      moved=torch.tensor([False, True, False]))
    moved, values = resample(image.clone(), label, parameters, (8, 8, 8), torch.uint8)
    assert torch.equal(label, given) and values.dtype == torch.uint8  # the caller's label stays as it was
    grid = sampling_grid(parameters["angles"][1:2], parameters["zoom"][1:2], parameters["field"][1:2], (12,) * 3,
                         (8,) * 3, "cpu")
    expected = F.grid_sample(image[1:2], grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    expected_label = F.grid_sample(label[1:2], grid, mode="nearest", padding_mode="zeros", align_corners=True)
    assert torch.equal(moved[1:2], expected) and torch.equal(values[1:2].float(), expected_label)
    for element in (0, 2):
        assert torch.equal(moved[element], image[element, :, 2:10, 2:10, 2:10])
        assert torch.equal(values[element].float(), label[element, :, 2:10, 2:10, 2:10])
    # uint8 label values make the same targets as the float ones.
    labels = LabelScheme.brats()
    assert torch.equal(label_targets(labels, values), label_targets(labels, values.float()))
    assert label_targets(labels, values).dtype == torch.float32


def test_the_loop_hands_uint8_label_values_to_the_augmentation_unconverted():
    from unet3d.train.step import on_device
    generator = torch.Generator().manual_seed(3)
    values = torch.tensor([0, 1, 2, 4], dtype=torch.uint8)[torch.randint(4, (2, 1, 12, 12, 12), generator=generator)]
    image = torch.randn(2, 2, 12, 12, 12, generator=generator)
    batch = {"image": image, "label": values}
    kept = on_device(batch, torch.device("cpu"), label_values=True)[1]
    assert kept.dtype == torch.uint8 and torch.equal(kept, values)
    assert on_device(batch, torch.device("cpu"))[1].dtype == torch.float32  # targets for the step: float
    augmentation = BatchAugmentation(recipe({"preset": "nnunet", **ALL_ON}), LabelScheme.brats(), (10, 10, 10))
    from_uint8 = augmentation(image.clone(), kept, 0, 0)
    from_float = augmentation(image.clone(), values.float(), 0, 0)
    assert torch.equal(from_uint8[1], from_float[1]) and torch.allclose(from_uint8[0], from_float[0])
