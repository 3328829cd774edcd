"""The parts of a run, built in one place from the experiment: model, loss, optimizer, scheduler, precision.

The training loop, the dry run, the checks before a run, the planner's timing and the
benchmarks all build them here, so each runs the step training runs.
"""

import dataclasses

import torch

from unet3d.data import loaders
from unet3d.data.batch_augmentation import BatchAugmentation
from unet3d.data.stored import label_dtype
from unet3d.losses.deep_supervision import DeepSupervisedLoss
from unet3d.train.finetune import freeze
from unet3d.train.precision import Precision
from unet3d.train.schedulers import build_scheduler, schedule_length


@dataclasses.dataclass
class RunParts:
    """What a training step uses.

    Args:
        model: the network (its weights are what a run saves).
        network: what the step calls: the model, or its data-parallel or compiled wrapper.
        loss_function: the configured loss inside ``DeepSupervisedLoss``.
        optimizer: over the model's parameters that ``training.freeze`` leaves trainable.
        scheduler: the learning-rate schedule, or None.
        step_per_batch: whether ``scheduler`` steps after every optimizer step (else once per epoch).
        scheduler_steps: the run's number of scheduler steps (the length of ``"auto"`` schedules).
        precision: the autocast context and gradient scaler.
        clip_grad_norm: ``training.clip_grad_norm`` (None: no clipping).
        augment: ``dataset.batch_augmentation`` of the training batches (``BatchAugmentation``; without the
            setting it gives batches back as they are).
    """

    model: torch.nn.Module
    network: torch.nn.Module
    loss_function: DeepSupervisedLoss
    optimizer: torch.optim.Optimizer
    scheduler: object
    step_per_batch: bool
    scheduler_steps: int
    precision: Precision
    clip_grad_norm: float = None
    augment: BatchAugmentation = dataclasses.field(default_factory=BatchAugmentation)


def build_parts(experiment, device, batches_per_epoch=None, amp=None):
    """The ``RunParts`` of ``experiment`` with the model on ``device``.

    Args:
        batches_per_epoch: of the training loader, for the length of ``"auto"`` schedules (default: from the
            config's training cases, ``training.samples_per_epoch`` and ``training.batch_size``).
        amp: replaces ``training.amp`` (the dry run and the benchmarks choose their own).
    """
    settings = experiment.training
    if batches_per_epoch is None:
        batches_per_epoch = loaders.batches_per_epoch(len(experiment.groups.get("training", ())) or 1,
                                                      settings.batch_size, settings.samples_per_epoch)
    model = experiment.model.build().to(device)
    if settings.channels_last:
        model = channels_last(model)
    optimizer = experiment.optimizer.build(freeze(model, settings.freeze))
    length = schedule_length(experiment.scheduler, settings.n_epochs, batches_per_epoch)
    return RunParts(
        model=model,
        network=model,
        loss_function=DeepSupervisedLoss(experiment.loss.build(), experiment.one_hot_classes),
        optimizer=optimizer,
        scheduler=build_scheduler(experiment.scheduler, optimizer, settings.monitor_mode, length),
        step_per_batch=experiment.scheduler is not None and experiment.scheduler.step_per_batch,
        scheduler_steps=length,
        precision=Precision(settings.amp if amp is None else amp, device),
        clip_grad_norm=settings.clip_grad_norm,
        augment=training_augmentation(experiment),
    )


def channels_last(model):
    """``model`` with its convolution weights stored channels-last (``Module.to``'s memory format: NDHWC for a 3D
    network's, NHWC for a 2D one's); the convolutions then give channels-last outputs whatever the input's layout
    (oneDNN and cuDNN pick their NHWC/NDHWC kernels)."""
    three_d = any(parameter.dim() == 5 for parameter in model.parameters())
    return model.to(memory_format=torch.channels_last_3d if three_d else torch.channels_last)


def training_augmentation(experiment):
    """The ``BatchAugmentation`` of the experiment's training split (a no-op without ``dataset.batch_augmentation``
    or with a dataset class of a plug-in's)."""
    if experiment.dataset.settings is None:
        return BatchAugmentation()
    settings = experiment.dataset.settings.for_split("training")
    return BatchAugmentation(settings.batch_augmentation, experiment.labels, settings.patch_size,
                             experiment.training.seed)


def random_batch(experiment, channels, size, batch_size=1, device=torch.device("cpu"), label_values=False):
    """A random image ``(batch_size, channels, *size)`` and its float targets, from label maps holding every label
    value, as ``on_device`` delivers a loader's: for running the step where no data is read. With ``label_values``
    the label maps themselves (one uint8 channel), as a loader delivers them for ``dataset.batch_augmentation``."""
    generator = torch.Generator().manual_seed(0)
    image = torch.randn((batch_size, channels, *size), generator=generator)
    values = torch.tensor([0, *experiment.labels.values])
    label_maps = values[torch.randint(len(values), (batch_size, *size), generator=generator)]
    if label_values:  # in the type the cache stores them in (uint8 for BraTS), as a loader delivers them
        stored_type = label_dtype(experiment.labels.values)
        return image.to(device), torch.from_numpy(label_maps[:, None].numpy().astype(stored_type)).to(device)
    target = torch.stack([experiment.labels.targets(label_map) for label_map in label_maps])
    return image.to(device), target.to(device).float()
