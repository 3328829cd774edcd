"""Data-parallel training: two Gloo processes on CPU train like one process with the same global batch."""

import os
import signal

import pytest
import torch

from helpers import edit_config, read_log, start_training, train, wait_for
from unet3d.device import check_process_devices
from unet3d.errors import UserError
from unet3d.distributed import strip_flag

# Gradients are averaged over processes in another order than over one batch, so the
# figures agree to rounding, not bit for bit.
TOLERANCE = 1e-4
COMPARED = ("loss", "val_loss", "val_dice_WT", "val_dice_TC", "val_dice_ET")


@pytest.fixture
def three_epochs(single_config):
    """The single-model config with 3 epochs of batch size 2."""
    edit_config(single_config, lambda c: c["training"].update(n_epochs=3, batch_size=2, validation_batch_size=1))
    return single_config


def test_strip_flag():
    assert strip_flag(["--a", "1", "--ngpus", "2", "--b"], "--ngpus") == ["--a", "1", "--b"]
    assert strip_flag(["--ngpus=2", "--b"], "--ngpus") == ["--b"]


def test_more_cuda_processes_than_gpus_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match=r"^--ngpus 2: this machine has 1 CUDA device\(s\), one per process"):
        check_process_devices(torch.device("cuda"), 2)
    check_process_devices(torch.device("cuda"), 1)
    check_process_devices(torch.device("cpu"), 4)  # Gloo processes share the CPU


def test_two_processes_match_one_and_resume_after_a_kill(three_epochs, tmp_path):
    config = three_epochs
    train(config, "--output_dir", tmp_path / "one")
    single = read_log(tmp_path / "one" / "tiny" / "training_log.csv")

    # Two processes with half the batch each: the same global batch of 2.
    edit_config(config, lambda c: c["training"].update(batch_size=1))
    log_path = tmp_path / "two" / "tiny" / "training_log.csv"
    process, stderr = start_training(config, tmp_path / "two", "--ngpus", "2", start_new_session=True)
    wait_for(log_path, process, rows=1, timeout=300)
    assert process.poll() is None, stderr.read_text()
    os.killpg(process.pid, signal.SIGKILL)  # the launcher and both training processes
    process.wait()
    assert len(read_log(log_path)) < 3

    resumed = train(config, "--output_dir", tmp_path / "two", "--ngpus", "2")
    assert "resuming" in resumed.stderr
    double = read_log(log_path)
    assert [row["epoch"] for row in double] == ["1", "2", "3"]
    for one, two in zip(single, double):
        for column in COMPARED:
            assert float(two[column]) == pytest.approx(float(one[column]), abs=TOLERANCE), (one["epoch"], column)
    assert not list((tmp_path / "two").rglob(".tmp-*"))
