"""Post-processing chosen by cross-validation: kept only where the out-of-fold Dice rises, applied by unet3d-predict."""

import copy
import json
import logging

import nibabel
import numpy as np
import pytest
import torch

from unet3d.config.experiment import load_experiment
from unet3d.config.labels import LabelScheme
from unet3d.evaluate.metrics import region_metrics
from unet3d.predict.inference import predict
from unet3d.predict.postprocess import ComponentStep, clean_regions, read_postprocessing
from unet3d.runs.postprocessing import candidate_dice, decide_postprocessing

from helpers import TINY_SETTINGS, random_weights, read_log, run

SHAPE = (20, 20, 20)
CPU = torch.device("cpu")


def write_run(root, cases, dataset):
    """A finished two-fold run ``root/run/`` of ``cases`` (``(reference, prediction)`` label maps): the config
    ``root/run.json``, each fold's training log and its validation predictions; returns the config's path."""
    settings = copy.deepcopy(TINY_SETTINGS)
    settings["dataset"] = {"name": "SegmentationDataset", "desired_shape": [16, 16, 16], **dataset}
    if dataset["label_mode"] == "classes":
        settings["loss"] = {"name": "DiceCELoss", "softmax": True, "to_onehot_y": True}
    entries = []
    for index, (reference, prediction) in enumerate(cases):
        case_id = f"case{index}"
        save(reference, root / "data" / f"{case_id}_seg.nii.gz")
        save(prediction, root / "run" / f"fold{index % 2 + 1}" / "predictions" / "validation" / f"{case_id}.nii.gz")
        entries.append({"id": case_id, "image": [str(root / "data" / f"{case_id}_t1.nii.gz")],
                        "label": str(root / "data" / f"{case_id}_seg.nii.gz")})
    for fold in ("fold1", "fold2"):
        (root / "run" / fold / "training_log.csv").write_text("epoch,loss,val_loss\n1,0.5,0.4\n")
    config = root / "run.json"
    config.write_text(json.dumps({**settings, "training_filenames": entries}))
    return config


