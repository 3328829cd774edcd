"""Fault injection: SIGKILL a short training at random moments, and inside checkpoint writes.

After each kill every file on disk must read cleanly; rerunning the same command resumes
and ends with the log and weights of a run that was never interrupted. Three trials run
by default; ``pytest -m slow tests/test_fault_injection.py`` runs 24 more.
"""

import errno
import os
import random
import signal
import sys
import time

import pytest

from helpers import (assert_same_weights, edit_config, figures, read_log, start_training, train, wait_for,
                     write_config)
import unet3d.atomic as atomic
from unet3d.models.weights import load
from unet3d.scripts.train import main as train_main

# Runs unet3d-train; UNET3D_TEST_PAUSE="<os function>:<file name or empty>:<n>" makes the
# n-th matching call of os.fsync (the temporary file is written) or os.replace (about to
# be renamed) inside unet3d.atomic touch UNET3D_TEST_MARKER and wait to be killed.
LAUNCHER = """
import os, sys, time
import unet3d.atomic as atomic

function, target, occurrence = os.environ["UNET3D_TEST_PAUSE"].split(":")
real, calls = getattr(os, function), []

def paused(*args):
    if not target or str(args[-1]).endswith(target):
        calls.append(args)
        if len(calls) == int(occurrence):
            open(os.environ["UNET3D_TEST_MARKER"], "w").close()
            time.sleep(600)
    return real(*args)

class PatchedOs:
    def __getattr__(self, name):
        return paused if name == function else getattr(os, name)

atomic.os = PatchedOs()
from unet3d.scripts.train import main
main(sys.argv[1:])
"""
N_EPOCHS = 2
WRITE_TRIALS = [("replace", "checkpoint.pth", 1), ("replace", "model.pth", 2)]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, brats_data):
    """A 3-epoch single-model config and the work folder of its uninterrupted run."""
    root = tmp_path_factory.mktemp("faults")
    config = write_config(root / "tiny.json", brats_data / "train")

    def change(c):
        del c["cross_validation"]
        c["training_filenames"] = c["training_filenames"][:2]  # no validation group: nothing to predict after training
        c["training"].update(n_epochs=N_EPOCHS, save_every_n_epochs=1, save_last_n_models=1)
    edit_config(config, change)
    train(config, "--output_dir", root / "reference")
    return config, root / "reference" / "tiny"


def assert_readable(work_dir):
    """Every checkpoint and weight file loads (a killed writer's ``.tmp-*`` aside), and the CSV agrees with the checkpoint."""
    for path in work_dir.glob("[!.]*.pth"):
        load(path)
    if (work_dir / "checkpoint.pth").is_file():
        rows = load(work_dir / "checkpoint.pth")["rows"]
        assert len(read_log(work_dir / "training_log.csv")) in (len(rows), len(rows) - 1)


def trial(experiment, output_dir, pause=None, delay=None):
    """Start a run, kill it at the pause (or ``delay`` seconds into training), check, resume, compare."""
    config, reference = experiment
    output_dir = output_dir / "run"
    marker = output_dir / "paused"
    process, _ = start_training(config, output_dir, program=(sys.executable, "-c", LAUNCHER),
                                env={"UNET3D_TEST_PAUSE": pause or "fsync::0", "UNET3D_TEST_MARKER": str(marker)})
    work_dir = output_dir / "tiny"
    wait_for(marker if pause else work_dir / "training_log.csv", process, timeout=300)
    if delay:
        time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    # A random delay may outlast the run (status 0): an uninterrupted rerun, still compared.
    assert process.wait() in ((-signal.SIGKILL,) if pause else (-signal.SIGKILL, 0))
    assert_readable(work_dir)
    train(config, "--output_dir", output_dir)
    assert figures(read_log(work_dir / "training_log.csv")) == figures(read_log(reference / "training_log.csv"))
    for name in ("model.pth", "model_best.pth", f"model_epoch{N_EPOCHS}.pth"):
        assert_same_weights(reference / name, work_dir / name)
    assert not list(work_dir.glob(".tmp-*")), "a killed writer's temporary file was left behind"
    assert [p.name for p in work_dir.glob("model_epoch*.pth")] == [f"model_epoch{N_EPOCHS}.pth"]


