"""What a training step and an inference window cost: the network's work, a table of measured speeds per device
class, and the measurement of a planned config's own step.

A plan's structure (patch, network, batch, folds) is chosen with the work model and the table
only, so the same data, budget and target give the same structure on any run, busy machine or
not, and a GPU can be planned for from a machine without one. The step's measured time (or
``--step_seconds``) then sets only the length. On a CPU the step is measured as the CPU
seconds of one thread (``time.process_time``), which another process on another core does not
change, and scaled to the threads training will use.
"""

import dataclasses
import math
import time
import warnings

import numpy as np
import torch

from unet3d.train.parts import build_parts, random_batch
from unet3d.train.step import train_step

# A backward pass costs about twice the forward one.
TRAINING_PASSES = 3
# Threads of one CPU step run this share of the time one thread would take, per thread (measured: 2 threads ran
# the CPU recipe's step 1.63 times faster than one, on the 2-core reference machine).
PARALLEL_EFFICIENCY = 0.8
# A training step in a real run also loads, crops and augments its batch: a step on random tensors is scaled by this.
DATA_OVERHEAD = 1.25
# Steps measured: at least REPEATS, and more while they add up to under MEASURED_SECONDS (small steps vary more),
# at most MAX_REPEATS; the fastest counts.
REPEATS = 5
MEASURED_SECONDS = 2.0
MAX_REPEATS = 30


def forward_macs(model, patch):
    """Multiply-accumulates of one forward pass of a DynUNet ``model`` section on one ``patch``: every convolution
    of the encoder, the decoder (transposed convolution, then two convolutions on the concatenated skip) and the
    output layer; normalisation and activations are left to the speed table's fixed cost."""
    size, levels, channels, total = list(patch), [], model["in_channels"], 0
    for kernel, stride, width in zip(model["kernel_size"], model["strides"], model["filters"]):
        size = [math.ceil(a / b) for a, b in zip(size, stride)]
        voxels = int(np.prod(size))
        total += voxels * int(np.prod(kernel)) * (channels * width + width * width)
        levels.append((voxels, width))
        channels = width
    for level in range(len(levels) - 1, 0, -1):
        voxels, width = levels[level - 1]
        kernel = int(np.prod(model["kernel_size"][level]))
        total += voxels * levels[level][1] * width + voxels * kernel * 3 * width * width
    return total + levels[0][0] * levels[0][1] * model["out_channels"]


@dataclasses.dataclass(frozen=True)
class DeviceSpeed:
    """Seconds of a step or window from its multiply-accumulates, on one device class, as measured.

    Args:
        name: what the figures were measured on.
        step_seconds_fixed, step_macs_per_second: a training step is ``fixed + training MACs / rate``.
        window_seconds_fixed, window_macs_per_second: the same for one inference window.
        per_thread: the figures are one CPU thread's: ``threads`` divide them (``PARALLEL_EFFICIENCY``).
        source: where the figures come from, for the plan.
    """

    name: str
    step_seconds_fixed: float
    step_macs_per_second: float
    window_seconds_fixed: float
    window_macs_per_second: float
    per_thread: bool
    source: str

    def step_seconds(self, model, patch, batch, threads=1):
        """Seconds of a training step of ``batch`` patches (data loading included)."""
        work = TRAINING_PASSES * batch * forward_macs(model, patch)
        return DATA_OVERHEAD * (self.step_seconds_fixed + work / self.step_macs_per_second) / self._speedup(threads)

    def window_seconds(self, model, patch, threads=1):
        """Seconds of one sliding window of ``patch`` at inference."""
        work = forward_macs(model, patch)
        return (self.window_seconds_fixed + work / self.window_macs_per_second) / self._speedup(threads)

    def _speedup(self, threads):
        return 1.0 if not self.per_thread or threads <= 1 else threads * PARALLEL_EFFICIENCY


# Measured with benchmarks/step_speed.py (CPU) and benchmarks/gpu.py (the H200's recipe step and window,
# docs/performance.md); each line says where.
SPEEDS = {
    "cpu": DeviceSpeed("one thread of the 2-core x86-64 development machine, bfloat16 autocast", 0.005, 6.4e10,
                       0.001, 6.3e10, True, "benchmarks/step_speed.py: five planned patches from 32^3 to 96 x 80 x 64, "
                       "one thread's CPU seconds (docs/plan.md)"),
    "cuda": DeviceSpeed("NVIDIA H200, float16 autocast", 0.01, 5.1e13, 0.002, 8.4e13, False,
                        "the 1 mm recipe's step (batch 2 of 128^3, 29.75 samples/s) and window (0.14 s for the 18 "
                        "windows of a BraTS case) on one H200, docs/performance.md; the fixed costs are assumed"),
}


@dataclasses.dataclass(frozen=True)
class StepCost:
    """Seconds of one training step (data loading included) and one inference window, where they came from, and
    (CUDA, measured) the step's peak memory."""

    step_seconds: float
    window_seconds: float
    source: str
    peak_bytes: int = None


def training_threads():
    """The threads a CPU training run uses: PyTorch's default for this process."""
    return torch.get_num_threads()


def table_cost(speed, model, patch, batch, threads):
    """The ``StepCost`` of a config's step from the speed table."""
    return StepCost(speed.step_seconds(model, patch, batch, threads), speed.window_seconds(model, patch, threads),
                    f"the speed table's {speed.name}: {speed.source}")


def given_cost(step_seconds, speed, model, patch, batch, threads, source):
    """A ``StepCost`` of a step that takes ``step_seconds``: its window scaled by the table's window to step ratio."""
    ratio = speed.window_seconds(model, patch, threads) / speed.step_seconds(model, patch, batch, threads)
    return StepCost(step_seconds, step_seconds * ratio, source)


def measure_step(experiment, device, repeats=REPEATS):
    """``(seconds, peak bytes or None)`` of ``experiment``'s own training step (``build_parts`` and ``train_step``
    on random batches of its patch, ``dataset.batch_augmentation`` first when it is set), the fastest of
    ``repeats`` or more (up to ``MEASURED_SECONDS`` of steps) after a warm-up, data loading's share included.

    On a CPU: one thread's CPU seconds, divided as ``training_threads()`` threads share the work;
    another process on the machine changes neither. On CUDA: wall-clock seconds, synchronised.
    """
    threads = torch.get_num_threads()
    cpu = device.type == "cpu"
    if cpu:
        torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        with warnings.catch_warnings():  # what the precision warns of is for training, not for timing it
            warnings.simplefilter("ignore")
            parts = build_parts(experiment, device)
        patch, batch = experiment.dataset.settings.patch_size, experiment.training.batch_size
        image, label = random_batch(experiment, experiment.in_channels, patch, batch, device,
                                    label_values=bool(parts.augment))
        if not cpu:
            torch.cuda.reset_peak_memory_stats(device)
        clock = time.process_time if cpu else time.perf_counter
        seconds = []
        parts.model.train()
        while len(seconds) <= repeats or (sum(seconds[1:]) < MEASURED_SECONDS and len(seconds) <= MAX_REPEATS):
            start = clock()
            train_step(parts, *parts.augment(image, label, 0, len(seconds)))  # dataset.batch_augmentation's share
            if not cpu:
                torch.cuda.synchronize(device)
            seconds.append(clock() - start)
    finally:
        torch.set_num_threads(threads)
    best = min(seconds[1:])
    if cpu:
        best /= threads * PARALLEL_EFFICIENCY if threads > 1 else 1
        return DATA_OVERHEAD * best, None
    return DATA_OVERHEAD * best, torch.cuda.max_memory_allocated(device)