def save(array, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(nibabel.Nifti1Image(np.asarray(array, np.uint8), np.eye(4)), path)


def region_dice(predicted, reference):
    """Each region's Dice as unet3d-evaluate scores it."""
    return [row["dice"] for row in region_metrics(predicted, reference, np.eye(4), ["a", "b", "c"], False)]


def brats_case(index):
    """A reference with a whole tumour, a core and an enhancing part of 16 to 36 voxels, and a near-correct
    prediction of it (a face of the whole tumour missed, one enhancing voxel missed)."""
    reference = np.zeros(SHAPE, np.uint8)
    reference[4:14, 4:14, 4:14] = 2
    reference[6:12, 6:12, 6:12] = 1
    side = (2, 2, 3, 3, 3, 3)[index]
    depth = (4, 5, 2, 3, 4, 4)[index]  # enhancing tumour of 16, 20, 18, 27, 36, 36 voxels
    reference[7:7 + side, 7:7 + side, 7:7 + depth] = 4
    prediction = reference.copy()
    prediction[4, 4:14, 4:14] = 0
    prediction[7, 7, 7] = 1
    return reference, prediction


def test_a_small_class_predicted_nearly_right_is_kept(tmp_path):
    config = write_run(tmp_path, [brats_case(i) for i in range(6)], {"labels": [2, 1, 4], "label_mode": "regions"})
    steps, table = decide_postprocessing(load_experiment(config), tmp_path / "run")
    assert steps == [ComponentStep()] * 3
    decision = json.loads((tmp_path / "run" / "postprocessing.json").read_text())
    et = decision["regions"][2]
    assert et["region"] == "ET" and et["step"] is None
    assert et["dice_after"] == et["dice_before"] > 0.9
    # The thresholds tried stay under the smallest enhancing tumour (16 voxels); none beats doing nothing.
    sizes = [c["step"].get("min_component_size") for c in et["candidates"] if c["step"]]
    assert sizes == [2, 4, 8, None]  # and keeping the largest (16 / 16 = 1 voxel removes nothing: not tried)
    assert all(c["dice"] <= et["dice_before"] for c in et["candidates"])
    assert list(table["dice_before"]) == list(table["dice_after"])


def test_a_speck_of_enhancement_in_a_tumour_that_enhances_nowhere_is_removed_with_the_region(tmp_path):
    """A case without enhancing tumour, predicted with 6 enhancing voxels, scores ET Dice 0; a true enhancing
    fragment of one voxel elsewhere keeps every component threshold at 1, so only removing a region found
    smaller than the smallest case's (17 voxels) can help, and becomes necrosis (the core stays)."""
    cases = [brats_case(i) for i in range(5)]
    for array in cases[0]:
        array[11, 11, 11] = 4
    reference, prediction = brats_case(5)
    reference[reference == 4] = 1
    prediction[prediction == 4] = 1
    prediction[9:11, 9:10, 8:11] = 4
    config = write_run(tmp_path, cases + [(reference, prediction)], {"labels": [2, 1, 4], "label_mode": "regions"})
    experiment = load_experiment(config)
    steps, table = decide_postprocessing(experiment, tmp_path / "run")
    et = json.loads((tmp_path / "run" / "postprocessing.json").read_text())["regions"][2]
    # Shares: of the smallest share of its core an enhancing tumour covers (17 of 216 voxels), 1/16 to 1/2.
    assert [c["step"] for c in et["candidates"]] == [None, {"keep_largest": True}] + [
        {"min_region_size": n} for n in (2, 4, 8)] + [  # thresholds of 1 voxel remove nothing: not tried
        {"min_region_share": share} for share in (0.0049, 0.0098, 0.0197, 0.0394)]
    assert steps[2] == ComponentStep(min_region_size=8)  # the first of the steps that do best
    assert table["dice_after"][2] == pytest.approx(table["dice_before"][2] + 1 / 6)
    cleaned = clean_regions(prediction, experiment.labels, steps).numpy()
    assert not (cleaned == 4).any() and np.array_equal(cleaned > 0, clean_regions(prediction, experiment.labels,
                                                                                  steps[:2] + [ComponentStep()]) > 0)
    assert read_postprocessing(tmp_path / "run" / "postprocessing.json", experiment.labels) == steps
    with pytest.raises(Exception, match="min_region_size"):
        ComponentStep.from_json({"min_region_size": -1}, "postprocessing.json")


def test_a_speck_as_large_as_a_true_lesion_but_small_for_its_core_is_removed_by_its_share(tmp_path):
    """Enhancing tumours of 16-36 voxels fill 7-17% of their cores; a case without any, predicted with a 12-voxel
    speck in a core of 1000 voxels: no size under the smallest true lesion removes it, a share of its core does."""
    reference, prediction = brats_case(5)
    reference[4:14, 4:14, 4:14] = 1
    prediction = reference.copy()
    prediction[6:8, 6:8, 6:9] = 4
    config = write_run(tmp_path, [brats_case(i) for i in range(5)] + [(reference, prediction)],
                       {"labels": [2, 1, 4], "label_mode": "regions"})
    experiment = load_experiment(config)
    steps, table = decide_postprocessing(experiment, tmp_path / "run")
    assert steps[2] == ComponentStep(min_region_share=0.0185)  # a quarter of 16 / 216, the smallest share
    assert table["dice_after"][2] == pytest.approx(table["dice_before"][2] + 1 / 6)
    cleaned = clean_regions(prediction, experiment.labels, steps).numpy()
    assert not (cleaned == 4).any() and (cleaned[4:14, 4:14, 4:14] == 1).all()  # the speck became core
    assert (clean_regions(brats_case(0)[1], experiment.labels, steps).numpy() == 4).any()  # a true lesion stays
    assert read_postprocessing(tmp_path / "run" / "postprocessing.json", experiment.labels) == steps
    assert "under 1.85% of the region around it" in steps[2].describe()
    with pytest.raises(Exception, match="min_region_share"):
        ComponentStep.from_json({"min_region_share": 1.5}, "postprocessing.json")


def speck_case(index):
    """Two classes (label 1: 6x6x6, label 2: 3x3x3) predicted exactly, plus specks of both away from them."""
    reference = np.zeros(SHAPE, np.uint8)
    reference[3:9, 3:9, 3:9] = 1
    reference[12:15, 12:15, 12:15] = 2
    prediction = reference.copy()
    prediction[17, 2 + index, 17] = 1
    prediction[1, 17, 2 + 2 * index:4 + 2 * index] = 2
    return reference, prediction


def test_specks_away_from_the_structures_are_removed(tmp_path):
    config = write_run(tmp_path, [speck_case(i) for i in range(4)], {"labels": [1, 2], "label_mode": "classes"})
    experiment = load_experiment(config)
    steps, table = decide_postprocessing(experiment, tmp_path / "run")
    assert all(steps), steps
    # The least aggressive step that removes the specks: a sixteenth of label 1's 216 voxels (every step
    # removes its single voxels), an eighth of label 2's 27 (the first to remove its pairs of voxels).
    assert steps == [ComponentStep(min_component_size=13), ComponentStep(min_component_size=3)]
    for row in table.itertuples():
        assert row.dice_before < row.dice_after == pytest.approx(1.0)
    # What predict will apply gives the reference back.
    reference, prediction = speck_case(0)
    assert np.array_equal(clean_regions(prediction, experiment.labels, steps).numpy(), reference)
    assert read_postprocessing(tmp_path / "run" / "postprocessing.json", experiment.labels) == steps


def test_summarize_writes_the_decision_atomically_and_shows_it(tmp_path, monkeypatch):
    config = write_run(tmp_path, [speck_case(i) for i in range(4)], {"labels": [1, 2], "label_mode": "classes"})
    summary = run("unet3d-train", "--config_filename", config, "--summarize")
    assert "post-processing chosen on the out-of-fold predictions" in summary.stdout
    assert "dice_before" in summary.stdout and "dice_after" in summary.stdout
    assert "post-processing label1: remove components under" in summary.stderr
    rows = read_log(tmp_path / "run" / "postprocessing.csv")
    assert [row["region"] for row in rows] == ["label1", "label2"]
    assert all(float(row["dice_before"]) < float(row["dice_after"]) for row in rows)
    written = (tmp_path / "run" / "postprocessing.json").read_bytes()

    def killed(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("unet3d.atomic.os.replace", killed)
    with pytest.raises(OSError):
        decide_postprocessing(load_experiment(config), tmp_path / "run")
    assert (tmp_path / "run" / "postprocessing.json").read_bytes() == written
    assert not list((tmp_path / "run").glob(".tmp-*"))


def test_a_config_that_sets_the_clean_up_keeps_it(tmp_path):
    dataset = {"labels": [1, 2], "label_mode": "classes"}
    config = write_run(tmp_path, [speck_case(i) for i in range(4)], dataset)
    settings = json.loads(config.read_text())
    config.write_text(json.dumps({**settings, "prediction": {"min_component_size": 0}}))
    assert decide_postprocessing(load_experiment(config), tmp_path / "run") == (None, None)
    assert not (tmp_path / "run" / "postprocessing.json").exists()


def test_predict_applies_the_runs_post_processing(tiny_config, brats_data, tmp_path, caplog):
    work = tiny_config.parent / "tiny"
    model = random_weights(work / "fold1" / "model_best.pth", tiny_config, seed=0)
    steps = {"WT": {"keep_largest": True}, "TC": {"min_component_size": 4}, "ET": None}
    decision = {"label_scheme": {"mode": "regions", "values": [2, 1, 4]},
                "regions": [{"region": name, "step": step} for name, step in steps.items()]}
    (work / "postprocessing.json").write_text(json.dumps(decision))
    applied = run("unet3d-predict", "--config_filename", tiny_config, "--model_filename", model, "--input_dir",
                  brats_data / "test", "--output_dir", tmp_path / "applied", "--device", "cpu")
    assert "post-processing chosen by cross-validation" in applied.stderr
    experiment = load_experiment(tiny_config)
    caplog.set_level(logging.INFO, logger="unet3d")
    predict(experiment, [model], tmp_path / "raw", CPU, input_dir=brats_data / "test", postprocessing=None)
    # A clean-up the user chose (here: none) replaces the run's.
    predict(experiment, [model], tmp_path / "own", CPU, input_dir=brats_data / "test",
            prediction=experiment.prediction.override(min_component_size=0))
    assert "is not applied: prediction.min_component_size 0 chooses the clean-up" in caplog.text
    expected = read_postprocessing(work / "postprocessing.json", experiment.labels)
    changed = 0
    for path in sorted((tmp_path / "raw").glob("*.nii.gz")):
        raw = np.asarray(nibabel.load(path).dataobj)
        cleaned = np.asarray(nibabel.load(tmp_path / "applied" / path.name).dataobj)
        assert np.array_equal(cleaned, clean_regions(raw, experiment.labels, expected).numpy())
        assert np.array_equal(np.asarray(nibabel.load(tmp_path / "own" / path.name).dataobj), raw)
        changed += int((cleaned != raw).sum())
    assert changed > 0  # the clean-up had something to do


@pytest.mark.parametrize("mode", ["regions", "classes"])
def test_the_dice_counted_from_components_is_the_dice_of_the_cleaned_label_maps(mode):
    scheme = LabelScheme((2, 1, 4), mode)
    rng = np.random.default_rng(0)
    reference, _ = brats_case(4)
    predicted = reference.copy()
    predicted[rng.random(SHAPE) < 0.03] = 2  # specks of every label, some touching the tumour
    predicted[rng.random(SHAPE) < 0.02] = 1
    predicted[rng.random(SHAPE) < 0.01] = 4
    predicted[15:18, 15:18, 15:18] = 1
    for index in range(3):
        steps = [ComponentStep(), ComponentStep(2), ComponentStep(5), ComponentStep(keep_largest=True),
                 ComponentStep(min_region_size=10**5)]
        counted = candidate_dice(predicted, reference, scheme, index, steps)
        for step, row in zip(steps, counted):
            only = [ComponentStep()] * 3
            only[index] = step
            cleaned = clean_regions(predicted, scheme, only)
            np.testing.assert_allclose(row, region_dice(scheme.masks(cleaned), scheme.masks(reference)), atol=1e-6)
        assert len({tuple(row) for row in counted}) == 5  # each step changes something
