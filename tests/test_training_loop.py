"""The training loop: exact resume after a kill, signals, config changes, metrics, schedulers, precision."""

import math
import multiprocessing
import os
import random
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import assert_same_weights, edit_config, figures, read_log, run, start_training, wait_for
from unet3d.config.experiment import load_experiment
from unet3d.config.schema import parse_scheduler
from unet3d.data.loaders import EpochSamples, SeededSampler
from unet3d.models.weights import load
from unet3d.train.compilation import compile_requested
from unet3d.losses.deep_supervision import DeepSupervisedLoss
from unet3d.train.loop import fit
from unet3d.train.monitor import MetricMonitor
from unet3d.train.precision import Precision
from unet3d.train.random_state import RandomStates
from unet3d.train.schedulers import build_scheduler

CPU = torch.device("cpu")
WARMUP_THEN_POLYNOMIAL = {  # per batch: 2 batches an epoch
    "name": "SequentialLR", "milestones": [2], "step_per_batch": True,
    "schedulers": [{"name": "LinearLR", "start_factor": 0.25, "total_iters": 2},
                   {"name": "PolynomialLR", "total_iters": 6, "power": 1.0}],
}


def process_state(pid):
    """``(state, parent pid)`` from /proc, or None when the process is gone."""
    try:
        state, parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:2]
    except (OSError, IndexError):
        return None
    return state, int(parent)


def alive(pid):
    """Whether ``pid`` exists and is not a zombie."""
    found = process_state(pid)
    return found is not None and found[0] != "Z"


def child_pids(pid):
    """Live child processes of ``pid``."""
    pids = [int(path.name) for path in Path("/proc").iterdir() if path.name.isdigit()]
    return [child for child in pids if (process_state(child) or ("Z", 0))[1] == pid and alive(child)]


def test_killed_run_resumes_to_the_same_weights_and_log(single_config, tmp_path):
    edit_config(single_config, lambda c: (c.update(scheduler=WARMUP_THEN_POLYNOMIAL), c["training"].update(n_epochs=2)))
    straight = tmp_path / "straight"
    run("unet3d-train", "--config_filename", single_config, "--device", "cpu", "--output_dir", straight)
    edit_config(single_config, lambda c: c["training"].update(n_epochs=3))
    extended = run("unet3d-train", "--config_filename", single_config, "--device", "cpu", "--output_dir", straight)
    assert "resuming" in extended.stderr

    killed = tmp_path / "killed"
    process, _ = start_training(single_config, killed)
    wait_for(killed / "tiny" / "training_log.csv", process, rows=1)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    run("unet3d-train", "--config_filename", single_config, "--device", "cpu", "--output_dir", killed)

    expected, resumed = read_log(straight / "tiny" / "training_log.csv"), read_log(killed / "tiny" / "training_log.csv")
    assert [row["epoch"] for row in resumed] == ["1", "2", "3"]
    assert figures(resumed) == figures(expected)
    assert len({row["lr"] for row in resumed}) == 3  # the schedule moved, and resumed where it was
    assert_same_weights(straight / "tiny" / "model.pth", killed / "tiny" / "model.pth")
    assert_same_weights(straight / "tiny" / "model_best.pth", killed / "tiny" / "model_best.pth")
    saved = [load(path / "tiny" / "checkpoint.pth") for path in (straight, killed)]
    assert saved[0]["scheduler"]["last_epoch"] == saved[1]["scheduler"]["last_epoch"] == 6
    assert saved[0]["monitor"] == saved[1]["monitor"]


