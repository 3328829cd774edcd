"""Label modes (regions, labels, classes), label names, scheduler lengths, validation every k epochs, masks."""

import json

import nibabel
import numpy as np
import pytest
import torch

from helpers import assert_on_input_grid, assert_one_line_error, edit_config, read_log, run, tiny_settings
from unet3d.config.experiment import experiment_from_dict, load_experiment
from unet3d.config.labels import LabelScheme
from unet3d.config.schema import parse_scheduler
from unet3d.models.inferer import Inferer
from unet3d.losses.deep_supervision import DeepSupervisedLoss
from unet3d.train.schedulers import ScheduleState, build_scheduler

NAMES = ["necrosis", "edema", "enhancing"]


def as_classes(config):
    """The tiny BraTS config as a 2-channel task of 3 mutually exclusive classes (BraTS's values 1, 2, 4)."""
    for key in ("training_filenames", "validation_filenames"):
        for case in config[key]:
            case["image"] = case["image"][:2]
    config["model"].update(in_channels=2, out_channels=4)
    config["loss"] = {"name": "DiceCELoss", "softmax": True, "to_onehot_y": True}
    config["dataset"].pop("setup_label_hierarchy")
    config["dataset"].update(label_mode="classes", labels=[1, 2, 4], label_names=NAMES)


def test_exclusive_classes_train_predict_and_evaluate_by_name(single_config, tmp_path):
    edit_config(single_config, as_classes)
    run("unet3d-train", "--config_filename", single_config, "--device", "cpu")
    work = single_config.parent / single_config.stem
    rows = read_log(work / "training_log.csv")
    assert {f"val_dice_{name}" for name in NAMES} <= set(rows[-1]) and "val_dice_WT" not in rows[-1]
    evaluated = read_log(work / "predictions" / "validation" / "evaluation.csv")
    assert [row["region"] for row in evaluated[:3]] == NAMES

    config = json.loads(single_config.read_text())
    case = config["validation_filenames"][0]
    images = [str(single_config.parent / path) for path in case["image"]]
    output = tmp_path / "predicted"
    run("unet3d-predict", "--config_filename", single_config, "--model_filename", work / "model_best.pth",
        "--images", *images, "--ids", "first_case", "--output_directory", output, "--device", "cpu")
    assert_on_input_grid(output / "first_case.nii.gz", images[0])  # label values among 0, 1, 2, 4
    run("unet3d-predict", "--config_filename", single_config, "--model_filename", work / "model_best.pth",
        "--images", *images, "--ids", "first_case", "--output_directory", tmp_path / "probabilities",
        "--save_probabilities", "--device", "cpu")
    probabilities = np.asarray(nibabel.load(tmp_path / "probabilities" / "first_case.nii.gz").dataobj)
    assert probabilities.shape[-1] == 4 and np.allclose(probabilities.sum(axis=-1), 1, atol=1e-4)


@pytest.mark.parametrize("change, fragments", [
    (lambda c: c["model"].update(out_channels=3),
     ["config key 'model.out_channels' is 3", "needs 4 (background + one per label)", "background channel is missing"]),
    (lambda c: c["loss"].update(softmax=False, sigmoid=True), ["config key 'loss.sigmoid' is true", "takes a softmax"]),
    (lambda c: c["dataset"].update(label_names=["a", "b"]), ["'dataset.label_names' must have one name per label"]),
    (lambda c: c["dataset"].update(setup_label_hierarchy=True), ["'dataset.setup_label_hierarchy' asks for nested"]),
])
def test_outputs_and_losses_that_do_not_fit_the_label_mode_stop_at_check(single_config, change, fragments):
    edit_config(single_config, lambda c: (as_classes(c), change(c)))
    result = run("unet3d-train", "--config_filename", single_config, "--check", check=False)
    assert_one_line_error(result, *fragments)


