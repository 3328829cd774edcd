"""The config schema: settings classes for validation, defaults, --check and docs/configuration.md."""

import json
from pathlib import Path

import pytest

from helpers import REPO, TINY_SETTINGS, edit_config, tiny_settings
from unet3d.config import schema
from unet3d.config.docs import markdown
from unet3d.config.experiment import experiment_from_dict, load_experiment
from unet3d.config.settings import CrossValidationSettings, PredictionSettings, TrainingSettings
from unet3d.errors import UserError
from unet3d.scripts.train import main as train


def test_docs_are_generated_from_the_schema():
    committed = (REPO / "docs" / "configuration.md").read_text()
    assert committed == markdown() + "\n", "run: python -m unet3d.config > docs/configuration.md"


def test_defaults_fill_a_config_that_leaves_sections_out():
    experiment = experiment_from_dict(tiny_settings(training=None, prediction={"overlap": None, "window": None}))
    assert experiment.training == TrainingSettings() and experiment.training.n_epochs == 1
    assert experiment.prediction == PredictionSettings() and experiment.prediction.overlap == 0.5
    assert experiment.window == (16, 16, 16)  # dataset.desired_shape, as a triple
    assert experiment_from_dict(tiny_settings(cross_validation={"folds": 3})).cross_validation == CrossValidationSettings(3)
    assert experiment_from_dict(tiny_settings(dataset={**TINY_SETTINGS["dataset"], "patch_size": 8})).window == (8, 8, 8)
    assert experiment.training.monitor_mode == "min"
    assert experiment_from_dict(tiny_settings(training={"metric_to_monitor": "val_dice_mean"})).training.monitor_mode == "max"


@pytest.mark.parametrize("path", sorted((REPO / "examples").rglob("*config*.json")), ids=lambda p: p.name)
def test_example_configs_validate(path):
    load_experiment(path)


@pytest.mark.parametrize("change, message", [
    (lambda c: c["training"].update(n_epoch=3), "'training.n_epoch' is not known (did you mean 'n_epochs'?)"),
    (lambda c: c.update(cross_validaton={}), "'cross_validaton' is not known (did you mean 'cross_validation'?)"),
    (lambda c: c["dataset"].update(patch_sise=[8, 8, 8]), "'dataset.patch_sise' is not known (did you mean 'patch_size'?)"),
    (lambda c: c["training_filenames"][0].update(lable="x.nii"), "'training_filenames[0].lable' is not known (did you mean 'label'?)"),
    (lambda c: c.update(prediction={"overlap": 1}), "'prediction.overlap' must be a number in [0, 1), got 1"),
    (lambda c: c["training"].update(amp="fp8"), "'training.amp' must be one of false, true, \"fp32\", \"fp16\", \"bf16\""),
    (lambda c: c["training"].update(batch_size="2"), "'training.batch_size' must be a positive integer, got \"2\""),
    (lambda c: c["dataset"].update(labels=[1, "2"]), "'dataset.labels' must be a list of integers or null"),
    (lambda c: c["dataset"].update(patch_size=[8, 8]), "'dataset.patch_size' must be three positive integers"),
    (lambda c: c["training"].update(metric_to_monitor="epoch_time"), "'training.metric_mode' is needed"),
    (lambda c: c.update(prediction={"threshold": 1}), "'prediction.threshold' must be a number in (0, 1), got 1"),
    (lambda c: c["scheduler"].update(mode="max"), "'scheduler.mode' is 'max' but the monitored metric is to be minimized"),
    (lambda c: c["scheduler"].update(mode=None), "'scheduler.mode' is None but the monitored metric is to be minimized"),
    (lambda c: c["cross_validation"].pop("n_folds"), "'cross_validation.n_folds' is missing"),
])
def test_mistakes_name_the_key_and_what_was_expected(change, message):
    config = tiny_settings()
    change(config)
    with pytest.raises(UserError) as error:
        experiment_from_dict(config)
    assert message in str(error.value)


def test_case_metadata_stays_allowed_and_unknown_keys_can_be_let_through(caplog):
    config = tiny_settings(cross_validation={"n_folds": 2, "group_by": "subjekt"})
    config["training_filenames"][0].update(subjekt="s1", grade="HGG")
    schema.validate(config)
    config["training"]["wandb_project"] = "x"
    checked = schema.validate(config, allow_unknown_keys=True)
    assert "wandb_project" not in checked["training"] and "wandb_project" in config["training"]
    assert "training.wandb_project' is not known" in caplog.text


def test_check_prints_the_resolved_settings_without_training(tiny_config, capsys):
    edit_config(tiny_config, lambda c: c["training"].pop("batch_size"))
    train(["--config_filename", str(tiny_config), "--check"])
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["training"]["batch_size"] == 1 and resolved["training"]["metric_to_monitor"] == "val_loss"
    assert resolved["prediction"] == {"window": None, "overlap": 0.5, "sw_batch_size": 4, "activation": None,
                                      "threshold": 0.5, "tta": False, "mask_to_nonzero": False,
                                      "min_component_size": None, "output_format": None}
    assert resolved["optimizer"]["betas"] == [0.9, 0.999] or tuple(resolved["optimizer"]["betas"]) == (0.9, 0.999)
    assert resolved["dataset"]["patches_per_case"] == 1
    assert resolved["training_filenames"] == "6 cases"
    written = {p.name for p in (Path(tiny_config).parent / "tiny").rglob("*")}
    assert not written & {"checkpoint.pth", "model.pth", "training_log.csv", "fold1.json"}
