"""The training loop for one model: epochs of batches, validation, logging, checkpoints."""

import logging
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from monai.data import DataLoader
from monai.metrics import compute_dice

from unet3d import distributed
from unet3d.atomic import remove_stale_temporaries
from unet3d.data.dataset import build_dataset
from unet3d.data.loaders import batches, make_loader, start_epoch
from unet3d.errors import UserError
from unet3d.models.inferer import Inferer
from unet3d.models.weights import model_weights
from unet3d.train.checkpoint import load_training_state, save_models, save_training_state
from unet3d.train.compilation import compile_requested, compile_seconds, compiled
from unet3d.train.finetune import load_pretrained
from unet3d.train.log import TrainingLog
from unet3d.train.monitor import monitor_from_settings
from unet3d.train.parts import build_parts
from unet3d.train.progress import BatchProgress, plot_progress
from unet3d.train.random_state import RandomStates, seed_everything
from unet3d.train.schedulers import ScheduleState, step_scheduler
from unet3d.train.signals import raise_if_stopped, stop_on_signals
from unet3d.train.step import on_device, train_step
from unet3d.train.trackers import Trackers, mid_slice

__all__ = ["fit", "run_epoch", "train_one_epoch", "validate"]

log = logging.getLogger("unet3d")


class Loaders(NamedTuple):
    """A run's training loader and its validation loader (None without validation cases)."""

    training: DataLoader
    validation: DataLoader = None


def fit(experiment, work_dir, device, context=distributed.Context(), num_workers=0, cache_dir=None, restart=False,
        pin_memory=None, log_copy=None):
    """Train the model an ``Experiment`` describes into ``work_dir``, resuming from its checkpoint unless ``restart``;
    preprocessed cases are kept in ``cache_dir``. ``num_workers`` and ``pin_memory`` go to the data loaders;
    ``log_copy`` is a second path the CSV log is written to. Returns the epochs trained in this call (0 when the run
    was already finished)."""
    work_dir, settings = Path(work_dir), experiment.training
    experiment.labels.require("they are needed to train")
    loaders = training_loaders(experiment, cache_dir, num_workers=num_workers, pin_memory=pin_memory, context=context)
    monitor = monitor_from_settings(settings, ["loss", "lr", *(validation_columns(experiment) if loaders.validation
                                                                else [])])
    seed_everything(settings.seed, settings.deterministic)
    parts = build_parts(experiment, device, batches_per_epoch=len(loaders.training))
    inferer = Inferer.from_experiment(experiment, autocast=parts.precision.autocast)
    trackers = Trackers(experiment, work_dir, context.is_main)
    # Everything a resumed run needs to continue exactly as an uninterrupted one would.
    state = {"optimizer": parts.optimizer, "scaler": parts.precision.scaler, "monitor": monitor,
             "scheduler": ScheduleState(parts.scheduler, experiment.scheduler) if parts.scheduler else None,
             "rng": RandomStates(loaders.training.generator), "trackers": trackers}
    checkpoint_path, config_hashes = work_dir / "checkpoint.pth", experiment.config_hashes()
    if checkpoint_path.is_file() and not restart:
        rows = load_training_state(checkpoint_path, parts.model, config_hashes, **state)
        unused = f"; {settings.pretrained} (pretrained) starts fresh runs only: not used" if settings.pretrained else ""
        log.info("resuming %s after epoch %d%s", work_dir, len(rows), unused)
    else:
        rows = []
        if settings.pretrained:
            load_pretrained(parts.model, settings.pretrained)
    training_log = TrainingLog(work_dir / "training_log.csv", rows, log_copy)
    if context.is_main:
        remove_stale_temporaries(work_dir)
        training_log.write()
    parts.network = distributed.data_parallel(parts.model, context, device)
    parts.network = compiled(parts.network) if compile_requested(settings.compile) else parts.network
    trackers.start(rows, len(loaders.training))

    first_epoch = len(rows) + 1
    with stop_on_signals(), trackers:
        for epoch in range(first_epoch, settings.n_epochs + 1):
            if monitor.should_stop:
                log.info("early stopping: %s did not improve for %d epochs", monitor.metric, monitor.patience)
                break
            row, example = run_epoch(experiment, epoch, parts=parts, loaders=loaders, inferer=inferer, device=device,
                                     context=context, monitor=monitor, on_step=trackers.record_lr)
            improved = monitor.update(row)
            rows.append(row)
            if context.is_main:  # every process holds the same figures and weights; one writes them
                # The checkpoint marks the epoch done, so it comes after the model files: a kill
                # between them replays the epoch, which rewrites the same files.
                save_models(model_weights(parts.model), work_dir, epoch=epoch, improved=improved, settings=settings)
                trackers.log_epoch(row, example)  # before the checkpoint too (see unet3d.train.trackers)
                save_training_state(checkpoint_path, parts.model, epoch=epoch, rows=rows, config_hashes=config_hashes,
                                    **state)
                training_log.append(row)
                plot_progress(rows, work_dir / "progress.png")
                summary = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
                log.info("%s%s", summary, f" (best {monitor.metric})" if improved else "")
    return max(0, len(rows) - first_epoch + 1)