def test_channels_last_weights_train_like_the_default_resume_exactly_and_predict(single_config, tmp_path):
    from unet3d.train.parts import build_parts, random_batch
    from unet3d.train.step import train_step
    trained = {}
    for layout in (False, True):  # two steps each way from the same initialisation and batch
        edit_config(single_config, lambda c: c["training"].update(n_epochs=2, channels_last=layout))
        experiment = load_experiment(single_config)
        torch.manual_seed(0)
        parts = build_parts(experiment, CPU)
        batch = random_batch(experiment, experiment.in_channels, (16, 16, 16), 2)  # desired_shape
        trained[layout] = [train_step(parts, *batch).item() for _ in range(2)], parts.model.state_dict()
    weights = [p for p in parts.model.parameters() if p.dim() == 5]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in weights)
    assert trained[True][0] == pytest.approx(trained[False][0], rel=1e-4)  # the same sums, in another order
    for key, value in trained[False][1].items():
        assert torch.allclose(trained[True][1][key], value, atol=1e-5), key
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run("unet3d-train", "--config_filename", single_config, "--device", "cpu", "--output_dir", straight)
    edit_config(single_config, lambda c: c["training"].update(n_epochs=1))
    run("unet3d-train", "--config_filename", single_config, "--device", "cpu", "--output_dir", resumed)
    edit_config(single_config, lambda c: c["training"].update(n_epochs=2))
    assert "resuming" in run("unet3d-train", "--config_filename", single_config, "--device", "cpu",
                             "--output_dir", resumed).stderr
    assert figures(read_log(straight / "tiny" / "training_log.csv")) == figures(
        read_log(resumed / "tiny" / "training_log.csv"))
    assert_same_weights(straight / "tiny" / "model.pth", resumed / "tiny" / "model.pth")
    run("unet3d-predict", "--config_filename", single_config, "--model_filename", straight / "tiny" / "model.pth",
        "--group", "validation", "--output_dir", tmp_path / "predicted", "--device", "cpu")
    assert len(list((tmp_path / "predicted").glob("*.nii.gz"))) == 2


def test_sigterm_saves_the_last_epoch_and_releases_workers(single_config, tmp_path):
    edit_config(single_config, lambda c: c["training"].update(n_epochs=50, batch_size=1))
    process, stderr = start_training(single_config, tmp_path, "--nthreads", "2")
    wait_for(tmp_path / "tiny" / "training_log.csv", process, rows=1)
    workers = []
    while not workers and process.poll() is None:
        workers = child_pids(process.pid)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 128 + signal.SIGTERM
    assert stderr.read_text().strip().splitlines()[-1].startswith("unet3d-train: stopped by SIGTERM; rerun")
    assert workers and not [pid for pid in workers if alive(pid)]
    saved = load(tmp_path / "tiny" / "checkpoint.pth")
    rows = read_log(tmp_path / "tiny" / "training_log.csv")
    assert 1 <= saved["epoch"] < 50 and len(saved["rows"]) == saved["epoch"]
    assert [int(row["epoch"]) for row in rows] == list(range(1, saved["epoch"] + 1))
    assert not list((tmp_path / "tiny").glob(".tmp-*"))


def test_best_model_follows_a_maximized_metric(single_config):
    edit_config(single_config, lambda c: (c.pop("scheduler"), c["training"].update(
        n_epochs=3, metric_to_monitor="val_dice_mean", save_every_n_epochs=1)))
    work_dir = single_config.parent / "run"
    assert fit(load_experiment(single_config), work_dir, CPU) == 3
    rows = read_log(work_dir / "training_log.csv")
    dice = [float(row["val_dice_mean"]) for row in rows]
    best_epoch = dice.index(max(dice)) + 1
    assert load(work_dir / "checkpoint.pth")["monitor"]["best_epoch"] == best_epoch
    assert_same_weights(work_dir / "model_best.pth", work_dir / f"model_epoch{best_epoch}.pth")
    assert {"loss", "lr", "val_loss", "val_dice_WT", "val_dice_TC", "val_dice_ET", "val_dice_mean", "epoch_time",
            "data_time"} <= set(rows[0])
    assert (work_dir / "progress.png").read_bytes().startswith(b"\x89PNG")


