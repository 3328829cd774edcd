"""The brain tissue example: its synthetic subjects, made from nilearn's MNI template, and its config."""

import filecmp
import json
import subprocess
import sys

import nibabel
import numpy as np
import pytest

from helpers import REPO, assert_one_line_error, load_module

EXAMPLE = REPO / "examples" / "brain_tissue"
MAKE_DATA = EXAMPLE / "make_data.py"


def make_data(output_dir, *args):
    """Run make_data.py at 6 mm with 2 training and 1 test subject into ``output_dir``."""
    subprocess.run([sys.executable, MAKE_DATA, "--output_dir", output_dir, "--n_train", "2", "--n_test", "1",
                    "--spacing", "6", *map(str, args)], check=True, capture_output=True)
    return sorted(output_dir.rglob("*.nii.gz"))


@pytest.fixture(scope="module")
def subjects(tmp_path_factory):
    """The files of one run, as paths relative to its output folder, and that folder."""
    root = tmp_path_factory.mktemp("tissue")
    return [path.relative_to(root) for path in make_data(root, "--seed", "5")], root


def read(path):
    """A subject's T1 and label map as arrays, and their images."""
    t1, seg = nibabel.load(path), nibabel.load(str(path).replace("_t1.nii.gz", "_seg.nii.gz"))
    return np.asarray(t1.dataobj), np.asarray(seg.dataobj), t1, seg


def test_subjects_are_numbered_on_from_training_into_test(subjects):
    files, _ = subjects
    assert [str(path) for path in files] == [
        f"{split}/subject_{i:03d}/subject_{i:03d}_{kind}.nii.gz"
        for split, i in (("test", 2), ("train", 0), ("train", 1)) for kind in ("seg", "t1")]


def test_subjects_are_brains_with_every_tissue_on_one_grid(subjects):
    files, root = subjects
    for path in files[1::2]:
        t1, seg, t1_image, seg_image = read(root / path)
        assert seg.dtype == np.uint8 and t1.dtype == np.float32
        assert set(np.unique(seg)) == {0, 1, 2, 3}
        assert t1.shape == seg.shape and np.array_equal(t1_image.affine, seg_image.affine)
        assert seg_image.header.get_zooms() == (6.0, 6.0, 6.0)
        # Skull-stripped: the T1 is zero exactly outside the labelled brain.
        assert np.array_equal(t1 != 0, seg > 0) and (t1 >= 0).all()
        fractions = [(seg == k).sum() / (seg > 0).sum() for k in (1, 2, 3)]
        assert 0.03 < fractions[0] < fractions[2] < fractions[1] < 0.8  # CSF < WM < GM, as in the template
        # A T1: CSF darker than grey matter, darker than white matter.
        assert np.median(t1[seg == 1]) < np.median(t1[seg == 2]) < np.median(t1[seg == 3])


def test_subjects_differ_and_are_a_pure_function_of_the_seed(subjects, tmp_path):
    files, root = subjects
    (t1, seg, *_), (other_t1, other_seg, *_) = read(root / files[3]), read(root / files[5])
    assert (seg != other_seg).mean() > 0.05 and not np.array_equal(t1, other_t1)
    assert make_data(tmp_path, "--seed", "5") == [tmp_path / path for path in files]
    assert all(filecmp.cmp(root / path, tmp_path / path, shallow=False) for path in files)


def test_without_nilearn_it_stops_with_one_line(tmp_path):
    hide_nilearn = ("import runpy, sys; sys.modules['nilearn'] = None; sys.argv = sys.argv[1:]; "
                    "runpy.run_path(sys.argv[0], run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", hide_nilearn, MAKE_DATA, "--output_dir", tmp_path],
                            capture_output=True, encoding="utf-8")
    assert_one_line_error(result, 'pip install "unet3d-toolkit[examples]"', prog="make_data.py")
    assert not any(tmp_path.iterdir())


def test_config_lists_what_make_data_writes_by_default_and_its_schedule_spans_training(tmp_path):
    module = load_module(MAKE_DATA, "make_data")
    defaults = module.arguments(["--output_dir", str(tmp_path)])
    config = json.loads((EXAMPLE / "tissue_config.json").read_text())

    def subject_files(split, indices):
        names = [f"subject_{i:03d}" for i in indices]
        return [{"image": [f"data/{split}/{n}/{n}_t1.nii.gz"], "label": f"data/{split}/{n}/{n}_seg.nii.gz"}
                for n in names]

    n_train, n_test = defaults.n_train, defaults.n_test
    listed = config["training_filenames"] + config["validation_filenames"]
    assert listed == subject_files("train", range(n_train)) and len(config["validation_filenames"]) >= 2
    assert config["test_filenames"] == subject_files("test", range(n_train, n_train + n_test))
    assert "cross_validation" not in config
    assert config["model"]["out_channels"] == len(config["dataset"]["labels"]) + 1
    scheduler = config["scheduler"]
    assert scheduler["step_per_batch"] and [s["total_iters"] for s in scheduler["schedulers"]] == ["auto", "auto"]


def test_the_example_trains_predicts_and_evaluates_its_tissues(tmp_path):
    """The example's config, as its README runs it, cut down with --set to one short epoch on 6 mm subjects."""
    import shutil

    shutil.copy(EXAMPLE / "tissue_config.json", tmp_path / "tissue_config.json")
    subprocess.run([sys.executable, MAKE_DATA, "--output_dir", tmp_path / "data", "--spacing", "6"], check=True,
                   capture_output=True)
    from helpers import read_log, run

    run("unet3d-train", "--config_filename", tmp_path / "tissue_config.json", "--device", "cpu",
        "--set", "training.n_epochs=1", "--set", "training.samples_per_epoch=4", "--set", "training.amp=false",
        "--set", "dataset.patch_size=[16, 16, 16]", "--set", "model.filters=[4, 8, 8, 8]")
    work = tmp_path / "tissue_config"
    assert {"val_dice_CSF", "val_dice_GM", "val_dice_WM"} <= set(read_log(work / "training_log.csv")[0])
    evaluation = read_log(work / "predictions" / "test" / "evaluation_summary.csv")
    assert [row["region"] for row in evaluation if row["statistic"] == "mean"] == ["CSF", "GM", "WM"]
    prediction = nibabel.load(work / "predictions" / "test" / "subject_016_t1.nii.gz")  # named after its one image
    source = nibabel.load(tmp_path / "data" / "test" / "subject_016" / "subject_016_t1.nii.gz")
    assert prediction.shape == source.shape and np.allclose(prediction.affine, source.affine)
    values = np.asarray(prediction.dataobj)
    assert set(np.unique(values)) <= {0, 1, 2, 3}
    assert not values[np.asarray(source.dataobj) == 0].any()  # mask_to_nonzero: nothing outside the brain