def training_loaders(experiment, cache_dir, num_workers, pin_memory, context):
    """The ``Loaders`` of the experiment's training and validation cases (this process's share under torchrun)."""
    settings = experiment.training
    shard = (context.rank, context.world_size) if context.enabled else None
    training = build_dataset(experiment.dataset, experiment.labels, experiment.labelled_cases("training"),
                             split="training", cache_dir=cache_dir)
    train_loader = make_loader(training, settings.batch_size, shuffle=True, num_workers=num_workers,
                               seed=settings.seed, pin_memory=pin_memory, shard=shard,
                               samples=settings.samples_per_epoch)
    cases = experiment.labelled_cases("validation")[: settings.validation_cases]
    if not cases:
        return Loaders(train_loader)
    validation = build_dataset(experiment.dataset, experiment.labels, cases, split="validation", cache_dir=cache_dir)
    return Loaders(train_loader, make_loader(validation, settings.validation_batch_size, shuffle=False,
                                             num_workers=num_workers, pin_memory=pin_memory, shard=shard))


def validation_columns(experiment):
    """The log's validation columns: the loss, the Dice of each region or class, and their mean."""
    return ["val_loss", *(f"val_dice_{name}" for name in experiment.labels.names), "val_dice_mean"]


def run_epoch(experiment, epoch, *, parts, loaders, inferer, device, context, monitor, on_step=None):
    """Train epoch ``epoch``, validate when it is due and step a per-epoch scheduler; returns the epoch's log row and
    the validation example (None when not validated).

    ``epoch_time`` leaves out the seconds spent compiling (``compile_time``, when there are any).
    """
    settings = experiment.training
    start, compile_start = time.perf_counter(), compile_seconds()
    start_epoch(loaders.training, settings.seed, epoch)
    lr = parts.optimizer.param_groups[0]["lr"]
    trained = train_one_epoch(parts, loaders.training, device, description=f"epoch {epoch}/{settings.n_epochs}",
                              context=context, on_step=on_step, epoch=epoch)
    row = {"epoch": epoch, **trained, "lr": lr}
    if not np.isfinite(row["loss"]):  # the same figure in every process: all stop together
        raise UserError(f"epoch {epoch}: the training loss is {row['loss']}; the weights diverged (lower "
                        "optimizer.lr, or set training.clip_grad_norm); the last checkpoint is kept")
    example = None
    if loaders.validation is not None and (epoch % settings.validation_interval == 0 or epoch == settings.n_epochs):
        scores, example = validate(parts.network, loaders.validation, loss_function=parts.loss_function,
                                   inferer=inferer, device=device, context=context)
        row.update(scores)
    if parts.scheduler is not None and not parts.step_per_batch:
        step_scheduler(parts.scheduler, row, monitor.metric)
    compile_time = compile_seconds() - compile_start
    row["epoch_time"] = round(time.perf_counter() - start - compile_time, 3)
    if compile_time:
        row["compile_time"] = round(compile_time, 3)
    return row, example


def train_one_epoch(parts, loader, device, description="epoch", context=distributed.Context(), on_step=None, epoch=0):
    """One pass of ``train_step`` over ``loader``, each batch through ``parts.augment`` first (seeded by ``epoch``,
    its index and the rank); returns the mean training loss (over all processes) and the seconds spent waiting
    for batches. ``on_step``, when given, is called with the learning rate of every step."""
    parts.network.train()
    total, count, data_time = 0.0, 0, 0.0
    with batches(loader) as iterator, BatchProgress(len(loader), description) as progress:
        ready = time.perf_counter()
        for index, batch in enumerate(iterator):
            data_time += time.perf_counter() - ready
            raise_if_stopped()
            image, label = parts.augment(*on_device(batch, device, label_values=bool(parts.augment)), epoch, index,
                                          context.rank)
            lr = parts.optimizer.param_groups[0]["lr"]
            loss = train_step(parts, image, label).item()
            if on_step is not None:
                on_step(lr)
            total += loss * len(image)
            count += len(image)
            progress.update(loss)
            ready = time.perf_counter()
    total, count = distributed.sum_across(context, total, count)
    return {"loss": total / max(count, 1), "data_time": round(data_time, 3)}


@torch.no_grad()
def validate(model, loader, loss_function, inferer, device, context=distributed.Context()):
    """Validation loss, and Dice per output channel of the label maps ``inferer`` decodes (what prediction
    writes), averaged over the cases of all processes; and the ``mid_slice`` of this process's first case."""
    model.eval()
    names = inferer.labels.names
    # Per-batch compute_dice, not DiceMetric: its buffer is all-gathered across processes
    # by MONAI itself, which would count cases twice and hang a process without batches.
    total, count, dice_sums, example = 0.0, 0, torch.zeros(len(names), dtype=torch.float64), None
    with batches(loader) as iterator:
        for batch in iterator:
            raise_if_stopped()
            image, label = on_device(batch, device)
            logits = inferer.logits(model, image)
            total += loss_function(logits, label).item() * len(image)
            count += len(image)
            predicted = [inferer.labels.masks(inferer.decode(case)) for case in inferer.to_probabilities(logits, image)]
            reference = inferer.labels.target_masks(label)
            example = example or mid_slice(image[0], predicted[0], reference[0])
            dice = compute_dice(torch.stack(predicted).float(), reference.float(), include_background=True,
                                ignore_empty=False)
            dice_sums += dice.sum(dim=0).double().cpu()
    total, count, *dice_sums = distributed.sum_across(context, total, count, *dice_sums.tolist())
    scores = [value / max(count, 1) for value in dice_sums]
    row = {"val_loss": total / max(count, 1)}
    row.update({f"val_dice_{name}": score for name, score in zip(names, scores)})
    row["val_dice_mean"] = float(np.mean(scores))
    return row, example