def test_early_stopping_after_patience_epochs_without_improvement(single_config):
    # A constant learning rate never improves after the first epoch.
    edit_config(single_config, lambda c: (c.pop("scheduler"), c.pop("validation_filenames"), c["training"].update(
        n_epochs=10, metric_to_monitor="lr", metric_mode="min", early_stopping_patience=2, samples_per_epoch=2)))
    work_dir = single_config.parent / "run"
    assert fit(load_experiment(single_config), work_dir, CPU) == 3
    assert fit(load_experiment(single_config), work_dir, CPU) == 0
    assert len(read_log(work_dir / "training_log.csv")) == 3


def test_metric_monitor_counts_patience_exactly():
    monitor = MetricMonitor("val_dice_mean", "max", patience=2)
    stops = []
    for epoch, value in enumerate([0.1, 0.3, 0.3, 0.2, 0.4, 0.1, 0.1], start=1):
        monitor.update({"epoch": epoch, "val_dice_mean": value})
        stops.append(monitor.should_stop)
    assert stops == [False, False, False, True, False, False, True]
    assert (monitor.best_epoch, monitor.best_value) == (5, 0.4)


def test_loader_workers_are_released_after_an_error_in_the_loop(single_config, monkeypatch):
    edit_config(single_config, lambda c: c["training"].update(n_epochs=1, batch_size=1))
    config = load_experiment(single_config)
    before = set(child_pids(os.getpid()))
    steps = []

    def failing_step(self, closure=None):
        steps.append(child_pids(os.getpid()))
        raise RuntimeError("boom")

    monkeypatch.setattr(torch.optim.Adam, "step", failing_step)
    with pytest.raises(RuntimeError, match="boom"):
        fit(config, single_config.parent / "run", CPU, num_workers=2)
    assert set(steps[0]) - before, "the loader had no workers to release"
    assert set(child_pids(os.getpid())) <= before
    assert multiprocessing.active_children() == []


def test_deep_supervision_weighs_outputs_and_resizes_labels():
    loss = torch.nn.MSELoss()
    label = (torch.rand(2, 3, 8, 8, 8) > 0.5).float()
    full, half = torch.rand(2, 3, 8, 8, 8), torch.rand(2, 3, 4, 4, 4)
    smaller_label = torch.nn.functional.interpolate(label, size=(4, 4, 4), mode="nearest-exact")
    expected = 2 / 3 * loss(full, label) + 1 / 3 * loss(half, smaller_label)
    assert torch.allclose(DeepSupervisedLoss(loss)([full, half], label), expected)
    stacked = torch.stack([full, full.flip(2)], dim=1)  # MONAI DynUNet: (B, 1 + deep_supr_num, C, ...)
    assert torch.allclose(DeepSupervisedLoss(loss)(stacked, label),
                          2 / 3 * loss(full, label) + 1 / 3 * loss(full.flip(2), label))
    assert torch.equal(DeepSupervisedLoss(loss)(full, label), loss(full, label))


def test_deep_supervision_and_bf16_train_on_cpu(single_config):
    edit_config(single_config, lambda c: (
        c["model"].update(deep_supervision=True, deep_supr_num=1),
        c["training"].update(n_epochs=1, amp="bf16", clip_grad_norm=1.0)))
    work_dir = single_config.parent / "run"
    assert fit(load_experiment(single_config), work_dir, CPU) == 1
    row = read_log(work_dir / "training_log.csv")[0]
    assert math.isfinite(float(row["loss"])) and math.isfinite(float(row["val_loss"]))


def test_precision_modes_on_cpu():
    layer = torch.nn.Conv3d(1, 1, 3)
    bf16 = Precision("bf16", CPU)
    with bf16.autocast():
        assert layer(torch.rand(1, 1, 4, 4, 4)).dtype == torch.bfloat16
    assert not bf16.scaler.is_enabled()
    with pytest.warns(UserWarning, match="float32"):
        fp16 = Precision(True, CPU)
    assert fp16.dtype is None and not fp16.scaler.is_enabled()


