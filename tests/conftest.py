"""Fixtures: tiny synthetic BraTS data and configs over it. Shared helpers live in helpers.py."""

import pytest

pytest.register_assert_rewrite("helpers")

from helpers import edit_config, write_config  # noqa: E402
from unet3d.data.synthetic import write_synthetic_brats  # noqa: E402


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
    return write_config(tmp_path / "experiment" / "tiny.json", brats_data / "train", [("test", brats_data / "test")])


@pytest.fixture
def single_config(tiny_config):
    """The tiny config as one model: 4 training and 2 validation cases, no test group."""
    def change(config):
        del config["cross_validation"], config["test_filenames"]
        config["training_filenames"], config["validation_filenames"] = (
            config["training_filenames"][2:], config["training_filenames"][:2])
    edit_config(tiny_config, change)
    return tiny_config
