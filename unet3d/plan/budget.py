"""How a time budget divides into folds, epochs, steps and validations, and what a step needs in memory.

The seconds of a step and a window come from ``speed`` (the speed table, a measured step or
``--step_seconds``); everything here is arithmetic on them, so a plan's length follows its
inputs exactly and can be replayed. Memory is estimated from the feature maps (nnU-Net's
approach) and, on CUDA, checked against the measured step's peak.
"""

import dataclasses
import math

import numpy as np

# Seconds a fold spends outside its steps: building the model and loaders, and per epoch the checkpoint, the
# log and progress.png.
FOLD_OVERHEAD = 5.0
EPOCH_OVERHEAD = 1.5
TARGET_EPOCHS = 24
# Every fold validates at least this many epochs, whatever the budget: the best epoch is chosen among them.
MIN_VALIDATIONS = 5
# Of a fold's time, at most this share goes to validation (more where MIN_VALIDATIONS needs it).
VALIDATION_SHARE = 0.2
# Tensors kept per feature-map element for the backward pass (convolutions, normalisation, activation, skip
# connections, decoder), calibrated on DynUNet's measured CPU peak; nnU-Net estimates the same way.
TENSORS_PER_ELEMENT = 14
# One thread's CPU seconds to read and decompress a voxel of a gzip-compressed NIfTI file: 0.27 s for the five
# files of a BraTS case (benchmarks/plan_speed.py, docs/plan.md). Preprocessing reads, resamples and writes
# each case: three times that.
READ_SECONDS_PER_VOXEL = 6e-9
PREPROCESSING_PASSES = 3
# Passes of a prediction with test-time mirroring: every combination of flips of the three spatial axes.
MIRRORINGS = 8


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


def read_seconds(fingerprint):
    """Seconds to read one case (its channels and label map) of the median shape: from its size, not a timing."""
    return float(np.prod(fingerprint["median_shape"])) * (len(fingerprint["channels"]) + 1) * READ_SECONDS_PER_VOXEL


def run_costs(cost, n_cases, n_folds, n_test, case_windows, seconds_per_case, mirrorings=1):
    """``RunCosts`` of a run with ``n_folds`` folds over ``n_cases`` labelled cases (``n_test`` more to predict),
    a step's ``StepCost``, ``case_windows`` sliding windows per case, ``seconds_per_case`` to read one case and
    predictions averaged over ``mirrorings`` passes (``MIRRORINGS`` with test-time mirroring)."""
    n_validation = math.ceil(n_cases / n_folds)
    per_case = case_windows * cost.window_seconds
    # Cached once; then each prediction reads its case, resamples back and writes the label map.
    reading = PREPROCESSING_PASSES * seconds_per_case
    return RunCosts(preprocessing=(n_cases + n_test) * reading, validation_pass=n_validation * per_case,
                    predictions=(n_validation + n_test) * (per_case * mirrorings + reading))


def run_seconds(cost, costs, n_folds, n_epochs, per_epoch, interval):
    """The estimated seconds of a whole run: preprocessing, then per fold its epochs of ``per_epoch`` steps, a
    validation every ``interval`` epochs, the fold's overheads and its predictions."""
    validations = math.ceil(n_epochs / interval)
    return costs.preprocessing + n_folds * (n_epochs * (per_epoch * cost.step_seconds + EPOCH_OVERHEAD)
                                            + FOLD_OVERHEAD + costs.predictions + validations * costs.validation_pass)


def fold_schedule(budget_seconds, cost, costs, n_folds, max_steps=250_000):
    """``(steps, n_epochs, steps_per_epoch, validation_interval)`` of each fold within the budget, for a step's
    ``StepCost``.

    About ``TARGET_EPOCHS`` epochs (to choose the best among), fewer when their overhead would
    take over a tenth of the fold, never under ``MIN_VALIDATIONS``; epochs of at most 250 steps
    (nnU-Net's), and where they reach 250 as many more as the fold holds, up to 1000; validation
    taking at most ``VALIDATION_SHARE`` of the fold, but at least ``MIN_VALIDATIONS`` validated
    epochs. Every epoch's overhead and every validated epoch is counted, so that the run's
    estimate (``run_seconds``) stays within the budget. ``steps`` is 0 when the fold's time does
    not hold them and a step per epoch.
    """
    fold = (budget_seconds - costs.preprocessing) / n_folds - costs.predictions - FOLD_OVERHEAD
    n_epochs = max(MIN_VALIDATIONS, min(TARGET_EPOCHS, int(0.1 * max(fold, 0) / EPOCH_OVERHEAD)))
    steps, interval = fold_steps(fold, cost, costs, n_epochs, max_steps)
    if steps < n_epochs:
        return 0, n_epochs, 1, 1
    per_epoch = min(250, steps // n_epochs)
    while per_epoch == 250 and n_epochs < 1000:
        more_steps, more_interval = fold_steps(fold, cost, costs, n_epochs + 1, max_steps)
        if more_steps < per_epoch * (n_epochs + 1):
            break
        n_epochs, interval = n_epochs + 1, more_interval
    return per_epoch * n_epochs, n_epochs, per_epoch, interval


def fold_steps(fold, cost, costs, n_epochs, max_steps):
    """``(steps, validation interval)``: the training steps that ``fold`` seconds hold beside the overheads of
    ``n_epochs`` epochs and their validations, validated every ``interval`` epochs (and at the last)."""
    validations = n_epochs
    if costs.validation_pass:
        validations = max(MIN_VALIDATIONS, min(n_epochs, int(VALIDATION_SHARE * max(fold, 0) / costs.validation_pass)))
    # The interval that validates at least ``validations`` epochs (the last epoch always validates).
    interval = max(1, n_epochs // validations)
    training = fold - n_epochs * EPOCH_OVERHEAD - math.ceil(n_epochs / interval) * costs.validation_pass
    return min(max_steps, max(0, int(training / cost.step_seconds))), interval
