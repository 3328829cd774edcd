"""3DUnetCNN's flags, --set, --version, fine-tuning from pretrained weights, and the Python API."""

import json
import sys

import nibabel
import pytest
import torch

from helpers import assert_one_line_error, edit_config, read_log, run

PROGRAMS = ("unet3d-train", "unet3d-predict", "unet3d-evaluate")


@pytest.mark.parametrize("prog", PROGRAMS)
def test_every_command_has_version(prog):
    result = run(prog, "--version")
    assert result.stdout.startswith(f"{prog} 0.1.0 (torch ") and "MONAI" in result.stdout
    assert result.stdout.strip().endswith("; tested with torch 2.13.0, MONAI 1.6.1)")



@pytest.mark.parametrize("module", ["train", "predict", "evaluate"])
def test_a_mistake_in_the_config_is_reported_before_monai_is_imported(tmp_path, module):
    """Importing MONAI takes seconds: a missing file or a config key that is not known is reported without it."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model": {"name": "DynUNet"}, "optimizer": {"name": "Adam"},
                                  "loss": {"name": "DiceLoss"}, "dataset": {"name": "SegmentationDataset"},
                                  "training": {"n_epoch": 2}}))
    flags = {"train": [], "predict": ["--model_filename", "model.pth", "--group", "test", "--output_dir", "out"],
             "evaluate": ["--prediction_dir", str(tmp_path)]}[module]
    script = ("import sys\nfrom unet3d.scripts import {0}\ntry:\n    {0}.main(sys.argv[1:])\n"
              "except SystemExit as stop:\n    print(stop.code, 'monai' in sys.modules)").format(module)
    for name, expected in ((config, "'training.n_epoch' is not known"), (tmp_path / "none.json", "not found")):
        result = run(sys.executable, "-c", script, "--config_filename", name, *flags)
        assert expected in result.stderr and result.stdout.split() == ["2", "False"], (result.stdout, result.stderr)

def test_set_changes_a_value_and_a_changed_training_setting_is_refused_like_an_edit(single_config):
    edit_config(single_config, lambda c: c["training"].update(n_epochs=1))
    resolved = json.loads(run("unet3d-train", "--config_filename", single_config, "--check",
                              "--set", "training.seed=7", "--set", "model.filters=[4, 8, 32]",
                              "--set", "prediction.overlap=0.25").stdout)
    assert resolved["training"]["seed"] == 7 and resolved["model"]["filters"] == [4, 8, 32]
    assert resolved["prediction"]["overlap"] == 0.25
    result = run("unet3d-train", "--config_filename", single_config, "--check", "--set", "training.n_epoch=2",
                 check=False)
    assert_one_line_error(result, "'training.n_epoch' is not known (did you mean 'n_epochs'?)")
    result = run("unet3d-train", "--config_filename", single_config, "--check", "--set", "model.name.x=1",
                 check=False)
    assert_one_line_error(result, "--set 'model.name.x=1': 'model.name' holds \"DynUNet\", not an object")

    run("unet3d-train", "--config_filename", single_config, "--device", "cpu", "--set", "training.seed=3")
    work = single_config.parent / single_config.stem
    assert json.loads((work / "config.json").read_text())["training"]["seed"] == 3  # the config as trained
    log_path = work / "training_log.csv"
    before = log_path.read_text()
    result = run("unet3d-train", "--config_filename", single_config, "--device", "cpu", "--set", "training.seed=4",
                 check=False)
    assert_one_line_error(result, "checkpoint.pth: config key(s) training changed since this checkpoint was written")
    assert "--restart" in result.stderr and log_path.read_text() == before  # nothing the run had is lost
    longer = run("unet3d-train", "--config_filename", single_config, "--device", "cpu", "--set", "training.seed=3",
                 "--set", "training.n_epochs=2")
    assert "resuming" in longer.stderr and [r["epoch"] for r in read_log(log_path)] == ["1", "2"]
    # --restart trains the changed config from the start.
    restarted = run("unet3d-train", "--config_filename", single_config, "--device", "cpu", "--set", "optimizer.lr=0.02",
                    "--restart")
    assert "resuming" not in restarted.stderr
    assert [(row["epoch"], row["lr"]) for row in read_log(log_path)] == [("1", "0.02")]


def test_original_flags_log_batch_size_machine_config_and_examples(single_config, tmp_path):
    machine = tmp_path / "machine.json"
    machine.write_text(json.dumps({"n_workers": 0, "n_gpus": 1, "pin_memory": False, "directory": "."}))
    log_copy = tmp_path / "logs" / "my_log.csv"
    result = run("unet3d-train", "--config_filename", single_config, "--device", "cpu", "--batch_size", "1",
                 "--training_log_filename", log_copy, "--machine_config_filename", machine, "--n_examples", "3")
    assert "--batch_size 1 overrides training.batch_size" in result.stderr
    work = single_config.parent / single_config.stem
    assert log_copy.read_text() == (work / "training_log.csv").read_text()
    examples = sorted(p.name for p in (work / "data_loader_testing").iterdir())
    assert len(examples) == 6 and examples[0].endswith("_input.nii.gz") and examples[1].endswith("_target.nii.gz")
    image, target = (nibabel.load(work / "data_loader_testing" / name) for name in examples[:2])
    assert image.shape == (16, 16, 16, 4) and target.shape == (16, 16, 16, 3)  # as the network sees them
    machine.write_text(json.dumps({"n_workers": -1}))
    result = run("unet3d-train", "--config_filename", single_config, "--machine_config_filename", machine, check=False)
    assert_one_line_error(result, "machine.json: 'n_workers' must be a whole number")


@pytest.mark.slow  # 57 s: keeps the default suite under 10 minutes on 2 cores
def test_fine_tuning_loads_what_fits_and_keeps_frozen_layers(single_config, tmp_path):
    edit_config(single_config, lambda c: c["training"].update(n_epochs=1))
    run("unet3d-train", "--config_filename", single_config, "--device", "cpu")
    pretrained = single_config.parent / single_config.stem / "model.pth"

    def other_labels(config):  # three classes and background instead of three regions: the output layers differ
        config["dataset"].update(label_mode="classes", setup_label_hierarchy=False)
        config["model"]["out_channels"] = 4
        config["loss"] = {"name": "DiceCELoss", "softmax": True, "to_onehot_y": True}
        config["training"]["freeze"] = ["input_block", "downsamples"]
    edit_config(single_config, other_labels)
    result = run("unet3d-train", "--config_filename", single_config, "--device", "cpu", "--output_dir",
                 tmp_path / "tuned", "--pretrained_model_filename", pretrained)
    line = next(line for line in result.stderr.splitlines() if "pretrained weights" in line)
    assert "skipped (not in the file)" in line and "0 skipped (shape differs)" not in line
    before, after = torch.load(pretrained, weights_only=True), torch.load(
        tmp_path / "tuned" / single_config.stem / "model.pth", weights_only=True)
    frozen = [k for k in after if k.startswith(("input_block", "downsamples"))]
    trained = [k for k in after if k.startswith("bottleneck")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in trained)
    resumed = run("unet3d-train", "--config_filename", single_config, "--device", "cpu", "--output_dir",
                  tmp_path / "tuned", "--pretrained_model_filename", pretrained)
    assert "starts fresh runs only: not used" in resumed.stderr
    (tmp_path / "unrelated.pth").write_bytes(b"")
    torch.save({"other.weight": torch.zeros(1)}, tmp_path / "unrelated.pth")
    result = run("unet3d-train", "--config_filename", single_config, "--device", "cpu", "--output_dir",
                 tmp_path / "fresh", "--pretrained_model_filename", tmp_path / "unrelated.pth", check=False)
    assert_one_line_error(result, "unrelated.pth: no parameter matches the config's model")
    edit_config(single_config, lambda c: c["training"].update(freeze=["encoder"]))
    result = run("unet3d-train", "--config_filename", single_config, "--device", "cpu", "--output_dir",
                 tmp_path / "fresh", check=False)
    assert_one_line_error(result, "'training.freeze': 'encoder' starts no parameter name", "input_block")


def test_python_api_trains_predicts_and_evaluates_a_dict_config(single_config, tmp_path, monkeypatch):
    import unet3d

    monkeypatch.chdir(single_config.parent)  # a dict's relative data paths are the working folder's
    config = json.loads(single_config.read_text())
    config["training"]["n_epochs"] = 1
    work = unet3d.run_training(config, output_dir=tmp_path, name="api", device="cpu")
    assert work == tmp_path / "api" and (work / "model_best.pth").is_file()
    written = unet3d.run_prediction(single_config, work / "model_best.pth", tmp_path / "predicted",
                                    group="validation", device="cpu", overrides=["prediction.overlap=0.25"])
    assert len(written) == 2 and all(path.is_file() for path in written)
    per_case, summary = unet3d.run_evaluation(tmp_path / "predicted", config=single_config, group="validation")
    assert set(per_case["region"]) == {"WT", "TC", "ET"} and len(per_case) == 6
    assert (tmp_path / "predicted" / "evaluation.csv").is_file()
    assert (tmp_path / "predicted" / "report.html").is_file() and (work / "report.html").is_file()
    from unet3d.errors import UserError

    with pytest.raises(UserError, match="needs output_dir"):
        unet3d.run_training(config)


def test_stage_names_are_packages_and_the_api_has_names_of_its_own():
    import types

    import unet3d
    import unet3d.api
    import unet3d.train

    assert isinstance(unet3d.train, types.ModuleType) and not callable(unet3d.train)
    assert unet3d.run_training is unet3d.api.train and unet3d.run_evaluation is unet3d.api.evaluate


def test_a_model_folder_in_use_is_refused_and_a_dead_runs_lock_taken_over(single_config):
    import os
    import socket
    import subprocess

    edit_config(single_config, lambda c: c["training"].update(n_epochs=1))
    work = single_config.parent / single_config.stem
    work.mkdir()
    lock = work / ".unet3d.lock"
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))  # this test: alive
    result = run("unet3d-train", "--config_filename", single_config, "--device", "cpu", check=False)
    assert_one_line_error(result, "another run", f"pid {os.getpid()} on this machine", ".unet3d.lock")
    assert [p.name for p in work.iterdir()] == [".unet3d.lock"]  # nothing written beside the other run
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))  # a run that is gone: taken over
    run("unet3d-train", "--config_filename", single_config, "--device", "cpu")
    assert (work / "model.pth").is_file() and not lock.exists()
