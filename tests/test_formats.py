"""NRRD, MetaImage and DICOM series: read as MONAI loads them, trained on, and predicted onto their own grid."""

import copy
import json
import shutil
import sys

import nibabel
import numpy as np
import pytest
from monai.data import NibabelReader
from monai.transforms import LoadImage

from helpers import assert_same_grid, convert_image, write_config
from unet3d import api
from unet3d.data.formats import image_files, read_array, read_header, readers, write_image
from unet3d.errors import UserError

# An oblique grid: the voxel axes run along world y, -x and z, with three spacings.
AFFINE = np.array([[0.0, -1.2, 0.0, 10.0], [0.9, 0.0, 0.0, -5.0], [0.0, 0.0, 1.5, 3.0], [0.0, 0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """A 16x18x20 NIfTI scan on ``AFFINE`` and its copies in every other format, written by ITK."""
    folder = tmp_path_factory.mktemp("formats")
    volume = np.random.default_rng(0).uniform(0, 1000, (16, 18, 20)).astype(np.float32)
    nibabel.save(nibabel.Nifti1Image(volume, AFFINE), folder / "scan.nii.gz")
    copies = {name: convert_image(folder / "scan.nii.gz", folder / name)
              for name in ("scan.nrrd", "scan.nhdr", "scan.mha", "scan.mhd", "dicom")}
    return volume, folder / "scan.nii.gz", copies


@pytest.mark.parametrize("name", ["scan.nrrd", "scan.nhdr", "scan.mha", "scan.mhd", "dicom"])
def test_headers_and_voxels_agree_with_the_nifti_and_the_loader(scan, name):
    volume, _, copies = scan
    path = copies[name]
    header = read_header(path)
    loaded = LoadImage(reader=readers(), image_only=True, ensure_channel_first=True)(str(path))
    assert header.shape == (16, 18, 20) == tuple(loaded.shape[1:]) and header.scalar
    np.testing.assert_allclose(header.affine, AFFINE, atol=1e-5)
    np.testing.assert_allclose(np.asarray(loaded.affine), header.affine, atol=1e-9)
    expected = np.rint(volume) if name == "dicom" else volume  # DICOM slices hold int16
    np.testing.assert_array_equal(read_array(path), expected)
    np.testing.assert_array_equal(loaded[0].numpy(), expected)
    files = image_files(path)
    assert len(files) == {"scan.mhd": 2, "scan.nhdr": 2, "dicom": 20}.get(name, 1)


def test_images_are_written_on_the_reference_grid_exactly(scan, tmp_path):
    volume, nifti, copies = scan
    labels = (volume > 500).astype(np.uint8)
    for reference in (copies["scan.nrrd"], copies["scan.mha"], copies["scan.mhd"]):
        for suffix in (".nrrd", ".mha"):
            write_image(labels, read_header(reference), tmp_path / f"labels{suffix}")
            np.testing.assert_array_equal(read_array(tmp_path / f"labels{suffix}"), labels)
            # Not exactly: NRRD stores direction times spacing, which moves the spacing by a unit in the last place.
            assert_same_grid(tmp_path / f"labels{suffix}", reference, atol=1e-12)
    probabilities = np.stack([volume / 1000, 1 - volume / 1000], axis=-1).astype(np.float32)
    write_image(probabilities, read_header(copies["scan.nrrd"]), tmp_path / "probabilities.nrrd")
    assert read_header(tmp_path / "probabilities.nrrd").shape == (16, 18, 20, 2)
    np.testing.assert_array_equal(read_array(tmp_path / "probabilities.nrrd"), probabilities)
    # From a DICOM series or a NIfTI reference: NIfTI on its affine, NRRD on the grid that affine describes.
    write_image(labels, read_header(copies["dicom"]), tmp_path / "from_dicom.nii.gz")
    np.testing.assert_allclose(nibabel.load(tmp_path / "from_dicom.nii.gz").affine, AFFINE, atol=1e-5)
    write_image(labels, read_header(nifti), tmp_path / "from_nifti.nrrd")
    assert_same_grid(tmp_path / "from_nifti.nrrd", copies["scan.nrrd"], atol=1e-6)  # the NIfTI's float32 affine


def test_training_and_prediction_on_nrrd_metaimage_and_dicom(brats_data, tmp_path):
    """NRRD images with NIfTI labels, MetaImage cases, a NRRD and a DICOM test case: train one epoch, predict
    the test cases in their own format and grid, with the voxels a NIfTI copy of each gets."""
    data = tmp_path / "data"
    shutil.copytree(brats_data / "train", data / "train", ignore=shutil.ignore_patterns("*_00[56]*"))
    shutil.copytree(brats_data / "test", data / "test")
    config_path = write_config(tmp_path / "experiment" / "formats.json", data / "train", [("test", data / "test")])
    config = json.loads(config_path.read_text())
    nifti_test = copy.deepcopy(config["test_filenames"])
    for index, case in enumerate(config["training_filenames"] + config["test_filenames"]):
        suffix = [".nrrd", ".mha", ".nrrd", ".mhd", ".nrrd", "dicom"][index]
        for position, image in enumerate(case["image"]):
            target = image.replace(".nii.gz", "" if suffix == "dicom" else suffix)
            case["image"][position] = str(convert_image(config_path.parent / image, config_path.parent / target))
        if index % 2 and "label" in case:  # the other cases keep their NIfTI labels
            case["label"] = str(convert_image(config_path.parent / case["label"],
                                              config_path.parent / case["label"].replace(".nii.gz", suffix)))
    del config["cross_validation"]
    config["validation_filenames"] = config["training_filenames"][:1]
    config["training_filenames"] = config["training_filenames"][1:]
    config["training"]["n_epochs"] = 1
    config_path.write_text(json.dumps(config))
    api.train(config_path, device="cpu")  # in-process: a console script would import torch and MONAI again

    predictions = tmp_path / "experiment" / "formats" / "predictions" / "test"
    nrrd_case, dicom_case = config["test_filenames"]
    nrrd_prediction = predictions / "BraTS20_Validation_001.nrrd"
    assert_same_grid(nrrd_prediction, nrrd_case["image"][0], atol=1e-12)
    dicom_prediction = predictions / "BraTS20_Validation_002.nii.gz"  # DICOM series give NIfTI
    np.testing.assert_allclose(nibabel.load(dicom_prediction).affine, read_header(dicom_case["image"][0]).affine,
                               atol=1e-5)
    # The NIfTI originals, predicted as NRRD (prediction.output_format) onto their own grid.
    from_nifti = api.predict(config_path, tmp_path / "experiment" / "formats" / "model_best.pth",
                             tmp_path / "from_nifti", device="cpu", overrides=["prediction.output_format=nrrd"],
                             images=[[str(config_path.parent / p) for p in case["image"]] for case in nifti_test])
    assert [p.name for p in from_nifti] == ["BraTS20_Validation_001.nrrd", "BraTS20_Validation_002.nrrd"]
    assert_same_grid(from_nifti[0], nrrd_prediction, atol=1e-6)  # the NIfTI's float32 affine
    np.testing.assert_array_equal(read_array(nrrd_prediction), read_array(from_nifti[0]))
    # DICOM slices round intensities to integers: a few voxels on a threshold may flip.
    assert (read_array(dicom_prediction) == read_array(from_nifti[1])).mean() > 0.99


def test_nifti_needs_no_itk(scan, monkeypatch):
    _, nifti, copies = scan
    monkeypatch.setitem(sys.modules, "itk", None)
    assert [type(reader) for reader in readers()] == [NibabelReader]
    loaded = LoadImage(reader=readers(), image_only=True)(str(nifti))
    np.testing.assert_allclose(np.asarray(loaded.affine), AFFINE, atol=1e-6)
    with pytest.raises(UserError, match=r"scan.mha: MetaImage images need ITK.*pip install"):
        read_header(copies["scan.mha"])


def test_evaluation_reads_nrrd_predictions_against_metaimage_labels(scan, tmp_path):
    volume, nifti, _ = scan
    nibabel.save(nibabel.Nifti1Image((volume > 500).astype(np.uint8), AFFINE), tmp_path / "case.nii.gz")
    (tmp_path / "labels").mkdir()
    (tmp_path / "predictions").mkdir()
    convert_image(tmp_path / "case.nii.gz", tmp_path / "labels" / "case.mha")
    convert_image(tmp_path / "case.nii.gz", tmp_path / "predictions" / "case.nrrd")
    per_case, _ = api.evaluate(tmp_path / "predictions", label_dir=tmp_path / "labels", labels=[1], hausdorff=False)
    assert per_case["case"].tolist() == ["case"] and per_case["dice"].tolist() == [1.0]
