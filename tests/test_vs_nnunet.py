"""benchmarks/vs_nnunet.py: the cases as nnU-Net's BraTS regions, the trainer variant fitted to a CPU budget, the labels
back; end to end with a real nnU-Net environment (slow, given by $NNUNET_BIN)."""

import json
import os
import subprocess
import sys
import types

import nibabel
import numpy as np
import pandas
import pytest
import torch

from helpers import REPO, load_module
from unet3d.data.brats import brats_cases
from unet3d.data.synthetic import write_synthetic_brats

benchmark = load_module(REPO / "benchmarks" / "vs_nnunet.py")

COST = {"startup": 30.0, "train_iteration": 6.0, "val_iteration": 2.0, "epoch_end": 1.5}


def test_cases_become_nnunet_regions_with_one_fold_of_the_same_training_and_validation_cases(tmp_path):
    groups = {}
    for group, count, seed in (("train", 2, 1), ("validation", 1, 2), ("test", 1, 3)):
        write_synthetic_brats(tmp_path / group, count, shape=(16, 16, 10), seed=seed, spacing=(2.0, 2.0, 2.0))
        groups[group] = brats_cases(tmp_path / group)
    root = tmp_path / "Dataset611_UNet3DBenchmark"
    splits = benchmark.write_nnunet_raw(root, groups)

    assert splits == [{"train": ["train_BraTS20_Training_001", "train_BraTS20_Training_002"],
                       "val": ["validation_BraTS20_Training_001"]}]
    description = json.loads((root / "dataset.json").read_text())
    assert description["labels"] == {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3],
                                     "enhancing tumor": [3]}
    assert description["regions_class_order"] == [1, 2, 3] and description["numTraining"] == 3
    assert description["channel_names"] == {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"}
    assert sorted(p.name for p in (root / "imagesTs").iterdir()) == [f"BraTS20_Training_001_000{c}.nii.gz"
                                                                      for c in range(4)]
    assert len(list((root / "imagesTr").iterdir())) == 12
    t1ce = nibabel.load(root / "imagesTr" / "train_BraTS20_Training_002_0002.nii.gz")
    assert np.array_equal(t1ce.dataobj, nibabel.load(groups["train"][1]["image"][2]).dataobj)

    original = nibabel.load(groups["validation"][0]["label"])
    converted = nibabel.load(root / "labelsTr" / "validation_BraTS20_Training_001.nii.gz")
    brats, nnunet = np.asarray(original.dataobj), np.asarray(converted.dataobj)
    assert np.allclose(converted.affine, original.affine) and converted.get_data_dtype() == np.uint8
    for before, after in ((0, 0), (2, 1), (1, 2), (4, 3)):  # edema 1, necrosis 2, enhancing tumour 3
        assert (brats == before).any() and np.array_equal(brats == before, nnunet == after)


def test_nnunet_predictions_come_back_as_brats_labels(tmp_path):
    values = np.array([[[0, 1, 2, 3]]], np.uint8)
    (tmp_path / "nnunet").mkdir()
    nibabel.save(nibabel.Nifti1Image(values, np.diag([2.0, 2.0, 2.0, 1.0])), tmp_path / "nnunet" / "case_7.nii.gz")
    (tmp_path / "nnunet" / "plans.json").write_text("{}")
    benchmark.write_brats_predictions(tmp_path / "nnunet", tmp_path / "brats")
    assert [p.name for p in (tmp_path / "brats").iterdir()] == ["case_7.nii.gz"]
    back = nibabel.load(tmp_path / "brats" / "case_7.nii.gz")
    assert np.asarray(back.dataobj).ravel().tolist() == [0, 2, 1, 4] and back.header.get_zooms() == (2.0, 2.0, 2.0)
    brats = np.array([0, 1, 2, 4], np.uint8)
    assert np.array_equal(benchmark.to_brats_labels(benchmark.to_nnunet_labels(brats)), brats)


def epoch_cost(iterations, val_iterations):
    return COST["epoch_end"] + iterations * COST["train_iteration"] + val_iterations * COST["val_iteration"]


@pytest.mark.parametrize("budget_minutes", [10, 30, 100, 1000])
def test_training_length_fits_the_budget_in_nnunet_proportions(budget_minutes):
    epochs, iterations, val_iterations = benchmark.training_length(COST, budget_minutes * 60)
    used = COST["startup"] + COST["epoch_end"] + epochs * epoch_cost(iterations, val_iterations)
    assert used <= budget_minutes * 60
    assert used + epoch_cost(iterations, val_iterations) > budget_minutes * 60 * 0.9  # most of it is used
    assert 2 <= epochs / iterations <= 6  # about nnU-Net's 1000 epochs of 250 iterations: 4 to 1
    assert val_iterations == max(1, round(iterations / 5))


def test_training_length_stays_within_nnunets_own_and_at_least_one_iteration():
    assert benchmark.training_length(COST, 1e9) == (1000, 250, 50)
    assert benchmark.training_length(COST, 10) == (1, 1, 1)  # less than the start-up: one iteration, then stopped


@pytest.fixture
def fake_nnunet(monkeypatch):
    """An nnunetv2 package whose nnUNetTrainer only keeps its output folder, so a variant's module can be run."""
    class Trainer:
        def __init__(self, plans, configuration, fold, dataset_json, device):
            self.output_folder, self.current_epoch, self.printed = plans["output_folder"], 0, []

        def print_to_log_file(self, *args, **kwargs):
            self.printed.append(" ".join(map(str, args)))

        def on_train_epoch_start(self):
            pass

        def on_train_epoch_end(self, outputs):
            pass

        def on_validation_epoch_end(self, outputs):
            pass

        def on_epoch_end(self):
            self.current_epoch += 1

        def save_checkpoint(self, filename):
            with open(filename, "w") as output:
                output.write("weights")

    for name in ("nnunetv2", "nnunetv2.training", "nnunetv2.training.nnUNetTrainer"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    module = types.ModuleType("nnunetv2.training.nnUNetTrainer.nnUNetTrainer")
    module.nnUNetTrainer = Trainer
    monkeypatch.setitem(sys.modules, module.__name__, module)


def test_trainer_variant_sets_nnunets_length_and_logs_the_cpu_time_of_its_epochs(tmp_path, fake_nnunet):
    length = benchmark.training_length(COST, 30 * 60)
    name = benchmark.trainer_name(*length)
    assert name == f"nnUNetTrainerCPUBudget_{length[0]}x{length[1]}v{length[2]}"
    source = benchmark.trainer_source(name, *length, threads=torch.get_num_threads())
    namespace = {}
    exec(compile(source, f"{name}.py", "exec"), namespace)
    trainer = namespace[name]({"output_folder": str(tmp_path)}, "3d_fullres", 0, {}, torch.device("cpu"))
    assert (trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch) == length
    for _ in range(2):
        trainer.on_train_epoch_start()
        sum(i * i for i in range(2_000_000))  # the training iterations' CPU time
        trainer.on_train_epoch_end([])
        trainer.on_validation_epoch_end([])
        trainer.on_epoch_end()
    trainer.save_checkpoint(str(tmp_path / "checkpoint_best.pth"))
    trainer.perform_actual_validation()
    assert trainer.printed == ["final validation skipped: the benchmark scores held-out cases itself"]

    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_best.pth", "cpu_seconds.json"]
    cpu_log = json.loads((tmp_path / "cpu_seconds.json").read_text())
    assert [(row["epoch"], row["phase"]) for row in cpu_log] == [
        (epoch, phase) for epoch in (0, 1) for phase in ("start", "trained", "validated", "end")]
    seconds = [row["cpu_seconds"] for row in cpu_log]
    assert seconds == sorted(seconds) and seconds[0] > 0
    costs = benchmark.epoch_costs(cpu_log)
    assert costs["train"] > 0.05 and costs["startup"] >= seconds[0]
    per_iteration = benchmark.calibrated_cost(costs, 5, 1)
    assert per_iteration["train_iteration"] == pytest.approx(costs["train"] / 5)


def test_cpu_time_of_a_process_tree_counts_its_children():
    busy = "import time; end = time.process_time() + 0.6\nwhile time.process_time() < end: pass\ntime.sleep(30)"
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; subprocess.run([sys.executable, "
                               f"'-c', {busy!r}])"])
    try:
        deadline = 0
        while benchmark.process_tree_cpu_seconds(parent.pid) < 0.6 and deadline < 100:
            subprocess.run(["sleep", "0.1"])
            deadline += 1
        assert benchmark.process_tree_cpu_seconds(parent.pid) >= 0.6  # the grandchild's, the parent only waits
        assert benchmark.recipe.process_cpu_seconds(parent.pid) < 0.5
    finally:
        parent.kill()
        parent.wait()


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("NNUNET_BIN"), reason="needs $NNUNET_BIN, an nnU-Net v2 environment's bin/")
def test_both_tools_train_predict_and_are_scored_at_a_tiny_size(tmp_path):
    command = [sys.executable, REPO / "benchmarks" / "vs_nnunet.py", "--output_dir", tmp_path, "--cpu_minutes", "0.5",
               "--nnunet_budgets", "1", "--n_train", "2", "--n_validation", "1", "--n_test", "1", "--spacing", "4",
               "--calibration_iterations", "1", "--tta", "no tta", "--set", "dataset.patch_size=[32, 32, 32]",
               "--set", "training.samples_per_epoch=4"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(command, check=True, env=env, capture_output=True)
    table = pandas.read_csv(tmp_path / "results.csv")
    assert table["tool"].tolist() == ["unet3d", "nnU-Net (no tta)"]
    assert table[["dice_WT", "dice_TC", "dice_ET"]].notna().all().all()
    assert table["iterations_per_epoch"].tolist()[0] == 2  # 4 samples per epoch, 2 per batch
    assert table["stopped_by_budget"].tolist()[0]  # unet3d-train starts up and ends its first epoch even so
    assert table["train_cpu_min"].tolist()[1] < 0.5 + 0.05  # nnU-Net: planned to fit, stopped if not
    first = (tmp_path / "results.csv").read_text()
    subprocess.run(command, check=True, env=env, capture_output=True)  # cached: nothing trained or predicted again
    assert (tmp_path / "results.csv").read_text() == first


def test_an_output_folder_is_reused_only_with_the_same_cases_and_settings(tmp_path):
    args = benchmark.parse_args(["--output_dir", str(tmp_path), "--spacing", "3", "--skip_nnunet"])
    benchmark.check_settings(args)
    benchmark.check_settings(benchmark.parse_args(["--output_dir", str(tmp_path), "--spacing", "3", "--seeds", "3"]))
    with pytest.raises(SystemExit, match="--spacing 3.0: give those or another --output_dir"):
        benchmark.check_settings(benchmark.parse_args(["--output_dir", str(tmp_path)]))
