"""A 2d configuration for thick slices, the choice between it and the 3d one by cross-validation, and prediction
with the choice."""

import json
import logging
import shutil
from pathlib import Path

import nibabel
import numpy as np
import pandas
import pytest

from helpers import read_log
from unet3d.config.experiment import load_experiment
from unet3d.data.synthetic import write_synthetic_nnunet
from unet3d.errors import UserError
from unet3d.plan import budget, topology
from unet3d.plan.configurations import configurations_of
from unet3d.plan.sections import model_section
from unet3d.scripts.plan import main as plan_main
from unet3d.scripts.predict import main as predict_main
from unet3d.scripts.train import main as train_main

SPACING = [1.0, 1.0, 3.0]  # slices three times thicker than the pixels


def test_2d_topology_across_thick_slices_neither_mixes_nor_halves_them():
    def fits(patch, kernels, strides):  # a GiB at nnU-Net's 2d batch of 12, 32 filters doubling
        filters = model_section(1, 2, kernels, strides, 32)["filters"]
        return budget.estimated_bytes(patch, strides, filters, 12, 1, amp=True) <= 2 ** 30

    for axis in (2, 0):
        spacing = list(np.roll([0.8, 0.8, 3.2], axis - 2))
        median_shape = list(np.roll([400, 360, 40], axis - 2))
        patch, kernels, strides = topology.search_patch_2d(spacing, median_shape, fits)
        assert patch[axis] == 1 and all(k[axis] == 1 for k in kernels) and all(s[axis] == 1 for s in strides)
        plane = [a for a in range(3) if a != axis]
        assert all(kernel[a] == 3 for kernel in kernels for a in plane) and len(strides) >= topology.MIN_LEVELS
        assert fits(patch, kernels, strides) and 64 <= min(patch[a] for a in plane) <= 360
        divisor = [int(np.prod([s[a] for s in strides])) for a in range(3)]
        assert all(p % d == 0 for p, d in zip(patch, divisor))
        # Memory shrinks the in-plane patch: a quarter of the memory gives a smaller one.
        smaller = topology.search_patch_2d(spacing, median_shape, lambda p, k, s: fits(p, k, s) and np.prod(p) <= (
            np.prod(patch) / 4))
        assert np.prod(smaller[0]) <= np.prod(patch) / 4 and smaller[0][axis] == 1
    assert topology.slice_axis([1.0, 1.0, 2.9]) is None  # nnU-Net's threshold: no 2d configuration
    assert topology.search_patch_2d([1.0, 1.0, 1.2], [100, 100, 100], lambda *_: True) is None


@pytest.fixture(scope="module")
def thick_slices(tmp_path_factory):
    """Four labelled cases of 24 x 24 x 8 voxels of 1 x 1 x 3 mm (three classes) and one test case."""
    return write_synthetic_nnunet(tmp_path_factory.mktemp("thick") / "Dataset002_Thick", 4, shape=(24, 24, 8),
                                  spacing=SPACING, n_test=1)


def write_config(path, root, spacing, found, batch):
    """A config of two folds of one epoch over ``root`` at ``spacing``, with a patch and topology ``found``."""
    patch, kernels, strides = found

    def case(folder, index):
        entry = {"id": f"case_{index:03d}",
                 "image": [str(root / folder / f"case_{index:03d}_{c:04d}.nii.gz") for c in range(4)]}
        label = {"label": str(root / "labelsTr" / f"case_{index:03d}.nii.gz")} if folder == "imagesTr" else {}
        return {**entry, **label}

    config = {
        "model": model_section(4, 4, kernels, strides, 4),
        "optimizer": {"name": "Adam", "lr": 0.01},
        "loss": {"name": "DiceCELoss", "softmax": True, "to_onehot_y": True, "batch": True},
        "cross_validation": {"n_folds": 2, "random_seed": 25},
        "dataset": {"name": "SegmentationDataset", "label_mode": "classes", "labels": [1, 2, 3], "spacing": spacing,
                    "patch_size": patch, "normalization": "NormalizeIntensityd",
                    "normalization_kwargs": {"channel_wise": True}},
        "training": {"n_epochs": 1, "batch_size": batch, "validation_batch_size": 1, "samples_per_epoch": 2 * batch,
                     "amp": False},
        "training_filenames": [case("imagesTr", i) for i in range(4)],
        "test_filenames": [case("imagesTs", 4)],
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(config))
    return path


