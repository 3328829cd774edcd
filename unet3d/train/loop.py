"""The training loop for one model: epochs of batches, validation, logging, checkpoints."""

import logging
import time
from pathlib import Path

import numpy as np
import torch
from monai.metrics import compute_dice
from monai.utils import convert_to_tensor

from unet3d.atomic import remove_stale_temporaries
from unet3d.data.dataset import build_dataset
from unet3d.errors import UserError
from unet3d.data.loaders import EpochSamples, batches, make_loader
from unet3d.models.inferer import Inferer
from unet3d.models.weights import model_weights
from unet3d import distributed
from unet3d.train.checkpoint import load_training_state, save_models, save_training_state
from unet3d.train.compilation import compile_requested, compile_seconds, compiled
from unet3d.train.deep_supervision import DeepSupervisedLoss
from unet3d.train.finetune import freeze, load_pretrained
from unet3d.train.log import TrainingLog
from unet3d.train.monitor import monitor_from_settings
from unet3d.train.precision import Precision
from unet3d.train.progress import BatchProgress, plot_progress
from unet3d.train.random_state import RandomStates, seed_epoch, seed_everything
from unet3d.train.schedulers import ScheduleState, build_scheduler, schedule_length, step_scheduler
from unet3d.train.signals import raise_if_stopped, stop_on_signals
from unet3d.train.trackers import Trackers, mid_slice

__all__ = ["fit", "train_one_epoch", "validate"]

log = logging.getLogger("unet3d")


def fit(experiment, work_dir, device, context=distributed.Context(), num_workers=0, cache_dir=None, restart=False,
        pin_memory=None, log_copy=None):
    """Train the model an ``Experiment`` describes into ``work_dir``, resuming from its checkpoint
    unless ``restart``; preprocessed cases are kept in ``cache_dir``. ``num_workers`` and
    ``pin_memory`` go to the data loaders; ``log_copy`` is a second path the CSV log is written to.

    Returns the number of epochs trained in this call (0 when the run was already finished).
    """
    work_dir, settings = Path(work_dir), experiment.training
    experiment.labels.require("they are needed to train")
    training_data = build_dataset(experiment.dataset, experiment.labels, experiment.labelled_cases("training"),
                                  "training", cache_dir)
    validation_cases = experiment.labelled_cases("validation")
    validation_data = build_dataset(experiment.dataset, experiment.labels, validation_cases, "validation",
                                    cache_dir) if validation_cases else None
    validation_columns = ["val_loss", *(f"val_dice_{name}" for name in experiment.labels.names), "val_dice_mean"]
    monitor = monitor_from_settings(settings, ["loss", "lr", *(validation_columns if validation_data else [])])

    shard = (context.rank, context.world_size) if context.enabled else None
    seed_everything(settings.seed, settings.deterministic)
    model = experiment.model.build().to(device)
    loss_function = DeepSupervisedLoss(experiment.loss.build(), experiment.one_hot_classes)
    optimizer = experiment.optimizer.build(freeze(model, settings.freeze))
    precision = Precision(settings.amp, device)
    inferer = Inferer.from_experiment(experiment, autocast=precision.autocast)
    train_loader = make_loader(training_data, settings.batch_size, True, num_workers, settings.seed, pin_memory,
                               shard=shard, samples=settings.samples_per_epoch)
    validation_loader = (make_loader(validation_data, settings.validation_batch_size, False, num_workers,
                                     pin_memory=pin_memory, shard=shard) if validation_data else None)
    length = schedule_length(experiment.scheduler, settings.n_epochs, len(train_loader))
    scheduler = build_scheduler(experiment.scheduler, optimizer, monitor.mode, length)
    step_per_batch = experiment.scheduler is not None and experiment.scheduler.step_per_batch
    trackers = Trackers(experiment, work_dir, context.is_main)

    # Everything a resumed run needs to continue exactly as an uninterrupted one would.
    state = {"optimizer": optimizer, "scheduler": ScheduleState(scheduler, experiment.scheduler) if scheduler else None,
             "scaler": precision.scaler, "monitor": monitor, "rng": RandomStates(train_loader.generator),
             "trackers": trackers}
    checkpoint_path = work_dir / "checkpoint.pth"
    fingerprint = experiment.fingerprint()
    rows = []
    if checkpoint_path.is_file() and not restart:
        rows = load_training_state(checkpoint_path, model, fingerprint, **state)
        unused = f"; {settings.pretrained} (pretrained) starts fresh runs only: not used" if settings.pretrained else ""
        log.info("resuming %s after epoch %d%s", work_dir, len(rows), unused)
    elif settings.pretrained:
        load_pretrained(model, settings.pretrained)
    training_log = TrainingLog(work_dir / "training_log.csv", rows, log_copy)
    if context.is_main:
        remove_stale_temporaries(work_dir)
        training_log.write()
    network = distributed.data_parallel(model, context, device)
    network = compiled(network) if compile_requested(settings.compile) else network
    trackers.start(rows, len(train_loader))

    first_epoch = len(rows) + 1
    with stop_on_signals(), trackers:
        for epoch in range(first_epoch, settings.n_epochs + 1):
            if monitor.should_stop:
                log.info("early stopping: %s did not improve for %d epochs", monitor.metric, monitor.patience)
                break
            start, compile_start = time.perf_counter(), compile_seconds()
            seed_epoch(train_loader, settings.seed, epoch)
            if isinstance(train_loader.dataset, EpochSamples):  # samples_per_epoch of a dataset without seeds
                train_loader.dataset.shuffle()
            lr = optimizer.param_groups[0]["lr"]
            row = {"epoch": epoch, **train_one_epoch(network, train_loader, loss_function, optimizer, precision, device,
                                                     settings.clip_grad_norm, scheduler if step_per_batch else None,
                                                     f"epoch {epoch}/{settings.n_epochs}", context,
                                                     trackers.record_lr), "lr": lr}
            if not np.isfinite(row["loss"]):  # the same figure in every process: all stop together
                raise UserError(f"epoch {epoch}: the training loss is {row['loss']}; the weights diverged (lower "
                                "optimizer.lr, or set training.clip_grad_norm); the last checkpoint is kept")
            example = None
            if validation_loader is not None and (epoch % settings.validation_interval == 0
                                                  or epoch == settings.n_epochs):
                scores, example = validate(network, validation_loader, loss_function, inferer, device, context)
                row.update(scores)
            if scheduler is not None and not step_per_batch:
                step_scheduler(scheduler, row, monitor.metric)
            compile_time = compile_seconds() - compile_start
            row["epoch_time"] = round(time.perf_counter() - start - compile_time, 3)
            if compile_time:
                row["compile_time"] = round(compile_time, 3)

            improved = monitor.update(row)
            rows.append(row)
            if context.is_main:  # every process holds the same figures and weights; one writes them
                # The checkpoint marks the epoch done, so it comes after the model files: a kill
                # between them replays the epoch, which rewrites the same files.
                save_models(model_weights(model), work_dir, epoch, improved, settings)
                trackers.log_epoch(row, example)  # before the checkpoint too (see unet3d.train.trackers)
                save_training_state(checkpoint_path, model, epoch, rows, fingerprint, **state)
                training_log.append(row)
                plot_progress(rows, work_dir / "progress.png")
                summary = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
                log.info("%s%s", summary, f" (best {monitor.metric})" if improved else "")
    return max(0, len(rows) - first_epoch + 1)


