"""The recommended BraTS configs and the synthetic cases the recipe benchmark trains on."""

import json
import subprocess
import sys

import nibabel
import numpy as np
import pytest
import torch

from helpers import REPO, load_module
from unet3d.config.experiment import load_experiment
from unet3d.data.synthetic import synthetic_case, write_synthetic_brats
from unet3d.runs.workflow import build_components
from unet3d.train.schedulers import build_scheduler

EXAMPLES = REPO / "examples" / "brats2020"
RECIPES = ["cpu_recipe_config.json", "brats2020_recipe_config.json"]


@pytest.mark.parametrize("name", RECIPES)
def test_recommended_configs_build_and_their_schedule_spans_the_training(name):
    experiment = load_experiment(EXAMPLES / name)
    build_components(experiment)
    config = experiment.source
    training, scheduler = config["training"], config["scheduler"]
    assert config["loss"] == {"name": "DiceCELoss", "sigmoid": True, "batch": True}
    assert config["model"]["deep_supervision"] and config["dataset"]["normalization_kwargs"]["nonzero"]
    # The warm-up plus the polynomial decay last exactly as many optimizer steps as training does.
    steps = training["n_epochs"] * training["samples_per_epoch"] // training["batch_size"]
    assert scheduler["step_per_batch"] and [s["total_iters"] for s in scheduler["schedulers"]] == ["auto", "auto"]
    optimizer = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0)
    warmup, decay = build_scheduler(experiment.scheduler, optimizer, length=steps)._schedulers
    assert scheduler["milestones"] == [warmup.total_iters] and warmup.total_iters + decay.total_iters == steps


def test_make_synthetic_data_spacing_covers_the_brats_field_of_view(tmp_path):
    subprocess.run([sys.executable, EXAMPLES / "make_synthetic_data.py", "--output_dir", tmp_path, "--n_cases", "1",
                    "--spacing", "2"], check=True, capture_output=True)
    seg = nibabel.load(tmp_path / "BraTS20_Training_001" / "BraTS20_Training_001_seg.nii.gz")
    assert seg.shape == (120, 120, 78)
    assert seg.header.get_zooms() == (2.0, 2.0, 2.0)
    flair = nibabel.load(tmp_path / "BraTS20_Training_001" / "BraTS20_Training_001_flair.nii.gz")
    assert np.allclose(flair.affine, seg.affine)


def test_synthetic_cases_are_nested_off_centre_and_a_pure_function_of_the_seed(tmp_path):
    shape = (40, 40, 26)
    images, label = synthetic_case(shape, np.random.default_rng([0, 1]))
    again, label_again = synthetic_case(shape, np.random.default_rng([0, 1]))
    assert np.array_equal(label, label_again) and all(np.array_equal(images[m], again[m]) for m in images)
    assert set(np.unique(label)) == {0, 1, 2, 4}
    whole, core, enhancing = label > 0, np.isin(label, (1, 4)), label == 4
    assert whole.sum() > core.sum() > enhancing.sum() > 0
    centre = [np.argwhere(region).mean(axis=0) for region in (whole, core)]
    assert np.linalg.norm(centre[0] - centre[1]) > 0.5  # the core is not centred in the whole tumour

    folders = write_synthetic_brats(tmp_path, 4, shape=(20, 20, 14), seed=3, spacing=(2.0, 2.0, 2.0))
    labels = [np.asarray(nibabel.load(f / f"{f.name}_seg.nii.gz").dataobj) for f in folders]
    assert not (labels[3] == 4).any() and all((lab == 4).any() for lab in labels[:3])  # every 4th: no ET


def test_the_recipe_benchmark_trains_one_model_or_the_configs_folds_over_training_and_validation(tmp_path):
    benchmark = load_module(REPO / "benchmarks" / "recipe.py", "recipe_benchmark")
    folders = {}
    for group, count, seed in (("train", 3, 1), ("validation", 1, 2), ("test", 1, 3)):
        write_synthetic_brats(tmp_path / group, count, shape=(16, 16, 10), seed=seed, spacing=(2.0, 2.0, 2.0))
        folders[group] = tmp_path / group
    template = json.loads((EXAMPLES / "cpu_recipe_config.json").read_text())

    train, _ = benchmark.run_configs(template, folders, 7, ["training.n_epochs=3"], tmp_path / "one")
    one = load_experiment(train)
    assert one.cross_validation is None and one.training.seed == 7 and one.training.n_epochs == 3
    assert [len(one.cases(group)) for group in ("training", "validation")] == [3, 1]

    train, test = benchmark.run_configs(template, folders, 7, [], tmp_path / "folds", cross_validation=True)
    folds = load_experiment(train)
    assert folds.cross_validation.n_folds == 2 and "validation" not in folds.groups
    ids = [case.id for case in folds.cases("training")]
    assert ids == ["BraTS20_Training_001", "BraTS20_Training_002", "BraTS20_Training_003",
                   "validation_BraTS20_Training_001"]
    assert [case.id for case in load_experiment(test).cases("test")] == ["BraTS20_Training_001"]
    with pytest.raises(SystemExit, match="no cross_validation section"):
        benchmark.run_configs(template, folders, 7, ["cross_validation=null"], tmp_path / "none", cross_validation=True)