def test_bf16_on_a_cpu_without_native_support_warns(monkeypatch):
    monkeypatch.setattr("unet3d.train.precision.cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bfloat16"):
        assert Precision("bf16", CPU).dtype is torch.bfloat16


def test_schedulers_by_name_nested_and_fed_the_metric_direction():
    optimizer = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0)
    spec = parse_scheduler(WARMUP_THEN_POLYNOMIAL, "scheduler", False)
    scheduler = build_scheduler(spec, optimizer)
    assert spec.step_per_batch and isinstance(scheduler, torch.optim.lr_scheduler.SequentialLR)
    assert "step_per_batch" in WARMUP_THEN_POLYNOMIAL
    plateau_spec = parse_scheduler({"name": "ReduceLROnPlateau", "patience": 1}, "scheduler", False)
    plateau = build_scheduler(plateau_spec, optimizer, mode="max")
    assert not plateau_spec.step_per_batch and plateau.mode == "max"


def test_random_states_survive_weights_only_loading(tmp_path):
    generator = torch.Generator().manual_seed(1)
    states = RandomStates(generator)
    torch.save(states.state_dict(), tmp_path / "rng.pth")

    def draws():
        return torch.rand(2).tolist(), torch.rand(2, generator=generator).tolist(), np.random.rand(2).tolist(), random.random()

    first = draws()
    states.load_state_dict(torch.load(tmp_path / "rng.pth", weights_only=True))
    assert draws() == first


def test_samples_per_epoch_repeat_the_shuffled_cases():
    samples = EpochSamples(list("abcd"), 10)
    samples.set_epoch(1)
    drawn = [samples[i] for i in range(len(samples))]
    assert len(drawn) == 10 and sorted(drawn[:4]) == list("abcd") and sorted(drawn[4:8]) == list("abcd")
    fewer = EpochSamples(list("abcd"), 3)
    fewer.set_epoch(1)
    assert len({fewer[i] for i in range(3)}) == 3


def test_seeded_samples_per_epoch_repeat_the_shuffled_cases_and_follow_the_epoch_seed():
    generator = torch.Generator()

    def epoch(number, **kwargs):
        generator.manual_seed(number)
        return list(SeededSampler(4, True, generator, samples=10, **kwargs))

    pairs = epoch(1)
    order = [index for index, _ in pairs]
    assert len(pairs) == 10 and sorted(order[:4]) == sorted(order[4:8]) == [0, 1, 2, 3] and len(set(order[8:])) == 2
    assert len({seed for _, seed in pairs}) == 10  # each sample its own augmentation
    assert epoch(1) == pairs != epoch(2)
    shares = [epoch(1, rank=rank, world_size=3) for rank in range(3)]
    assert [len(share) for share in shares] == [4, 4, 4]  # padded by repeating the start: equal batches
    assert [pair for i in range(4) for share in shares for pair in share[i:i + 1]][:10] == pairs


def test_compile_is_opt_in(monkeypatch):
    monkeypatch.delenv("UNET3D_COMPILE", raising=False)
    assert not compile_requested(False) and compile_requested(True)
    monkeypatch.setenv("UNET3D_COMPILE", "1")
    assert compile_requested(False)


def test_validation_during_training_can_use_the_first_cases_only(single_config):
    from unet3d import distributed
    from unet3d.train.loop import training_loaders

    edit_config(single_config, lambda c: c["training"].update(validation_cases=1))
    experiment = load_experiment(single_config)
    loaders = training_loaders(experiment, None, num_workers=0, pin_memory=False, context=distributed.Context())
    first = experiment.labelled_cases("validation")[0]
    assert len(loaders.validation.dataset) == 1 and len(experiment.labelled_cases("validation")) == 2
    assert [case["id"] for case in loaders.validation] == [[first.id]]
