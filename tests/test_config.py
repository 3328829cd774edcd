"""Loading configs: the original BraTS config, relative paths, no mutation."""

import copy
import json

import pytest

from unet3d.config import experiment_from_dict, load_experiment
from unet3d.data.dataset import build_dataset
from unet3d.errors import UserError

from helpers import REPO, TINY_SETTINGS, run, tiny_settings

REFERENCE = REPO.parent / "shared" / "reference" / "upstream_brats2020_config.json"
EXAMPLE = REPO / "examples" / "brats2020" / "brats2020_config.json"


def test_original_brats_config_loads_unchanged_and_reports_missing_data(tmp_path):
    if REFERENCE.exists():
        assert json.loads(EXAMPLE.read_text()) == json.loads(REFERENCE.read_text())
    experiment = load_experiment(EXAMPLE)
    assert experiment.model.name == "DynUNet" and len(experiment.cases("training")) == 369
    first = experiment.cases("training")[0]
    assert first.images[0] == str(EXAMPLE.parent / "BraTS2020_TrainingData/MICCAI_BraTS2020_TrainingData"
                                  "/BraTS20_Training_001/BraTS20_Training_001_flair.nii")
    assert first.id == "BraTS20_Training_001" and experiment.labels.names == ["WT", "TC", "ET"]
    assert experiment.cross_validation.n_folds == 5 and experiment.scheduler.component.name == "ReduceLROnPlateau"
    experiment.model.build()
    experiment.loss.build()

    result = run("unet3d-train", "--config_filename", EXAMPLE, "--output_dir", tmp_path, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unet3d-train: error: ")
    assert "2345 data file(s) named in the config do not exist" in lines[0]
    assert "BraTS20_Training_001_flair.nii" in lines[0] and "(and 2340 more)" in lines[0]
    assert not any(tmp_path.iterdir())


def test_relative_paths_resolve_against_the_config_folder(tmp_path, monkeypatch):
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    settings = dict(TINY_SETTINGS, training_filenames=[{"image": ["data/a_t1.nii", "data/a_t2.nii"], "label": "../seg.nii"}])
    (config_dir / "c.json").write_text(json.dumps(settings))
    monkeypatch.chdir(tmp_path)
    case = load_experiment("configs/c.json").cases("training")[0]
    assert case.images == (str(config_dir / "data/a_t1.nii"), str(config_dir / "data/a_t2.nii"))
    assert case.label == str(tmp_path / "seg.nii")


def test_building_components_never_changes_the_config(tiny_config):
    experiment = load_experiment(tiny_config)
    frozen = copy.deepcopy(experiment.source)
    import torch

    model = experiment.model.build()
    optimizer = experiment.optimizer.build(model.parameters())
    experiment.scheduler.component.build(optimizer)
    experiment.loss.build()
    build_dataset(experiment.dataset, experiment.labels, [], "training")
    assert experiment.source == frozen
    assert isinstance(optimizer, torch.optim.Adam)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.pop("model"), "config key 'model' is missing"),
        (lambda c: c.update(loss="DiceLoss"), "config key 'loss' must be an object with a string 'name'"),
        (lambda c: c.update(training_filenames=[]), "config key 'training_filenames' must be a non-empty list"),
        (lambda c: c.update(training_filenames=[{"label": "x.nii"}]), "config key 'training_filenames'[0] must be an object with an 'image'"),
        (lambda c: c.update(test_filenames=[{"image": []}]), "config key 'test_filenames'[0].image must be a path"),
    ],
)
def test_malformed_sections_are_named(change, message):
    config = tiny_settings()
    change(config)
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        experiment_from_dict(config)


def test_a_config_from_a_pipe_is_read_once_and_its_paths_are_relative_to_the_working_folder(tiny_config, monkeypatch):
    import os
    import threading

    from unet3d.runs.workflow import work_dir_for

    read, write = os.pipe()
    threading.Thread(target=lambda: (os.write(write, tiny_config.read_bytes()), os.close(write))).start()
    monkeypatch.chdir(tiny_config.parent)
    experiment = load_experiment(f"/dev/fd/{read}")  # a second read of the pipe would find it empty
    os.close(read)
    first = experiment.cases("training")[0].images[0]
    assert os.path.isfile(first) and first == str((tiny_config.parent / json.loads(
        tiny_config.read_text())["training_filenames"][0]["image"][0]).resolve())
    assert work_dir_for(f"/dev/fd/{read}") == tiny_config.parent / str(read)
