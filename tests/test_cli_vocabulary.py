"""The five commands speak with one voice: shared flags agree, old spellings still work, help texts fit the
command, and 3DUnetCNN's ``--ngpus 0`` runs on the CPU."""

import argparse
import importlib
import logging
import shutil

import pytest

from helpers import convert_image, edit_config, random_weights
from unet3d.scripts import cli, evaluate, export, plan, predict, train

PARSERS = {"unet3d-train": train, "unet3d-predict": predict, "unet3d-evaluate": evaluate, "unet3d-export": export,
           "unet3d-plan": plan}
# Config keys and words only training reads; the help of a command that does not train names none of them.
TRAINING_ONLY = ("training.", "n_epochs", "optimizer", "scheduler", "cross_validation", "loss=")
CASE = "BraTS20_Training_001"
PLUGIN = """
import torch


class TinyNet(torch.nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = torch.nn.Conv3d(in_channels, out_channels, 1)

    def forward(self, image):
        return self.conv(image)
"""


def actions(module):
    """``{option string: action}`` of a command's parser, hidden aliases included."""
    return {option: action for action in module.build_parser()._actions for option in action.option_strings}


def shown(module):
    """The option strings its help shows."""
    return {option for option, action in actions(module).items() if action.help is not argparse.SUPPRESS}


def test_a_flag_that_several_commands_have_means_the_same_in_each():
    by_command = {name: actions(module) for name, module in PARSERS.items()}
    options = {option for table in by_command.values() for option in table}
    for option in sorted(options):
        having = {name: table[option] for name, table in by_command.items() if option in table}
        # Repetition may differ: unet3d-predict averages several --model_filename, unet3d-export takes one.
        kinds = {(action.dest, action.type) for action in having.values()}
        assert len(kinds) == 1, f"{option} differs between {', '.join(having)}: {kinds}"


def test_every_command_has_the_shared_vocabulary_and_the_old_spellings_are_hidden():
    everyone = {"--debug", "--version"}
    reads_cases = {"--nthreads", "--device"}
    reads_a_config = {"--set", "--plugin", "--allow_unknown_keys"}
    expected = {"unet3d-train": everyone | reads_cases | reads_a_config | {"--output_dir"},
                "unet3d-predict": everyone | reads_cases | reads_a_config | {"--output_dir"},
                "unet3d-evaluate": everyone | reads_a_config | {"--output_filename"},
                "unet3d-export": everyone | reads_a_config | {"--output_dir"},
                "unet3d-plan": everyone | reads_cases | {"--output_filename"}}
    for name, module in PARSERS.items():
        assert expected[name] <= shown(module), (name, expected[name] - shown(module))
        assert not {"--workers", "--output_directory"} & shown(module), name
    assert plan.build_parser().parse_args(["--input_dir", "a", "--output_filename", "b.json",
                                           "--workers", "3"]).nthreads == 3
    assert predict.build_parser().parse_args(["--config_filename", "c", "--model_filename", "m", "--group", "test",
                                              "--output_directory", "out"]).output_dir == "out"


@pytest.mark.parametrize("name", ["unet3d-predict", "unet3d-export", "unet3d-evaluate"])
def test_the_help_of_a_command_that_does_not_train_names_no_training_key(name):
    text = " ".join(PARSERS[name].build_parser().format_help().split())
    assert "--set" in text
    named = [word for word in TRAINING_ONLY if word in text]
    assert not named, f"{name} --help names {named}"


def test_zero_gpus_is_one_process_on_the_cpu_as_in_3dunetcnn(tmp_path):
    from unet3d.config.load import read_machine_config

    assert cli.processes_and_device(0, "auto") == (1, "cpu")
    assert cli.processes_and_device(2, "cuda") == (2, "cuda")
    (tmp_path / "machine.json").write_text('{"n_gpus": 0, "n_workers": 2}')
    assert read_machine_config(tmp_path / "machine.json") == {"n_gpus": 0, "n_workers": 2}


def test_predict_with_no_gpus_writes_nrrd_without_the_readers_refusals(tiny_config, brats_data, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    images = [convert_image(brats_data / "train" / CASE / f"{CASE}_{name}.nii.gz", tmp_path / f"scan_{name}.nrrd")
              for name in ("flair", "t1", "t1ce", "t2")]
    model = random_weights(tmp_path / "model.pth")
    predict.main(["--config_filename", str(tiny_config), "--model_filename", str(model), "--ngpus", "0",
                  "--images", *map(str, images), "--output_dir", str(tmp_path / "out")])
    assert (tmp_path / "out" / "scan.nrrd").is_file()
    messages = [record.getMessage() for record in caplog.records]
    assert any("predicting 1 case(s)" in message for message in messages)
    assert not [message for message in messages if "unable to load" in message or not message.strip()]


def test_evaluate_reads_a_config_as_predict_does(tiny_config, brats_data, tmp_path, capsys, monkeypatch):
    """A config with a plug-in's model and a key of the lab's own, which unet3d-predict reads with --plugin and
    --allow_unknown_keys."""
    resolve = importlib.import_module("unet3d.config.resolve")  # the package exports a function of that name

    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "lab_models.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    monkeypatch.setattr(resolve, "PLUGINS", dict(resolve.PLUGINS))
    edit_config(tiny_config, lambda config: config.update(
        model={"name": "TinyNet", "in_channels": 4, "out_channels": 3}, notes="the lab's own key"))
    (tmp_path / "predicted").mkdir()
    shutil.copy(brats_data / "train" / CASE / f"{CASE}_seg.nii.gz", tmp_path / "predicted" / f"{CASE}.nii.gz")
    evaluate.main(["--config_filename", str(tiny_config), "--group", "training", "--prediction_dir",
                   str(tmp_path / "predicted"), "--no_hausdorff", "--allow_unknown_keys", "--plugin", "lab_models",
                   "--set", 'dataset.label_names=["WT", "TC", "ET"]'])
    text = capsys.readouterr().out
    assert "WT" in text and "1.0000" in text  # a prediction that is its reference scores Dice 1
    assert (tmp_path / "predicted" / "evaluation.csv").is_file()


def test_mlflow_keeps_its_info_lines_off_the_console(tiny_config, tmp_path, capfd, monkeypatch):
    from unet3d.config.experiment import load_experiment
    from unet3d.train.trackers import MLflowTracker

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the SQLite store, whose tables are made now
    tracker = MLflowTracker(load_experiment(tiny_config), tmp_path / "run", [], 1)
    tracker.close("FINISHED")
    assert (tmp_path / "run" / "mlflow.db").is_file()
    console = capfd.readouterr().err
    assert "INFO mlflow" not in console and "INFO  [alembic" not in console, console