def one_line_error(main, argv, capsys):
    """The one line a console script's ``main`` printed as it stopped with status 2."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    return line


def probabilities(folder, case="case_004"):
    return np.asarray(nibabel.load(Path(folder) / f"{case}.nii.gz").dataobj)


def test_3d_and_2d_configurations_are_compared_and_the_choice_predicts(thick_slices, tmp_path, capsys, caplog):
    three_d = write_config(tmp_path / "task_3d.json", thick_slices, [1.5, 1.5, 3.0],
                           topology.search_patch([1.5, 1.5, 3.0], [16, 16, 8], lambda *_: True), 2)
    found = topology.search_patch_2d(SPACING, [24, 24, 8], lambda *_: True)
    assert found[0] == [24, 24, 1]
    two_d = write_config(tmp_path / "task_2d.json", thick_slices, SPACING, found, 4)
    for config in (three_d, two_d):
        train_main(["--config_filename", str(config), "--device", "cpu"])
    fold = tmp_path / "task_2d" / "fold1"
    assert len(read_log(fold / "training_log.csv")) == 1
    assert nibabel.load(fold / "predictions" / "test" / "case_004.nii.gz").shape == (24, 24, 8)

    capsys.readouterr()
    train_main(["--select_best", str(three_d), str(two_d), "--device", "cpu"])
    printed = capsys.readouterr().out
    selection = json.loads((tmp_path / "selection.json").read_text())
    table = pandas.read_csv(tmp_path / "selection.csv")
    assert list(table["configuration"]) == ["task_3d", "task_2d", "ensemble"]
    for name in ("task_3d", "task_2d"):  # each configuration's mean over its out-of-fold cases
        per_case = pandas.concat(pandas.read_csv(tmp_path / name / f"fold{k}" / "predictions" / "validation" /
                                                 "evaluation.csv") for k in (1, 2))
        row = table[table["configuration"] == name].iloc[0]
        for region, dice in per_case.groupby("region")["dice"].mean().items():
            assert row[f"dice_{region}"] == pytest.approx(dice)
    ensemble = read_log(tmp_path / "selection_ensemble" / "evaluation.csv")
    assert len(ensemble) == 4 * 3 and {row["case"] for row in ensemble} == {f"case_{i:03d}" for i in range(4)}
    regions = list(dict.fromkeys(row["region"] for row in ensemble))
    assert len(regions) == 3 and [column[5:] for column in table.columns[1:4]] == regions
    for region in regions:
        dice = np.mean([float(row["dice"]) for row in ensemble if row["region"] == region])
        assert table[table["configuration"] == "ensemble"].iloc[0][f"dice_{region}"] == pytest.approx(dice)
    decision = json.loads((tmp_path / "selection_ensemble" / "postprocessing.json").read_text())
    assert decision["n_cases"] == 4 and [r["region"] for r in decision["regions"]] == regions
    best = table.loc[table["mean"].idxmax(), "configuration"]
    assert selection["selected"] == best and selection["n_cases"] == 4
    assert selection["members"] == (["task_3d", "task_2d"] if best == "ensemble" else [best])
    assert "| task_2d |" in printed and f"# Selection: {best}" in (tmp_path / "selection.md").read_text()

    # The ensemble's probabilities are the mean of each configuration's fold ensemble, on the scan's grid.
    test_image = str(thick_slices / "imagesTs" / "case_004_0000.nii.gz")
    images = ["--images", *(test_image.replace("_0000", f"_{c:04d}") for c in range(4)), "--ids", "case_004"]
    for name in ("task_3d", "task_2d"):
        predict_main(["--config_filename", str(tmp_path / f"{name}.json"), "--model_filename",
                      str(tmp_path / name / "fold*" / "model_best.pth"), *images, "--output_dir",
                      str(tmp_path / name / "test"), "--save_probabilities", "--device", "cpu"])
    selection.update(members=["task_3d", "task_2d"], selected="ensemble",
                     postprocessing="selection_ensemble/postprocessing.json")
    (tmp_path / "ensemble.json").write_text(json.dumps(selection))
    predict_main(["--selection", str(tmp_path / "ensemble.json"), *images, "--output_dir", str(tmp_path / "both"),
                  "--save_probabilities", "--device", "cpu"])
    expected = (probabilities(tmp_path / "task_3d" / "test") + probabilities(tmp_path / "task_2d" / "test")) / 2
    assert expected.shape == (24, 24, 8, 4)
    np.testing.assert_allclose(probabilities(tmp_path / "both"), expected, atol=1e-5)
    with caplog.at_level(logging.INFO, logger="unet3d"):
        predict_main(["--selection", str(tmp_path / "ensemble.json"), *images, "--output_dir",
                      str(tmp_path / "labels"), "--device", "cpu"])
    assert "post-processing chosen on the ensemble's out-of-fold predictions" in caplog.text
    assert set(np.unique(probabilities(tmp_path / "labels"))) <= {0, 1, 2, 3}
    # One chosen configuration predicts with its two fold models.
    selection["members"], selection["selected"] = ["task_2d"], "task_2d"
    (tmp_path / "only_2d.json").write_text(json.dumps(selection))
    with caplog.at_level(logging.INFO, logger="unet3d"):
        predict_main(["--selection", str(tmp_path / "only_2d.json"), *images, "--output_dir", str(tmp_path / "one"),
                      "--save_probabilities", "--device", "cpu"])
    assert "predicting 1 case(s) with 2 model(s)" in caplog.text
    np.testing.assert_array_equal(probabilities(tmp_path / "one"), probabilities(tmp_path / "task_2d" / "test"))

    # Folds that validate other cases are refused.
    shutil.copytree(tmp_path / "task_2d", tmp_path / "other")
    shutil.copy(two_d, tmp_path / "other.json")
    folds = [(tmp_path / "other" / f"fold{k}.json").read_text() for k in (1, 2)]
    for k, text in zip((2, 1), folds):
        (tmp_path / "other" / f"fold{k}.json").write_text(text)
    line = one_line_error(train_main, ["--select_best", str(three_d), str(tmp_path / "other.json")], capsys)
    assert "other.json: its folds validate other cases than" in line
    before = two_d.read_text()
    line = one_line_error(train_main, ["--select_best", str(three_d), str(two_d), "--output_filename", str(two_d)],
                          capsys)
    assert "--output_filename" in line and "not one of the command's inputs" in line and two_d.read_text() == before


def test_selection_mistakes_are_one_line(thick_slices, tmp_path, capsys):
    found = topology.search_patch_2d(SPACING, [24, 24, 8], lambda *_: True)
    untrained = [str(write_config(tmp_path / f"{name}.json", thick_slices, SPACING, found, 2)) for name in "ab"]
    assert "compares two or more configs" in one_line_error(train_main, ["--select_best", untrained[0]], capsys)
    line = one_line_error(train_main, ["--select_best", *untrained], capsys)
    assert f"{tmp_path / 'a' / 'fold1' / 'predictions' / 'validation' / 'evaluation.csv'} is missing" in line
    assert "--select_best and --fold" in one_line_error(train_main, ["--select_best", *untrained, "--fold", "1"],
                                                        capsys)
    assert not (tmp_path / "selection.json").exists()
    images = ["--images", "x.nii.gz", "--output_dir", str(tmp_path / "out")]
    assert "--selection" in one_line_error(predict_main, ["--selection", str(tmp_path / "none.json"), *images], capsys)
    (tmp_path / "selection.json").write_text("{}")
    assert "not a selection.json" in one_line_error(predict_main, ["--selection", str(tmp_path / "selection.json"),
                                                                   *images], capsys)
    assert "leave out --model_filename" in one_line_error(
        predict_main, ["--selection", str(tmp_path / "selection.json"), "--model_filename", "m.pth", *images], capsys)
    assert "needs --model_filename" in one_line_error(predict_main, ["--config_filename", untrained[0], *images],
                                                      capsys)


def test_plan_of_thick_slices_writes_a_3d_and_a_2d_config_on_the_same_folds(thick_slices, tmp_path):
    plan_main(["--input_dir", str(thick_slices), "--output_filename", str(tmp_path / "thick.json"), "--device", "cpu",
               "--budget_minutes", "5", "--configurations", "all"])
    three_d, two_d = (json.loads((tmp_path / f"thick_{name}.json").read_text()) for name in ("3d", "2d"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "thick_2d.json", "thick_2d_plan.json", "thick_2d_plan.md", "thick_3d.json", "thick_3d_plan.json",
        "thick_3d_plan.md", "thick_fingerprint.json"]
    model = two_d["model"]
    assert two_d["dataset"]["patch_size"][2] == 1 and two_d["dataset"]["spacing"] == SPACING
    assert all(k[2] == 1 for k in model["kernel_size"]) and all(s[2] == 1 for s in model["strides"])
    assert model["spatial_dims"] == 3 and model["kernel_size"][0][:2] == [3, 3]
    assert two_d["dataset"]["patch_size"][0] >= three_d["dataset"]["patch_size"][0]
    assert two_d["training"]["batch_size"] >= three_d["training"]["batch_size"]
    assert two_d["cross_validation"] == three_d["cross_validation"]
    assert two_d["training_filenames"] == three_d["training_filenames"]
    load_experiment(tmp_path / "thick_2d.json")  # as unet3d-train reads it
    explained = (tmp_path / "thick_2d_plan.md").read_text()
    assert "| configurations | 3d and 2d (this config: 2d) | slices 3.00 times thicker" in explained
    assert "kernels and strides of 1 along axis 2" in explained


def test_a_2d_configuration_is_planned_only_for_thick_slices():
    assert configurations_of("all", [1.0, 1.0, 3.0])[0] == ["3d", "2d"]
    assert configurations_of("3d", [1.0, 1.0, 3.0])[0] == ["3d"]
    names, (_, choice, why) = configurations_of("all", [1.0, 1.0, 2.5])
    assert names == ["3d"] and choice == "3d only" and "2.50 times the finest, under 3" in why
    assert "--configurations all would add a 2d" in configurations_of("3d", [0.7, 0.7, 5.0])[1][2]
    with pytest.raises(UserError, match="--configurations 2d: the coarsest axis is 1.00 times"):
        configurations_of("2d", [1.0, 1.0, 1.0])