@pytest.mark.parametrize("pause", [":".join(map(str, t)) for t in WRITE_TRIALS])
def test_kill_inside_a_checkpoint_write_resumes_exactly(experiment, tmp_path, pause):
    trial(experiment, tmp_path, pause=pause)


def test_kill_at_a_random_moment_resumes_exactly(experiment, tmp_path):
    trial(experiment, tmp_path, delay=random.Random(7).uniform(0.2, 2.0))


@pytest.mark.slow
@pytest.mark.parametrize("number", range(24))
def test_many_kills(experiment, tmp_path, number):
    chooser = random.Random(number)
    if number % 2:
        function, target = chooser.choice([("replace", "checkpoint.pth"), ("replace", "model.pth"),
                                           ("replace", "training_log.csv"), ("fsync", "")])
        limit = N_EPOCHS if target else 4 * N_EPOCHS
        trial(experiment, tmp_path, pause=f"{function}:{target}:{chooser.randint(1, limit)}")
    else:
        trial(experiment, tmp_path, delay=chooser.uniform(0.0, 2.0))


class FailingOs:
    """``unet3d.atomic``'s ``os`` whose fsync fails with ``code`` for the ``occurrence``-th file ending in ``suffix``."""

    def __init__(self, code, suffix, occurrence=1):
        self.code, self.suffix, self.left = code, suffix, occurrence

    def fsync(self, fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(self.suffix):
            self.left -= 1
            if self.left == 0:
                raise OSError(self.code, os.strerror(self.code))
        return os.fsync(fd)

    def __getattr__(self, name):
        return getattr(os, name)


def test_a_full_disk_at_checkpoint_time_keeps_the_last_checkpoint_and_the_rerun_resumes_exactly(
        experiment, tmp_path, monkeypatch, capsys):
    config, reference = experiment
    args = ["--config_filename", str(config), "--device", "cpu", "--output_dir", str(tmp_path)]
    monkeypatch.setattr(atomic, "os", FailingOs(errno.ENOSPC, "checkpoint.pth", occurrence=2))
    with pytest.raises(SystemExit) as stop:
        train_main(args)
    monkeypatch.undo()
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1 and "Traceback" not in lines[0]
    assert lines[0].endswith("checkpoint.pth: No space left on device (nothing was replaced: make room or make "
                             "the folder writable, then rerun)")
    work_dir = tmp_path / "tiny"
    assert load(work_dir / "checkpoint.pth")["epoch"] == 1 and not list(work_dir.glob(".tmp-*"))
    train_main(args)
    assert figures(read_log(work_dir / "training_log.csv")) == figures(read_log(reference / "training_log.csv"))
    for name in ("model.pth", "model_best.pth", f"model_epoch{N_EPOCHS}.pth"):
        assert_same_weights(reference / name, work_dir / name)


def test_a_full_cache_in_a_loader_worker_is_one_line_naming_the_file(brats_data, tmp_path, monkeypatch):
    from unet3d.config.experiment import make_case
    from unet3d.config.labels import LabelScheme
    from unet3d.data.dataset import SegmentationDataset
    from unet3d.data.loaders import batches, make_loader
    from unet3d.errors import UserError

    case = make_case({"image": sorted(str(p) for p in (brats_data / "train").glob("*_001/*_[ft]*.nii.gz")),
                      "label": str(next((brats_data / "train").glob("*_001/*_seg.nii.gz")))})
    dataset = SegmentationDataset([case], labels=LabelScheme.brats(), cache_dir=tmp_path / "cache", split="validation")
    monkeypatch.setattr(atomic, "os", FailingOs(errno.EDQUOT, "image.b2nd"))  # the forked worker inherits it
    with pytest.raises(UserError) as error, batches(make_loader(dataset, 1, False, num_workers=1)) as iterator:
        next(iterator)
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message and "worker" not in message
    assert message.startswith(str(tmp_path / "cache")) and "/image.b2nd: Disk quota exceeded" in message