def train_one_epoch(model, loader, loss_function, optimizer, precision, device, clip_grad_norm=None,
                    batch_scheduler=None, description="epoch", context=distributed.Context(), on_step=None):
    """One pass over ``loader``; returns the mean training loss (over all processes) and the seconds spent waiting for batches.

    ``batch_scheduler``, when given, steps after every optimizer step (OneCycleLR and the like);
    ``on_step``, when given, is called with the learning rate of every optimizer step.
    """
    model.train()
    total, count, data_time = 0.0, 0, 0.0
    with batches(loader) as iterator, BatchProgress(len(loader), description) as progress:
        ready = time.perf_counter()
        for batch in iterator:
            data_time += time.perf_counter() - ready
            raise_if_stopped()
            image, label = plain(batch["image"], device), plain(batch["label"], device).float()
            optimizer.zero_grad(set_to_none=True)
            with precision.autocast():
                loss = loss_function(model(image), label)
            precision.scaler.scale(loss).backward()
            if clip_grad_norm:
                precision.scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            precision.scaler.step(optimizer)
            precision.scaler.update()
            if on_step is not None:
                on_step(optimizer.param_groups[0]["lr"])
            if batch_scheduler is not None:
                batch_scheduler.step()
            total += loss.item() * len(image)
            count += len(image)
            progress.update(loss.item())
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
            image, label = plain(batch["image"], device), plain(batch["label"], device).float()
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


def plain(tensor, device):
    """A batch tensor on ``device`` without MONAI's metadata, which torch.compile cannot trace and every op pays for."""
    return convert_to_tensor(tensor, device=device, track_meta=False)
