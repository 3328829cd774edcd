"""unet3d-evaluate: metrics against hand-computed values, BraTS conventions for empty masks, CSVs."""

import math
import shlex
import shutil

import nibabel
import numpy as np
import pytest

from helpers import read_log, run
from unet3d.config.experiment import load_experiment
from unet3d.config.settings import LabelSettings
from unet3d.errors import UserError
from unet3d.evaluate.evaluation import evaluate_folder, evaluation_inputs
from unet3d.evaluate.metrics import BRATS_MAX_HD95, region_metrics

AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])  # 2 mm voxels along z: 0.002 ml each


def masks(*boxes, shape=(10, 10, 10)):
    """Boolean masks (C, X, Y, Z), one per box of slices (None: empty)."""
    result = np.zeros((len(boxes), *shape), bool)
    for index, box in enumerate(boxes):
        if box is not None:
            result[(index, *box)] = True
    return result


def test_metrics_of_small_masks_match_hand_computed_values():
    predicted = masks(np.s_[2:4, 2:4, 2:4])  # 8 voxels
    reference = masks(np.s_[2:4, 2:4, 2:5])  # 12 voxels: 4 more, one 2 mm slice further along z
    [row] = region_metrics(predicted, reference, AFFINE, ["tumour"])
    assert row["dice"] == pytest.approx(2 * 8 / (8 + 12))
    assert row["sensitivity"] == pytest.approx(8 / 12)
    assert row["specificity"] == pytest.approx(1.0)
    # Surface distances: 0 from every predicted voxel; from the reference, 0 (8 voxels) and 2 mm (4 voxels).
    assert row["hd95"] == pytest.approx(2.0)
    assert row["predicted_volume_ml"] == pytest.approx(8 * 0.002)
    assert row["reference_volume_ml"] == pytest.approx(12 * 0.002)


def test_empty_masks_follow_the_brats_conventions():
    box = np.s_[1:3, 1:3, 1:2]  # 4 voxels
    both_empty, only_predicted, only_reference = region_metrics(
        masks(None, box, None), masks(None, None, box), AFFINE, ["a", "b", "c"])
    assert (both_empty["dice"], both_empty["hd95"]) == (1.0, 0.0)
    assert math.isnan(both_empty["sensitivity"]) and both_empty["specificity"] == 1.0
    assert (only_predicted["dice"], only_predicted["hd95"]) == (0.0, BRATS_MAX_HD95)
    assert math.isnan(only_predicted["sensitivity"]) and only_predicted["specificity"] == pytest.approx(996 / 1000)
    assert (only_reference["dice"], only_reference["hd95"]) == (0.0, BRATS_MAX_HD95)
    assert (only_reference["sensitivity"], only_reference["specificity"]) == (0.0, 1.0)
    [skipped] = region_metrics(masks(box), masks(box), AFFINE, ["a"], hausdorff=False)
    assert math.isnan(skipped["hd95"]) and skipped["dice"] == 1.0


def write_label_map(path, label_map, affine=AFFINE):
    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(nibabel.Nifti1Image(label_map.astype(np.uint8), affine), path)


def brats_label_map(enhancing=True):
    """Edema 2 around a core of necrosis 1 and (optionally) enhancing tumour 4."""
    label_map = np.zeros((10, 10, 10), np.uint8)
    label_map[2:8, 2:8, 2:8] = 2
    label_map[3:6, 3:6, 3:6] = 1
    if enhancing:
        label_map[4:6, 4:6, 4:6] = 4
    return label_map


def test_evaluate_brats_regions_from_a_label_folder(tmp_path):
    predictions, labels = tmp_path / "predictions", tmp_path / "labels"
    write_label_map(predictions / "case1.nii.gz", brats_label_map())
    write_label_map(predictions / "case2.nii.gz", brats_label_map(enhancing=False))
    write_label_map(labels / "case1" / "case1_seg.nii.gz", brats_label_map())  # BraTS layout
    write_label_map(labels / "case2.nii.gz", brats_label_map())  # flat layout
    write_label_map(labels / "case3.nii.gz", brats_label_map())  # not predicted: skipped
    result = run("unet3d-evaluate", "--prediction_dir", predictions, "--label_dir", labels,
                 "--labels", "2", "1", "4", "--label_mode", "regions", "--output_filename", tmp_path / "scores.csv")
    rows = {(r["case"], r["region"]): r for r in read_log(tmp_path / "scores.csv")}
    assert sorted(rows) == [(c, r) for c in ("case1", "case2") for r in ("ET", "TC", "WT")]
    assert all(float(rows["case1", region]["dice"]) == 1.0 for region in ("WT", "TC", "ET"))
    assert float(rows["case2", "WT"]["dice"]) == 1.0 and float(rows["case2", "TC"]["dice"]) == 1.0
    assert float(rows["case2", "ET"]["dice"]) == 0.0 and float(rows["case2", "ET"]["hd95"]) == BRATS_MAX_HD95
    assert float(rows["case2", "ET"]["reference_volume_ml"]) == pytest.approx(8 * 0.002)
    summary = {(r["region"], r["statistic"]): r for r in read_log(tmp_path / "scores_summary.csv")}
    assert {s for _, s in summary} == {"mean", "std", "median", "25%", "75%", "count"}
    assert float(summary["ET", "mean"]["dice"]) == 0.5 and float(summary["ET", "median"]["dice"]) == 0.5
    assert float(summary["ET", "25%"]["dice"]) == 0.25 and float(summary["ET", "count"]["dice"]) == 2
    assert "WT" in result.stdout and "median" in result.stdout


