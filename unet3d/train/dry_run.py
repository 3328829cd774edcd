"""A dry run before any training: one real step of every component, on tiny tensors with the real channels.

``dry_run`` builds the parts of the run as training does (``build_parts``) and runs the
training step (``train_step``) on the smallest spatial size the network accepts, steps the
schedule through the run's length, then passes one validation window through the
``Inferer`` and the decoding. What fails becomes one line naming the config section and
what it was fed. Forward hooks count the activations of
that step; scaled to the real patch (or volume) they estimate the memory a step needs,
and a run that cannot fit on its device is refused with the figures.

Nothing of the dry run reaches training: it runs on CPU with its own objects, and the
random states of Python, NumPy and torch are restored afterwards.
"""

import math
import os
import random
from contextlib import contextmanager

import numpy as np
import torch

from unet3d.data.formats import image_channels, read_header
from unet3d.errors import UserError
from unet3d.models.inferer import Inferer, capped_window
from unet3d.train.parts import build_parts, random_batch
from unet3d.train.schedulers import step_scheduler
from unet3d.train.step import train_step

# The largest cube tried when looking for the smallest input the network accepts (a 64^3 step takes
# about a second on a CPU); a network that needs more is tried at the real size.
LARGEST_TRIED = 64
# Schedules longer than this are stepped this far only: 10^6 steps take about 7 s.
MAX_SIMULATED_STEPS = 10**6
GIB = 2**30


class StepFailed(Exception):
    """A part of the dry run failed; ``section`` is the config section to name."""

    def __init__(self, section, message):
        super().__init__(f"{section}: {message}")


@contextmanager
def stage(section, what):
    """Turn any exception inside into a ``StepFailed`` naming ``section`` and what it was fed."""
    try:
        yield
    except (UserError, StepFailed):
        raise
    except Exception as error:  # any library error is the config's mistake here
        detail = " ".join(str(error).split())[:300]
        raise StepFailed(section, f"{what}: {type(error).__name__}: {detail}") from error


@contextmanager
def random_states_kept():
    """Restore Python's, NumPy's and torch's (CPU and CUDA) random states on the way out."""
    python, numpy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []):
        try:
            yield
        finally:
            random.setstate(python)
            np.random.set_state(numpy)


def shape_text(value):
    """``(1, 3, 16, 16, 16)`` for a tensor, one per item for a list of them."""
    if isinstance(value, torch.Tensor):
        return str(tuple(value.shape))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(shape_text(v) for v in value) + "]"
    return type(value).__name__


def training_shape(experiment, case):
    """The spatial size of a training input: the patch, else the resized volume, else the case's own shape."""
    settings = experiment.dataset.settings
    if settings is not None and settings.patch_size is not None:
        return tuple(settings.patch_size)
    if settings is not None and settings.resample and settings.desired_shape is not None:
        return tuple(settings.desired_shape)
    return tuple(read_header(case.images[0]).shape[:3])


def sizes_to_try(shape):
    """Growing cubes of 4, 8, 16, ... voxels, each axis at most the real one's, up to ``LARGEST_TRIED``."""
    sizes, side = [], 4
    while side <= LARGEST_TRIED:
        size = tuple(min(side, axis) for axis in shape)
        sizes.append(size)
        if size == tuple(shape):
            break
        side *= 2
    return sizes


def forward_and_loss(experiment, model, loss_function, image, target):
    """The training forward pass and loss, each failure naming its section."""
    with stage("model", f"{experiment.model.name} got input {shape_text(image)}"):
        output = model(image)
    with stage("loss", f"{experiment.loss.name} got input {shape_text(output)} and target {shape_text(target)}"):
        loss = loss_function(output, target)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise StepFailed("loss", f"{experiment.loss.name} returned {shape_text(loss)}, not a single number "
                                 "(a loss reduces to one value)")
    if not torch.isfinite(loss):
        raise StepFailed("loss", f"{experiment.loss.name} returned {loss.item()} for input {shape_text(output)} and "
                                 f"target {shape_text(target)} (random logits and every label value)")
    return loss


def smallest_step(experiment, model, loss_function, channels, shape):
    """``(image, target)`` of the smallest size whose forward pass and loss work, the largest size's error otherwise."""
    sizes = sizes_to_try(shape)
    for size in sizes:
        image, target = random_batch(experiment, channels, size)
        try:
            with torch.no_grad():
                forward_and_loss(experiment, model, loss_function, image, target)
            return image, target
        except StepFailed:
            if size == sizes[-1]:
                raise