def test_each_mode_has_its_targets_decoding_and_names():
    label = torch.tensor([0, 2, 1, 4, 2])
    regions, labels, classes = (LabelScheme((2, 1, 4), mode) for mode in ("regions", "labels", "classes"))
    assert regions.targets(label).tolist() == [[0, 1, 1, 1, 1], [0, 0, 1, 1, 0], [0, 0, 0, 1, 0]]
    assert labels.targets(label).tolist() == [[0, 1, 0, 0, 1], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0]]
    assert classes.targets(label).tolist() == [[0, 1, 2, 3, 1]]  # class indices, background 0
    assert (classes.n_channels, classes.activation, labels.n_channels, labels.activation) == (4, "softmax", 3, "sigmoid")
    indices = classes.targets(label)[None]
    assert classes.target_masks(indices).tolist() == labels.targets(label).bool()[None].tolist()
    logits = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 3, 1]), 4).T.float()
    assert classes.decode(torch.softmax(logits * 5, dim=0)).tolist() == label.tolist()
    assert classes.paint(classes.masks(label)).tolist() == label.tolist()
    assert regions.names == ["WT", "TC", "ET"] and LabelScheme((2, 1, 3), "regions").names == ["WT", "TC", "ET"]
    assert LabelScheme((1, 2), "classes", ("csf", "gm")).names == ["csf", "gm"]


def test_one_hot_targets_for_losses_without_to_onehot_y():
    from monai.losses import DiceLoss

    logits = torch.randn(2, 4, 6, 6, 6)
    indices = torch.randint(0, 4, (2, 1, 6, 6, 6)).float()
    expanded = DeepSupervisedLoss(DiceLoss(softmax=True), one_hot=4)(logits, indices)
    built_in = DeepSupervisedLoss(DiceLoss(softmax=True, to_onehot_y=True))(logits, indices)
    assert torch.allclose(expanded, built_in)


def test_mask_to_nonzero_leaves_no_foreground_where_the_input_is_empty():
    image = torch.ones(1, 2, 8, 8, 8)
    image[..., :4] = 0  # every channel empty in half the volume
    logits = torch.full((1, 4, 8, 8, 8), 3.0)
    classes = Inferer(LabelScheme((1, 2, 3), "classes"), mask_to_nonzero=True)
    probabilities = classes.to_probabilities(logits, image)
    assert torch.all(probabilities[:, 0, ..., :4] == 1) and torch.all(probabilities[:, 1:, ..., :4] == 0)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(1, 8, 8, 8))
    assert torch.all(probabilities[:, 1:, ..., 4:] > 0.2)
    regions = Inferer(LabelScheme.brats(), mask_to_nonzero=True).to_probabilities(logits[:, :3], image)
    assert torch.all(regions[..., :4] == 0) and torch.all(regions[..., 4:] > 0.9)


def test_auto_lengths_follow_the_run_and_a_resumed_run_takes_the_new_length():
    spec = parse_scheduler({"name": "SequentialLR", "milestones": [10], "step_per_batch": True, "schedulers": [
        {"name": "LinearLR", "start_factor": 0.1, "total_iters": "auto"},
        {"name": "PolynomialLR", "total_iters": "auto", "power": 0.9}]}, "scheduler")
    optimizer = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0)
    scheduler = build_scheduler(spec, optimizer, length=100)
    warmup, decay = scheduler._schedulers
    assert (warmup.total_iters, decay.total_iters) == (10, 90)
    for _ in range(30):
        optimizer.step()
        scheduler.step()
    saved = ScheduleState(scheduler, spec).state_dict()
    longer = build_scheduler(spec, torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0), length=200)
    ScheduleState(longer, spec).load_state_dict(saved)
    assert longer.last_epoch == 30 and longer._schedulers[1].total_iters == 190
    fixed = parse_scheduler({"name": "PolynomialLR", "total_iters": 50}, "scheduler")
    assert build_scheduler(fixed, optimizer, length=100).total_iters == 50
    shorter = build_scheduler(spec, torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0), length=10)
    assert [inner.total_iters for inner in shorter._schedulers] == [10, 1]  # a run that ends with its warm-up
    for _ in range(10):
        shorter.optimizer.step()
        shorter.step()
    one_cycle = parse_scheduler({"name": "OneCycleLR", "max_lr": 0.1, "total_steps": "auto"}, "scheduler")
    assert build_scheduler(one_cycle, optimizer, length=77).total_steps == 77


