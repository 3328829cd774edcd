"""Tiny synthetic BraTS data and helpers to run unet3d's commands as a user would."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from unet3d.data.brats import write_brats_config
from unet3d.data.synthetic import write_synthetic_brats

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

TINY_SETTINGS = {
    "model": {
        "name": "DynUNet",
        "spatial_dims": 3,
        "in_channels": 4,
        "out_channels": 3,
        "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
        "filters": [4, 8, 16],
        "kernel_size": [[3, 3, 3], [3, 3, 3], [3, 3, 3]],
        "upsample_kernel_size": [[2, 2, 2], [2, 2, 2]],
    },
    "optimizer": {"name": "Adam", "lr": 0.01},
    "loss": {"name": "DiceCELoss", "sigmoid": True},
    "scheduler": {"name": "ReduceLROnPlateau", "patience": 2, "factor": 0.5},
    "cross_validation": {"n_folds": 2, "random_seed": 25},
    "dataset": {
        "name": "SegmentationDataset",
        "desired_shape": [16, 16, 16],
        "labels": [2, 1, 4],
        "setup_label_hierarchy": True,
        "normalization": "NormalizeIntensityD",
        "normalization_kwargs": {"channel_wise": True, "nonzero": True},
        "resample": True,
        "crop_foreground": True,
    },
    "training": {"batch_size": 2, "validation_batch_size": 2, "n_epochs": 2, "amp": False},
}


def command(name):
    """Path of an installed console script (``unet3d-train``, ...)."""
    path = BIN / name
    return str(path) if path.exists() else shutil.which(name)


def run(name, *args, cwd=None, check=True):
    """Run a console script; returns the CompletedProcess with text output."""
    result = subprocess.run(
        [command(name), *map(str, args)], cwd=cwd, capture_output=True, text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{name} {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def brats_data(tmp_path_factory):
    """Six labelled 24x24x24 cases and two unlabelled test cases, in the BraTS layout."""
    root = tmp_path_factory.mktemp("brats")
    write_synthetic_brats(root / "train", 6, shape=(24, 24, 24), seed=3)
    write_synthetic_brats(root / "test", 2, shape=(26, 22, 20), seed=4, prefix="BraTS20_Validation",
                          with_label=False, spacing=(1.2, 1.0, 1.5))
    return root


@pytest.fixture
def tiny_config(brats_data, tmp_path):
    """Write ``tmp_path/experiment/tiny.json`` over the shared data; returns its path."""
    template = tmp_path / "template.json"
    template.write_text(json.dumps(TINY_SETTINGS))
    path = tmp_path / "experiment" / "tiny.json"
    path.parent.mkdir()
    write_brats_config(template, path, brats_data / "train", [("test", brats_data / "test")])
    return path


@pytest.fixture
def single_config(tiny_config):
    """The tiny config as one model: 4 training and 2 validation cases, no test group."""
    def change(config):
        del config["cross_validation"], config["test_filenames"]
        config["training_filenames"], config["validation_filenames"] = (
            config["training_filenames"][2:], config["training_filenames"][:2])
    edit_config(tiny_config, change)
    return tiny_config


def edit_config(path, change):
    """Apply ``change(config)`` to the JSON config at ``path`` in place."""
    config = json.loads(Path(path).read_text())
    change(config)
    Path(path).write_text(json.dumps(config))
