"""unet3d-train and unet3d-predict end to end on tiny synthetic BraTS cases."""

import json

import nibabel
import numpy as np
import pytest

from helpers import assert_on_input_grid, edit_config, read_log, run


def test_cross_validation_trains_predicts_and_resumes(tiny_config, brats_data):
    run("unet3d-train", "--config_filename", tiny_config, "--device", "cpu")
    work = tiny_config.parent / "tiny"

    for fold in ("fold1", "fold2"):
        fold_config = json.loads((work / f"{fold}.json").read_text())
        assert "cross_validation" not in fold_config
        assert len(fold_config["training_filenames"]) == 3 and len(fold_config["validation_filenames"]) == 3
        for name in ("model.pth", "model_best.pth", "checkpoint.pth", "training_log.csv"):
            assert (work / fold / name).is_file(), name
        rows = read_log(work / fold / "training_log.csv")
        assert [row["epoch"] for row in rows] == ["1", "2"]
        assert {"epoch", "loss", "lr", "val_loss", "val_dice_WT", "val_dice_TC", "val_dice_ET"} <= set(rows[0])
        for case in fold_config["validation_filenames"]:
            case_id = case["image"][0].split("/")[-2]
            assert_on_input_grid(work / fold / "predictions" / "validation" / f"{case_id}.nii.gz", case["image"][0])
        evaluation = read_log(work / fold / "predictions" / "validation" / "evaluation.csv")
        assert {row["region"] for row in evaluation} == {"WT", "TC", "ET"} and len(evaluation) == 9
        for case_id in ("BraTS20_Validation_001", "BraTS20_Validation_002"):
            reference = brats_data / "test" / case_id / f"{case_id}_flair.nii.gz"
            assert_on_input_grid(work / fold / "predictions" / "test" / f"{case_id}.nii.gz", reference)
    summary = (work / "cv_summary.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in summary[1:]] == ["fold1", "fold2", "mean", "std"]
    assert {"val_dice_WT", "eval_dice_WT", "eval_dice_ET", "eval_hd95_TC"} <= set(summary[0].split(","))
    validation_sets = [
        {c["label"] for c in json.loads((work / f).read_text())["validation_filenames"]} for f in ("fold1.json", "fold2.json")
    ]
    assert not validation_sets[0] & validation_sets[1]
    # Post-processing chosen on the six out-of-fold predictions, applied to each fold's test predictions.
    decision = json.loads((work / "postprocessing.json").read_text())
    assert [region["region"] for region in decision["regions"]] == ["WT", "TC", "ET"] and decision["n_cases"] == 6
    for fold in ("fold1", "fold2"):
        assert sorted(p.name for p in (work / fold / "predictions" / "test_postprocessed").iterdir()) == [
            "BraTS20_Validation_001.nii.gz", "BraTS20_Validation_002.nii.gz"]
    # report.html in the run's folder (every fold's validation cases, worst first), each fold's and each evaluated
    # prediction folder's; the test group, without references, is drawn for quality control in its fold's.
    run_page = (work / "report.html").read_text(encoding="utf-8")
    assert "Cross-validation folds" in run_page and "validation of 2 fold(s) (6 cases evaluated)" in run_page
    assert run_page.count('<figure id="') == 6 and "https://" not in run_page
    for fold in ("fold1", "fold2"):
        assert "Predictions without reference: test (2 cases)" in (work / fold / "report.html").read_text()
        assert "(3 cases evaluated)" in (work / fold / "predictions" / "validation" / "report.html").read_text()

    # A finished run trains nothing more; raising n_epochs continues each fold at epoch 3.
    before = (work / "fold1" / "training_log.csv").read_text()
    rerun = run("unet3d-train", "--config_filename", tiny_config, "--device", "cpu")
    assert "epoch=" not in rerun.stderr
    assert (work / "fold1" / "training_log.csv").read_text() == before
    edit_config(tiny_config, lambda c: c["training"].update(n_epochs=3))
    resumed = run("unet3d-train", "--config_filename", tiny_config, "--device", "cpu")
    assert "resuming" in resumed.stderr and "epoch=1 " not in resumed.stderr
    rows = read_log(work / "fold1" / "training_log.csv")
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]
    assert (work / "fold1" / "training_log.csv").read_text().startswith(before)


