"""Pre-flight checks: each data problem is one UserError naming the case and file, before training."""

import nibabel
import numpy as np
import pytest

from helpers import assert_one_line_error, rewrite_nifti, run
from unet3d.data import checks
from unet3d.config.experiment import make_case
from unet3d.data.brats import brats_cases
from unet3d.data.files import preflight
from unet3d.data.synthetic import write_synthetic_brats
from unet3d.errors import UserError


@pytest.fixture
def case_config(tmp_path):
    """Two small BraTS cases; returns (the cases, the first case's files)."""
    write_synthetic_brats(tmp_path / "data", 2, shape=(12, 10, 8), seed=5)
    entries = brats_cases(tmp_path / "data")
    return [make_case(entry) for entry in entries], entries[0]


BRATS_VALUES = (2, 1, 4)


def test_clean_cases_pass(case_config):
    preflight(case_config[0], BRATS_VALUES)


@pytest.mark.parametrize(
    "spoil, fragments",
    [
        (lambda c: rewrite_nifti(c["image"][1], np.zeros((12, 10, 8, 2), np.float32)), ["is 4D", "_t1.nii.gz", "expected a 3D volume"]),
        (lambda c: rewrite_nifti(c["image"][2], np.zeros((12, 10, 8), np.float32), np.diag([1.0, 1.0, 1.2, 1.0]) @ nibabel.load(c["image"][2]).affine),
         ["_t1ce.nii.gz has another affine than", "_flair.nii.gz"]),
        (lambda c: rewrite_nifti(c["image"][0], np.full((12, 10, 8), np.nan, np.float32)), ["_flair.nii.gz contains NaN or infinite"]),
        (lambda c: rewrite_nifti(c["label"], np.full((12, 10, 8), 3, np.uint8)), ["_seg.nii.gz has label values 3", "[2, 1, 4]"]),
        (lambda c: rewrite_nifti(c["image"][3], np.zeros((12, 10, 9), np.float32)), ["shapes differ", "_t2.nii.gz (12, 10, 9)"]),
    ],
    ids=["4d", "affine", "nan", "label_value", "shape"],
)
def test_each_problem_names_the_case_and_file(case_config, spoil, fragments):
    config, case = case_config
    spoil(case)
    with pytest.raises(UserError) as raised:
        preflight(config, BRATS_VALUES)
    message = str(raised.value)
    assert message.startswith("case 'BraTS20_Training_001'")
    for fragment in fragments:
        assert fragment in message


def test_passed_cases_are_not_read_again(case_config, tmp_path, monkeypatch):
    config, _ = case_config
    preflight(config, BRATS_VALUES, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache" / "preflight").iterdir())) == 2
    monkeypatch.setattr(checks, "check_values", lambda *args: pytest.fail("read the data again"))
    preflight(config, BRATS_VALUES, cache_dir=tmp_path / "cache")


def test_the_cli_reports_a_bad_label_before_training(tiny_config, brats_data, tmp_path):
    import json

    config = json.loads(tiny_config.read_text())
    bad = tmp_path / "bad_seg.nii.gz"
    source = nibabel.load(brats_data / "train" / "BraTS20_Training_002" / "BraTS20_Training_002_seg.nii.gz")
    rewrite_nifti(bad, np.where(np.asarray(source.dataobj) == 4, 3, np.asarray(source.dataobj)).astype(np.uint8), source.affine)
    config["training_filenames"][1]["label"] = str(bad)
    tiny_config.write_text(json.dumps(config))
    result = run("unet3d-train", "--config_filename", tiny_config, "--device", "cpu", check=False)
    assert_one_line_error(result, "case 'BraTS20_Training_002'", "bad_seg.nii.gz has label values 3")
    assert not (tiny_config.parent / "tiny" / "fold1").exists()


def test_full_size_lps_int16_anisotropic_brats_case_passes(tmp_path):
    write_synthetic_brats(tmp_path, 1, shape=(240, 240, 155), orientation="LPS", dtype="int16",
                          spacing=(1.0, 1.0, 1.5), naming="2021", suffix=".nii")
    entries = brats_cases(tmp_path)
    assert entries[0]["label"].endswith("BraTS2021_00001/BraTS2021_00001_seg.nii")
    preflight([make_case(entry) for entry in entries], BRATS_VALUES)
    image = nibabel.load(entries[0]["image"][0])
    assert image.shape == (240, 240, 155) and image.get_data_dtype() == np.int16
    assert nibabel.aff2axcodes(image.affine) == ("L", "P", "S")
