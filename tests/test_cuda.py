"""The CUDA path: float16 training with gradient scaling, bfloat16 with torch.compile, the memory check, GPU
prediction against CPU prediction, the planner on a GPU. Skipped where no CUDA device is; run them on a GPU
machine with ``bash tools/test.sh tests/test_cuda.py``."""

import json
import math
import re

import nibabel
import numpy as np
import pytest
import torch

from helpers import assert_one_line_error, edit_config, read_log, run, train
from unet3d.config.experiment import load_experiment
from unet3d.data.synthetic import write_synthetic_nnunet
from unet3d.models.weights import load

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# dynamo's and inductor's console output: warnings, recompilation and symbolic-shape messages.
COMPILER_CHATTER = re.compile(r"torch\._dynamo|torch\._inductor|symbolic_shapes|recompil", re.IGNORECASE)


def test_float16_training_on_cuda_resumes_and_its_model_predicts_on_cpu_as_on_cuda(single_config, tmp_path):
    edit_config(single_config, lambda c: (
        c["model"].update(deep_supervision=True, deep_supr_num=1),
        c["training"].update(n_epochs=2, amp=True, clip_grad_norm=1.0)))
    work = single_config.parent / single_config.stem
    train(single_config, "--nthreads", "2", device="cuda")  # loader workers with pinned memory
    first = read_log(work / "training_log.csv")
    assert len(first) == 2 and all(math.isfinite(float(row["loss"])) for row in first)
    scaler = load(work / "checkpoint.pth")["scaler"]
    assert scaler and scaler["scale"] > 0  # float16 autocast with a working GradScaler, saved for the resume

    edit_config(single_config, lambda c: c["training"].update(n_epochs=3))
    resumed = train(single_config, device="cuda")
    assert "resuming" in resumed.stderr
    assert [row["epoch"] for row in read_log(work / "training_log.csv")] == ["1", "2", "3"]

    probabilities = {}
    for device in ("cpu", "cuda"):  # a model trained on a GPU is read on a CPU, as on a laptop
        output = tmp_path / device
        run("unet3d-predict", "--config_filename", single_config, "--model_filename", work / "model.pth",
            "--group", "validation", "--output_directory", output, "--device", device, "--save_probabilities")
        probabilities[device] = {path.name: np.asarray(nibabel.load(path).dataobj)
                                 for path in sorted(output.glob("*.nii.gz"))}
    assert probabilities["cpu"].keys() == probabilities["cuda"].keys() and len(probabilities["cpu"]) == 2
    for name, on_cpu in probabilities["cpu"].items():
        # CUDA predicts under float16 autocast: probabilities agree to its rounding, not bit for bit.
        np.testing.assert_allclose(probabilities["cuda"][name], on_cpu, atol=0.02, err_msg=name)


def test_bfloat16_compiled_training_on_cuda_keeps_the_compiler_quiet(single_config):
    edit_config(single_config, lambda c: c["training"].update(n_epochs=2, amp="bf16", compile=True))
    result = train(single_config, device="cuda", env={"PYTHONWARNINGS": "default"})
    assert not COMPILER_CHATTER.search(result.stderr), result.stderr
    rows = read_log(single_config.parent / single_config.stem / "training_log.csv")
    assert len(rows) == 2 and all(math.isfinite(float(row["val_loss"])) for row in rows)
    assert float(rows[0]["compile_time"]) > 0  # reported apart from the epoch's time


def test_a_step_the_gpu_cannot_hold_is_refused_before_training(single_config):
    edit_config(single_config, lambda c: (c["dataset"].update(desired_shape=[512, 512, 512]),
                                          c["training"].update(batch_size=16)))
    result = run("unet3d-train", "--config_filename", single_config, "--device", "cuda", check=False)
    assert_one_line_error(result, "config key 'dataset.desired_shape': a training step on (512, 512, 512) voxels",
                          "GiB free; lower dataset.desired_shape or training.batch_size")
    assert not (single_config.parent / single_config.stem / "training_log.csv").exists()


def test_more_processes_than_gpus_are_refused_in_one_line(single_config, brats_data, tmp_path):
    n = torch.cuda.device_count() + 1
    result = run("unet3d-train", "--config_filename", single_config, "--device", "cuda", "--ngpus", n, check=False)
    assert_one_line_error(result, f"--ngpus {n}: this machine has {n - 1} CUDA device(s)")
    result = run("unet3d-predict", "--config_filename", single_config, "--model_filename", tmp_path / "m.pth",
                 "--input_dir", brats_data / "test", "--output_directory", tmp_path / "out", "--device", "cuda",
                 "--ngpus", n, check=False)
    assert_one_line_error(result, f"--ngpus {n}: this machine has {n - 1} CUDA device(s)", prog="unet3d-predict")


def test_planner_on_cuda_plans_float16_and_its_config_trains(tmp_path):
    data = write_synthetic_nnunet(tmp_path / "Dataset001_Tiny", 6, shape=(32, 32, 12))
    output = tmp_path / "plans" / "task.json"
    run("unet3d-plan", "--input_dir", data, "--output_filename", output, "--device", "cuda", "--budget_minutes", "2")
    config = json.loads(output.read_text())
    assert config["training"]["amp"] == "fp16" and config["training"]["batch_size"] >= 2
    assert load_experiment(output).labels.values
    run("unet3d-train", "--config_filename", output, "--device", "cuda", "--fold", "1",
        "--set", "training.n_epochs=1", "--set", "training.samples_per_epoch=4")
    logs = list((output.parent / output.stem).rglob("training_log.csv"))
    assert len(logs) == 1 and len(read_log(logs[0])) == 1