def test_evaluate_a_config_group_and_refuse_mismatched_grids(tiny_config, brats_data, tmp_path):
    experiment = load_experiment(tiny_config)
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    for case in experiment.cases("training")[:2]:
        shutil.copy(case.label, predictions / f"{case.id}.nii.gz")
    references, scheme = evaluation_inputs(experiment, group="training")
    assert scheme is experiment.labels
    per_case, summary = evaluate_folder(predictions, references, scheme)
    assert len(per_case) == 6 and (per_case["dice"] == 1.0).all() and (per_case["hd95"] == 0.0).all()
    assert (predictions / "evaluation.csv").is_file() and (predictions / "evaluation_summary.csv").is_file()
    write_label_map(predictions / "BraTS20_Training_001.nii.gz", np.zeros((24, 24, 24)), affine=np.diag([-1, -1, 1, 1]))
    with pytest.raises(UserError, match="not on the grid of"):
        evaluate_folder(predictions, references, scheme)
    with pytest.raises(UserError, match="either --config_filename and --group, or --label_dir"):
        evaluation_inputs(experiment)


def test_evaluate_never_guesses_the_labels_and_skips_predictions_without_a_reference(tmp_path):
    predictions, labels = tmp_path / "predictions", tmp_path / "labels"
    brats_2023 = np.where(brats_label_map() == 4, 3, brats_label_map())  # enhancing tumour is 3 in BraTS 2023
    write_label_map(predictions / "BraTS-GLI-00001-000.nii.gz", brats_2023)
    write_label_map(predictions / "stray.nii.gz", brats_2023)  # no reference: listed, not evaluated
    write_label_map(labels / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-seg.nii.gz", brats_2023)
    result = run("unet3d-evaluate", "--prediction_dir", predictions, "--label_dir", labels, "--no_hausdorff")
    rows = read_log(predictions / "evaluation.csv")
    assert [row["region"] for row in rows] == ["label1", "label2", "label3"]  # the values in the references
    assert "label values 1, 2, 3 read from the reference label maps" in result.stderr
    assert "1 prediction(s) have no reference label and are not evaluated: stray" in result.stderr
    run("unet3d-evaluate", "--prediction_dir", predictions, "--label_dir", labels, "--no_hausdorff",
        "--labels", "2", "1", "3", "--hierarchy", "--label_names", "whole", "core", "enhancing")
    rows = read_log(predictions / "evaluation.csv")
    assert [row["region"] for row in rows] == ["whole", "core", "enhancing"]
    assert float(rows[1]["reference_volume_ml"]) == pytest.approx(27 * 0.002)  # core: necrosis 1 and enhancing 3
    (predictions / "BraTS-GLI-00001-000.nii.gz").unlink()
    result = run("unet3d-evaluate", "--prediction_dir", predictions, "--label_dir", labels, check=False)
    assert result.returncode == 2 and "none of the 1 prediction(s) has a reference label: stray" in result.stderr


def test_the_output_is_a_new_csv_never_a_label_map(tmp_path):
    predictions, labels = tmp_path / "predictions", tmp_path / "labels"
    write_label_map(predictions / "case1.nii.gz", brats_label_map())
    write_label_map(labels / "case1.nii.gz", brats_label_map())
    before = (labels / "case1.nii.gz").read_bytes()
    for target in (labels / "case1.nii.gz", tmp_path / "scores.txt"):
        result = run("unet3d-evaluate", "--prediction_dir", predictions, "--label_dir", labels, "--labels", "1",
                     "--output_filename", target, check=False)
        assert result.returncode == 2 and "expected a new .csv file" in result.stderr
    assert (labels / "case1.nii.gz").read_bytes() == before and not (tmp_path / "scores.txt").exists()


@pytest.mark.parametrize("flags, dataset", [
    (["--labels", "2", "2"], {"labels": [2, 2]}),
    (["--labels", "2", "1", "--label_names", "whole"], {"labels": [2, 1], "label_names": ["whole"]}),
    (["--labels", "1", "--label_names", "tumour core"], {"labels": [1], "label_names": ["tumour core"]}),
])
def test_label_flags_are_refused_as_the_same_config_keys_are(tmp_path, flags, dataset):
    predictions, labels = tmp_path / "predictions", tmp_path / "labels"
    write_label_map(predictions / "case1.nii.gz", brats_label_map())
    write_label_map(labels / "case1.nii.gz", brats_label_map())
    with pytest.raises(UserError) as from_config:
        LabelSettings.parse(dataset, "dataset")
    result = run("unet3d-evaluate", "--prediction_dir", predictions, "--label_dir", labels, *flags, check=False)
    line = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and line == f"unet3d-evaluate: error: {shlex.join(flags)}: {from_config.value}"
    assert not (predictions / "evaluation.csv").exists()


def test_an_unknown_label_mode_is_refused_as_the_config_key_is(tmp_path):
    write_label_map(tmp_path / "labels" / "case1.nii.gz", brats_label_map())
    with pytest.raises(UserError, match="'dataset.label_mode' must be one of \"regions\", \"labels\", \"classes\""):
        evaluation_inputs(label_dir=tmp_path / "labels", labels=[1], label_mode="region")