def check_gradient(experiment, model, loss_function, image, target):
    """Refuse a loss without a gradient (nothing would train), naming the loss rather than the backward pass."""
    if not forward_and_loss(experiment, model, loss_function, image, target).requires_grad:
        raise StepFailed("loss", f"{experiment.loss.name} returned a value without a gradient for input "
                                 f"{shape_text(image)}: nothing would train")


def activation_bytes(model, step):
    """Bytes of the distinct tensors the leaf modules of ``model`` output while ``step()`` runs."""
    seen = {}

    def count(module, inputs, output):
        for tensor in output if isinstance(output, (list, tuple)) else [output]:
            if isinstance(tensor, torch.Tensor):
                seen[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()

    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    try:
        step()
    finally:
        for hook in hooks:
            hook.remove()
    return sum(seen.values())


def available_memory(device):
    """Free bytes on ``device``: CUDA's free memory, else the RAM available to new processes."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as stream:
            fields = dict(line.split(":", 1) for line in stream)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_memory(experiment, activations, state_bytes, small, real, device):
    """Refuse a step at the real size whose estimate (activations scaled by voxels and batch, plus the
    parameters, gradients and optimizer state) exceeds what ``device`` has free."""
    settings = experiment.training
    scale = math.prod(real) / math.prod(small) * settings.batch_size
    half = settings.amp and device.type == "cuda"
    need = activations * scale * (0.5 if half else 1) + state_bytes
    free = available_memory(device)
    if need > free:
        key = "dataset.patch_size" if experiment.dataset.settings.patch_size else "dataset.desired_shape"
        raise UserError(
            f"config key '{key}': a training step on {tuple(real)} voxels with batch size {settings.batch_size} "
            f"needs about {need / GIB:.3g} GiB ({activations * scale / GIB:.3g} GiB of activations, "
            f"{state_bytes / GIB:.3g} GiB of weights, gradients and optimizer state) but {device} has "
            f"{free / GIB:.3g} GiB free; lower {key} or training.batch_size")


def simulate_schedule(experiment, scheduler, length):
    """Step ``scheduler`` through the run's ``length`` steps, as training will (ReduceLROnPlateau on a flat metric)."""
    steps = min(length, MAX_SIMULATED_STEPS)
    name = experiment.scheduler.component.name
    for step in range(1, steps):  # the first was the real step
        with stage("scheduler", f"{name} failed at step {step + 1} of the run's {length}"):
            step_scheduler(scheduler, {"metric": 0.0}, "metric")


def dry_run(experiment, device=torch.device("cpu")):
    """Run one step of every component on tiny tensors; raise a UserError naming the section that fails,
    or the size whose step cannot fit on ``device``."""
    cases = [case for group in experiment.groups.values() for case in group]
    if not cases or not experiment.labels.values:
        return
    try:
        with random_states_kept():
            _dry_run(experiment, cases[0], device)
    except StepFailed as error:
        raise UserError(f"dry run: {error}") from error


def _dry_run(experiment, case, device):
    # float32 on the CPU: the activations are counted at 4 bytes, and check_memory scales them to the precision.
    parts = build_parts(experiment, torch.device("cpu"), amp=False)
    shape = training_shape(experiment, case)
    parts.model.train()
    image, target = smallest_step(experiment, parts.model, parts.loss_function, image_channels(case.images), shape)
    check_gradient(experiment, parts.model, parts.loss_function, image, target)
    name = experiment.optimizer.name + (f" and {experiment.scheduler.component.name}" if parts.step_per_batch else "")
    with stage("optimizer", f"{name}.step() after the backward pass of input {shape_text(image)}"):
        activations = activation_bytes(parts.model, lambda: train_step(parts, image, target))
    if parts.scheduler is not None:
        if not parts.step_per_batch:
            with stage("scheduler", f"{experiment.scheduler.component.name}.step()"):
                step_scheduler(parts.scheduler, {"metric": 0.0}, "metric")
        simulate_schedule(experiment, parts.scheduler, parts.scheduler_steps)
    tensors = [*parts.model.parameters(), *(p.grad for p in parts.model.parameters() if p.grad is not None),
               *(t for s in parts.optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor))]
    check_memory(experiment, activations, sum(t.numel() * t.element_size() for t in tensors),
                 image.shape[2:], shape, device)

    inferer = Inferer.from_experiment(experiment)
    shape = tuple(image.shape[2:])
    window = capped_window(inferer.window, shape, inferer.divisor) if inferer.window else shape
    parts.model.eval()
    with torch.no_grad(), stage("prediction", f"one window {window} of input {shape_text(image)} through "
                                              f"{experiment.model.name} and the decoding"):
        logits = inferer.logits(parts.model, image)
        parts.loss_function(logits, target)
        for case_probabilities in inferer.to_probabilities(logits, image):
            inferer.labels.masks(inferer.decode(case_probabilities))