@pytest.mark.slow  # 38 s; test_training_loop's killed run resumes a longer run and a killed one, log and weights
def test_resumed_run_matches_uninterrupted_run(tiny_config, tmp_path):
    edit_config(tiny_config, lambda c: (c.pop("cross_validation"), c.update(validation_filenames=c["training_filenames"][:2])))
    run("unet3d-train", "--config_filename", tiny_config, "--device", "cpu", "--output_dir", tmp_path / "straight")
    edit_config(tiny_config, lambda c: c["training"].update(n_epochs=1))
    run("unet3d-train", "--config_filename", tiny_config, "--device", "cpu", "--output_dir", tmp_path / "stepwise")
    edit_config(tiny_config, lambda c: c["training"].update(n_epochs=2))
    run("unet3d-train", "--config_filename", tiny_config, "--device", "cpu", "--output_dir", tmp_path / "stepwise")
    straight = read_log(tmp_path / "straight" / "tiny" / "training_log.csv")
    stepwise = read_log(tmp_path / "stepwise" / "tiny" / "training_log.csv")
    for a, b in zip(straight, stepwise):
        for column in ("loss", "val_loss", "val_dice_WT"):
            assert float(a[column]) == float(b[column]), column


def test_setup_crossval_only_writes_fold_configs_and_stops(tiny_config):
    result = run("unet3d-train", "--config_filename", tiny_config, "--setup_crossval_only")
    work = tiny_config.parent / "tiny"
    assert sorted(p.name for p in work.iterdir()) == ["fold1.json", "fold2.json", "submit_folds.sh"]
    assert "unet3d-train --config_filename" in result.stderr
    assert result.stdout.strip() == f"sbatch {work / 'submit_folds.sh'}"
    fold = json.loads((work / "fold1.json").read_text())
    assert all(path.startswith("/") for case in fold["training_filenames"] for path in case["image"])


def test_predict_writes_labels_on_input_grid_and_refuses_to_overwrite(tiny_config, brats_data, tmp_path):
    edit_config(tiny_config, lambda c: (c.pop("cross_validation"), c["training"].update(n_epochs=1)))
    run("unet3d-train", "--config_filename", tiny_config, "--device", "cpu")
    model = tiny_config.parent / "tiny" / "model_best.pth"
    output = tmp_path / "predicted"
    args = ["--config_filename", tiny_config, "--model_filename", model, "--group", "test",
            "--output_directory", output, "--device", "cpu"]
    run("unet3d-predict", *args)
    for case_id in ("BraTS20_Validation_001", "BraTS20_Validation_002"):
        assert_on_input_grid(output / f"{case_id}.nii.gz", brats_data / "test" / case_id / f"{case_id}_t1.nii.gz")
    before = (output / "BraTS20_Validation_001.nii.gz").read_bytes()
    refused = run("unet3d-predict", *args, check=False)
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    assert (output / "BraTS20_Validation_001.nii.gz").read_bytes() == before
    run("unet3d-predict", *args, "--overwrite", "--save_probabilities")
    probabilities = nibabel.load(output / "BraTS20_Validation_001.nii.gz")
    assert probabilities.shape == (26, 22, 20, 3)
    data = np.asarray(probabilities.dataobj)
    assert data.min() >= 0 and data.max() <= 1


@pytest.mark.parametrize("hierarchy", [True, False], ids=["regions", "labels"])
def test_validation_dice_is_the_dice_of_what_prediction_writes(single_config, tmp_path, hierarchy):
    """Where preprocessing keeps each scan's grid, the last epoch's val_dice_<region> equals unet3d-evaluate's
    mean Dice of unet3d-predict's label maps (model.pth, no clean-up) of the same validation cases."""
    def keep_the_grid(config):
        for key in ("resample", "desired_shape", "crop_foreground"):
            config["dataset"].pop(key)
        config["dataset"].update(patch_size=[16, 16, 16], setup_label_hierarchy=hierarchy)
        config["training"].update(n_epochs=3, batch_size=2)
        config["prediction"] = {"overlap": 0.5, "min_component_size": 50}  # clean-up is for written files only
    edit_config(single_config, keep_the_grid)
    run("unet3d-train", "--config_filename", single_config, "--device", "cpu")
    work = single_config.parent / single_config.stem
    last = read_log(work / "training_log.csv")[-1]
    predictions = tmp_path / "predictions"
    run("unet3d-predict", "--config_filename", single_config, "--model_filename", work / "model.pth",
        "--group", "validation", "--output_directory", predictions, "--min_component_size", "0", "--device", "cpu")
    run("unet3d-evaluate", "--prediction_dir", predictions, "--config_filename", single_config, "--group",
        "validation", "--no_hausdorff")
    evaluated = {row["region"]: row for row in read_log(predictions / "evaluation_summary.csv")
                 if row["statistic"] == "mean"}
    names = ["WT", "TC", "ET"] if hierarchy else ["label2", "label1", "label4"]
    assert list(evaluated) == names
    for name in names:
        assert abs(float(last[f"val_dice_{name}"]) - float(evaluated[name]["dice"])) < 1e-3, name
    assert any(0 < float(last[f"val_dice_{name}"]) < 1 for name in names)  # a comparison of real figures
