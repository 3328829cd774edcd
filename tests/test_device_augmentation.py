"""dataset.augment_on_device: the workers cut patches, the training loop augments them with the workers' draws."""

import pytest
import torch

from helpers import edit_config, figures, read_log, run
from unet3d.config.experiment import load_experiment
from unet3d.data.dataset import build_dataset

AUGMENTED = {
    "patch_size": [16, 16, 16], "patches_per_case": 2,
    "spatial_augmentations": [
        {"name": "RandAffined", "prob": 0.8, "rotate_range": [0.5, 0.5, 0.5], "scale_range": [0.2, 0.2, 0.2]},
        {"name": "RandFlipd", "prob": 0.5, "spatial_axis": [0, 1, 2]}],
    "intensity_augmentations": [
        {"name": "RandGaussianNoised", "prob": 0.8, "std": 0.1}, {"name": "RandGaussianSmoothd", "prob": 0.8},
        {"name": "RandAdjustContrastd", "prob": 0.8}, {"name": "RandShiftIntensityd", "offsets": 0.1, "prob": 0.8}],
}


def augmented(config):
    def change(c):
        for key in ("resample", "desired_shape"):
            c["dataset"].pop(key)
        c["dataset"].update(AUGMENTED)
    edit_config(config, change)
    return config


def datasets(config):
    """The training dataset of ``config`` with augmentation in the workers, and with augmentation on the device."""
    made = []
    for overrides in ([], ["dataset.augment_on_device=true"]):
        experiment = load_experiment(config, overrides=overrides)
        made.append(build_dataset(experiment.dataset, experiment.labels, experiment.labelled_cases("training"),
                                  "training"))
    return made


def test_items_augmented_on_the_device_are_the_items_the_workers_make(tiny_config):
    in_workers, on_device = datasets(augmented(tiny_config))
    assert in_workers.device_augmentation is None
    for index, seed in ((0, 5), (1, 77), (2, 2**31 - 1)):
        expected, patches = in_workers[(index, seed)][0], on_device[(index, seed)]
        assert [patch["seed"] for patch in patches] == [seed, seed + 1]
        assert tuple(patches[0]["label"].shape) == (1, 16, 16, 16)  # label values: the targets are made on the device
        image, label = on_device.device_augmentation(*(torch.stack([patch[key] for patch in patches]).as_tensor()
                                                       for key in ("image", "label")),
                                                     torch.tensor([patch["seed"] for patch in patches]))
        assert torch.equal(image[0], expected["image"].as_tensor())
        assert torch.equal(label[0], expected["label"].as_tensor()) and label.dtype == torch.uint8
        assert not torch.equal(image[1], image[0])


@pytest.mark.parametrize("samples_per_epoch", [None, 6])
def test_training_with_augmentation_on_the_device_matches_training_with_it_in_the_workers(single_config, tmp_path,
                                                                                            samples_per_epoch):
    # One patch per case: the draws of a case's later patches follow another order on the device (seed + j).
    edit_config(augmented(single_config), lambda c: (c["dataset"].update(patches_per_case=1), c["training"].update(
        n_epochs=2, samples_per_epoch=samples_per_epoch, batch_size=2)))
    run("unet3d-train", "--config_filename", single_config, "--device", "cpu", "--output_dir", tmp_path / "workers")
    run("unet3d-train", "--config_filename", single_config, "--device", "cpu", "--output_dir", tmp_path / "device",
        "--nthreads", "2", "--set", "dataset.augment_on_device=true")
    workers, device = (read_log(tmp_path / name / "tiny" / "training_log.csv") for name in ("workers", "device"))
    assert len(workers) == 2 and figures(device) == figures(workers)
