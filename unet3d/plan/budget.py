"""What a training step costs on the device, and how a time budget divides into folds, epochs and steps.

A step is timed, not guessed: the planned config's own training step (``train_step`` of its
``build_parts``) runs a few times, and forward passes as sliding-window inference runs them,
on random data of the patch's size. Memory is estimated from the feature maps (nnU-Net's approach) and, on
CUDA, checked against the step's measured peak.
"""

import dataclasses
import math
import time
import warnings

import numpy as np
import torch

from unet3d.train.parts import build_parts, random_batch
from unet3d.train.step import train_step

# A training step in a real run also loads, crops and augments its batch: time measured on random tensors is
# scaled by this.
DATA_OVERHEAD = 1.25
# Seconds a fold spends outside its steps: building the model and loaders, and per epoch the checkpoint, the
# log and progress.png.
FOLD_OVERHEAD = 5.0
EPOCH_OVERHEAD = 1.5
TARGET_EPOCHS = 24
# Of a fold's time, at most this share goes to validation.
VALIDATION_SHARE = 0.2
# Tensors kept per feature-map element for the backward pass (convolutions, normalisation, activation, skip
# connections, decoder), calibrated on DynUNet's measured CPU peak; nnU-Net estimates the same way.
TENSORS_PER_ELEMENT = 14


@dataclasses.dataclass(frozen=True)
class StepTiming:
    """Seconds of one training step and of one inference window, and the step's peak memory in bytes (CUDA only)."""

    step_seconds: float
    window_seconds: float
    peak_bytes: int = None


def time_step(experiment, device, repeats=3, sw_batch_size=4):
    """Time ``repeats`` training steps (after one warm-up) of ``experiment`` (its ``build_parts`` and ``train_step``,
    as training runs them) on random batches of its patch, and inference of ``sw_batch_size`` windows.

    The fastest repeat counts, as ``timeit`` takes it: other work on the machine only ever slows a step down,
    and the budget is planned for the machine's own speed.
    """
    torch.manual_seed(0)
    with warnings.catch_warnings():  # what the precision warns of is for training, not for timing it
        warnings.simplefilter("ignore")
        parts = build_parts(experiment, device)
    patch, batch = experiment.dataset.settings.patch_size, experiment.training.batch_size
    image, target = random_batch(experiment, experiment.in_channels, patch, batch, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = []
    parts.model.train()
    for _ in range(repeats + 1):
        start = time.perf_counter()
        train_step(parts, image, target)
        _synchronize(device)
        seconds.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    parts.model.eval()
    windows = torch.randn((sw_batch_size, *image.shape[1:]), device=device)
    forward = []
    with torch.no_grad(), parts.precision.autocast():
        for _ in range(3):
            start = time.perf_counter()
            parts.model(windows)
            _synchronize(device)
            forward.append(time.perf_counter() - start)
    return StepTiming(min(seconds[1:]) * DATA_OVERHEAD, min(forward) / sw_batch_size, peak)


def _synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def estimated_bytes(patch, strides, filters, batch, in_channels, amp):
    """The training step's memory, from the feature maps each level keeps for the backward pass."""
    element = 2 if amp else 4
    size, total = list(patch), batch * in_channels * int(np.prod(patch))
    for stride, width in zip(strides, filters):
        size = [math.ceil(s / d) for s, d in zip(size, stride)]
        total += TENSORS_PER_ELEMENT * batch * width * int(np.prod(size))
    return total * element


@dataclasses.dataclass(frozen=True)
class RunCosts:
    """The seconds a whole ``unet3d-train`` run spends outside its training steps, per its parts.

    Args:
        preprocessing: reading, resampling and caching every case once.
        validation_pass: one validation of a fold's validation cases.
        predictions: predicting a fold's validation and test cases after training.
    """

    preprocessing: float
    validation_pass: float
    predictions: float


def run_costs(timing, n_cases, n_folds, n_test, case_windows, seconds_per_case):
    """``RunCosts`` of a run with ``n_folds`` folds over ``n_cases`` labelled cases (``n_test`` more to predict),
    ``case_windows`` sliding windows per case and ``seconds_per_case`` to read one case."""
    n_validation = math.ceil(n_cases / n_folds)
    per_case = case_windows * timing.window_seconds
    # Cached once; then each prediction reads its case, resamples back and writes the label map.
    return RunCosts(preprocessing=(n_cases + n_test) * 3 * seconds_per_case,
                    validation_pass=n_validation * per_case,
                    predictions=(n_validation + n_test) * (per_case + 3 * seconds_per_case))


def run_seconds(timing, costs, n_folds, n_epochs, per_epoch, interval):
    """The estimated seconds of a whole run: preprocessing, then per fold its epochs of ``per_epoch`` steps, a
    validation every ``interval`` epochs, the fold's overheads and its predictions."""
    validations = math.ceil(n_epochs / interval)
    return costs.preprocessing + n_folds * (n_epochs * (per_epoch * timing.step_seconds + EPOCH_OVERHEAD)
                                            + FOLD_OVERHEAD + costs.predictions + validations * costs.validation_pass)


def fold_schedule(budget_seconds, timing, costs, n_folds, max_steps=250_000):
    """``(steps, n_epochs, steps_per_epoch, validation_interval)`` of each fold within the budget.

    About ``TARGET_EPOCHS`` epochs (to choose the best among), fewer when their overhead would
    take over a tenth of the fold; epochs of at most 250 steps (nnU-Net's), validation taking at
    most ``VALIDATION_SHARE`` of the fold.
    """
    fold = (budget_seconds - costs.preprocessing) / n_folds - costs.predictions - FOLD_OVERHEAD
    if fold <= 0:
        return 0, 1, 1, 1
    n_epochs = max(1, min(TARGET_EPOCHS, int(0.1 * fold / EPOCH_OVERHEAD)))
    validations = n_epochs
    if costs.validation_pass:
        validations = max(1, min(n_epochs, int(VALIDATION_SHARE * fold / costs.validation_pass)))
    training = fold - n_epochs * EPOCH_OVERHEAD - validations * costs.validation_pass
    steps = min(max_steps, max(0, int(training / timing.step_seconds)))
    per_epoch = min(250, max(1, steps // n_epochs))
    n_epochs = max(1, min(max(n_epochs, 1000 * (per_epoch == 250)), steps // per_epoch))
    return steps, n_epochs, per_epoch, max(1, math.ceil(n_epochs / validations))


def time_model(points):
    """A step's and a window's seconds as ``a + b * voxels``, fitted to measured ``(voxels, StepTiming)`` points
    (a fixed cost per step dominates small patches: the time is not proportional to the voxels)."""
    voxels = np.array([point[0] for point in points], float)

    def fit(values):
        values = np.array(values, float)
        if len(set(voxels)) < 2:
            return 0.0, values.mean() / voxels.mean()
        slope = max(0.0, np.polyfit(voxels, values, 1)[0])
        return max(0.0, float(np.mean(values - slope * voxels))), slope

    step = fit([timing.step_seconds for _, timing in points])
    window = fit([timing.window_seconds for _, timing in points])
    return lambda n: StepTiming(step[0] + step[1] * n, window[0] + window[1] * n)