def test_validation_every_k_epochs_and_always_the_last(single_config):
    edit_config(single_config, lambda c: (c.pop("scheduler"), c["training"].update(
        n_epochs=3, validation_interval=2, metric_to_monitor="val_dice_mean")))
    run("unet3d-train", "--config_filename", single_config, "--device", "cpu")
    rows = read_log(single_config.parent / single_config.stem / "training_log.csv")
    assert [bool(row["val_dice_mean"]) for row in rows] == [False, True, True]
    checkpoint = torch.load(single_config.parent / single_config.stem / "checkpoint.pth", weights_only=True)
    assert checkpoint["monitor"]["best_epoch"] in (2, 3)


def test_decathlon_labels_become_the_label_names(tmp_path):
    from helpers import TINY_SETTINGS

    (tmp_path / "dataset.json").write_text(json.dumps({
        "labels": {"0": "background", "1": "non-enhancing tumor", "2": "edema"},
        "training": [{"image": "a.nii.gz", "label": "a_seg.nii.gz"}]}))
    config = {k: TINY_SETTINGS[k] for k in ("model", "optimizer", "loss")}
    config["model"] = {**config["model"], "out_channels": 2}
    config["dataset"] = {"name": "SegmentationDataset"}
    config["decathlon_datalist"] = "dataset.json"
    (tmp_path / "msd.json").write_text(json.dumps(config))
    experiment = load_experiment(tmp_path / "msd.json")
    assert experiment.labels.values == (1, 2) and experiment.labels.names == ["non-enhancing_tumor", "edema"]
    with pytest.raises(Exception, match="out_channels' is 2 but label_mode \"classes\""):
        experiment_from_dict({**experiment.source, "dataset": {
            "name": "SegmentationDataset", "labels": [1, 2], "label_mode": "classes"}})


def test_brats_2023_template_reads_2023_folders(tmp_path):
    from helpers import REPO
    from unet3d.data.brats import write_brats_config
    from unet3d.data.synthetic import write_synthetic_brats

    write_synthetic_brats(tmp_path / "train", 2, shape=(12, 12, 8), naming="2023")
    template = REPO / "examples" / "brats2020" / "brats2023_template.json"
    write_brats_config(template, tmp_path / "brats2023.json", tmp_path / "train")
    experiment = load_experiment(tmp_path / "brats2023.json")
    assert experiment.labels == LabelScheme((2, 1, 3), "regions", ("WT", "TC", "ET"))
    assert experiment.cases("training")[0].label.endswith("-seg.nii.gz")


@pytest.mark.parametrize("change, message", [
    ({"dataset": {"name": "SegmentationDataset", "labels": [0, 1]}}, "'dataset.labels' must be distinct positive"),
    ({"dataset": {"name": "SegmentationDataset", "labels": [1, 1]}}, "'dataset.labels' must be distinct positive"),
    ({"scheduler": {"name": "StepLR", "step_size": "auto"}}, "'scheduler.step_size' is \"auto\", which only"),
    ({"scheduler": {"name": "SequentialLR", "milestones": [2], "schedulers": [
        {"name": "LinearLR"}, {"name": "OneCycleLR", "max_lr": 1, "step_per_batch": True}]}},
     "'scheduler.schedulers[1].step_per_batch': set it on the outer 'scheduler'"),
    ({"training": {"name": "x"}}, "'training.name' is not known"),
])
def test_labels_and_scheduler_options_that_cannot_work_are_refused(change, message):
    from unet3d.errors import UserError

    config = tiny_settings(**change)
    config["model"] = {**config["model"], "out_channels": 2} if "dataset" in change else config["model"]
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        experiment_from_dict(config)


def test_null_cross_validation_means_none():
    config = tiny_settings(cross_validation=None)
    assert experiment_from_dict(config).cross_validation is None
