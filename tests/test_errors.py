"""User mistakes: one line naming the file or key, exit status 2, traceback only with --debug."""

import json

import nibabel
import numpy as np
import pytest

from helpers import assert_one_line_error, edit_config, run


def test_missing_config(tmp_path):
    result = run("unet3d-train", "--config_filename", tmp_path / "nope.json", check=False)
    assert_one_line_error(result, "nope.json: config file not found")


def test_malformed_json_names_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "model": {"name": "DynUNet",}\n}\n')
    result = run("unet3d-train", "--config_filename", path, check=False)
    assert_one_line_error(result, "bad.json:2:31: invalid JSON")


@pytest.mark.parametrize(
    "change, fragments",
    [
        (lambda c: c["model"].update(name="DynUNett"), ["config key 'model.name'", "closest matches: DynUNet"]),
        (lambda c: c["model"].update(filterz=[4, 8, 16]), ["config key 'model'", "'filterz'", "did you mean 'filters'"]),
        (lambda c: c["loss"].update(name="os.system"), ["config key 'loss.name'", "not a valid loss name"]),
        (lambda c: c["dataset"].update(normalization="NormaliseIntensityd"), ["config key 'dataset.normalization'"]),
        (lambda c: c["cross_validation"].update(n_folds=9), ["cross_validation.n_folds", "9 folds need at least 9"]),
        (lambda c: c["training"].update(n_epochs=0), ["config key 'training.n_epochs' must be a positive integer"]),
    ],
)
def test_config_mistakes(tiny_config, change, fragments):
    edit_config(tiny_config, change)
    result = run("unet3d-train", "--config_filename", tiny_config, "--device", "cpu", check=False)
    assert_one_line_error(result, *fragments)
    assert "Traceback" not in result.stderr


def test_missing_data_files_are_listed(tiny_config):
    edit_config(tiny_config, lambda c: c["training_filenames"][1].update(label="gone/seg.nii.gz"))
    result = run("unet3d-train", "--config_filename", tiny_config, check=False)
    assert_one_line_error(result, "1 data file(s) named in the config do not exist", "gone/seg.nii.gz")


def test_modalities_of_different_shape_name_the_case(tiny_config, tmp_path):
    config = json.loads(tiny_config.read_text())
    t2 = tmp_path / "small_t2.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.zeros((10, 10, 10), np.float32), np.eye(4)), t2)
    config["training_filenames"][0]["image"][3] = str(t2)
    tiny_config.write_text(json.dumps(config))
    result = run("unet3d-train", "--config_filename", tiny_config, check=False)
    assert_one_line_error(result, "case 'BraTS20_Training_001'", "shapes differ", "small_t2.nii.gz (10, 10, 10)")


def test_debug_shows_the_traceback(tmp_path):
    result = run("unet3d-train", "--config_filename", tmp_path / "nope.json", "--debug", check=False)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_unknown_group_and_missing_model_in_predict(tiny_config, tmp_path):
    args = ["--config_filename", tiny_config, "--output_directory", tmp_path / "out", "--device", "cpu"]
    result = run("unet3d-predict", *args, "--group", "nosuch", "--model_filename", tmp_path / "m.pth", check=False)
    assert_one_line_error(result, "no 'nosuch_filenames'", "training, test", prog="unet3d-predict")
    result = run("unet3d-predict", *args, "--group", "test", "--model_filename", tmp_path / "m.pth", check=False)
    assert_one_line_error(result, "m.pth: model file not found", prog="unet3d-predict")
    (tmp_path / "m.pth").write_bytes(b"not a checkpoint")
    result = run("unet3d-predict", *args, "--group", "test", "--model_filename", tmp_path / "m.pth", check=False)
    assert_one_line_error(result, "m.pth: cannot read as a unet3d checkpoint", prog="unet3d-predict")
    assert not (tmp_path / "out").exists()
