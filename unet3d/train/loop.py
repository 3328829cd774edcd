"""The training loop for one model: epochs of batches, validation, logging, checkpoints."""

import logging
import math
import random
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.metrics import DiceMetric

from unet3d.config.resolve import resolve
from unet3d.data.files import cases, require_labels
from unet3d.data.labels import region_names
from unet3d.data.loaders import batches, make_loader
from unet3d.data.transforms import inference_window
from unet3d.errors import UserError
from unet3d.train import checkpoint
from unet3d.train.log import TrainingLog

log = logging.getLogger("unet3d")

TRAINING_DEFAULTS = {
    "n_epochs": 1,
    "batch_size": 1,
    "validation_batch_size": 1,
    "amp": False,
    "save_best": True,
    "save_every_n_epochs": None,
    "save_last_n_models": None,
    "early_stopping_patience": None,
    "seed": 0,
}


def training_settings(config):
    """``config["training"]`` with defaults filled in."""
    settings = dict(TRAINING_DEFAULTS)
    settings.update({k: v for k, v in config.get("training", {}).items() if v is not None or k not in settings})
    for key in ("n_epochs", "batch_size", "validation_batch_size"):
        if not isinstance(settings[key], int) or settings[key] < 1:
            raise UserError(f"config key 'training.{key}' must be a positive integer, got {settings[key]!r}")
    return settings


def fit(config, work_dir, device, num_workers=0, cache_dir=None):
    """Train the model ``config`` describes into ``work_dir``, resuming from its checkpoint.

    Returns the number of epochs trained in this call (0 when the run was already finished).
    """
    work_dir = Path(work_dir)
    settings = training_settings(config)
    dataset_spec = config["dataset"]
    labels = dataset_spec.get("labels") or []
    names = region_names(labels, dataset_spec.get("setup_label_hierarchy", False))
    roi_size = inference_window(dataset_spec)

    training_cases = cases(config, "training")
    require_labels(training_cases, "training")
    validation_cases = cases(config, "validation") if "validation_filenames" in config else []
    require_labels(validation_cases, "validation")
    training_data = resolve("dataset", dataset_spec, "dataset", data=training_cases, split="training", cache_dir=cache_dir)
    validation_data = (
        resolve("dataset", dataset_spec, "dataset", data=validation_cases, split="validation", cache_dir=cache_dir)
        if validation_cases else None
    )

    seed_everything(settings["seed"], epoch=0)  # the initial weights
    model = resolve("model", config["model"], "model").to(device)
    loss_function = resolve("loss", config["loss"], "loss")
    optimizer = resolve("optimizer", config["optimizer"], "optimizer", model.parameters())
    scheduler = resolve("scheduler", config["scheduler"], "scheduler", optimizer) if config.get("scheduler") else None
    use_amp = amp_enabled(settings["amp"], device)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)

    state = {"epoch": 0, "best_value": math.inf, "best_epoch": 0, "epochs_without_improvement": 0, "rows": []}
    checkpoint_path = work_dir / "checkpoint.pth"
    if checkpoint_path.is_file():
        saved = checkpoint.load(checkpoint_path)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None and saved.get("scheduler") is not None:
            scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        state = {key: saved[key] for key in state}
        log.info("resuming %s after epoch %d", work_dir, state["epoch"])
    training_log = TrainingLog(work_dir / "training_log.csv", state["rows"])
    training_log.write()

    train_loader = make_loader(training_data, settings["batch_size"], True, num_workers, settings["seed"])
    validation_loader = (
        make_loader(validation_data, settings["validation_batch_size"], False, num_workers) if validation_data else None
    )
    monitor = "val_loss" if validation_loader else "loss"
    patience = settings["early_stopping_patience"]
    first_epoch = state["epoch"] + 1
    for epoch in range(first_epoch, settings["n_epochs"] + 1):
        if patience and state["epochs_without_improvement"] >= patience:
            log.info("early stopping: %s did not improve for %d epochs", monitor, patience)
            break
        start = time.perf_counter()
        seed_everything(settings["seed"], epoch)
        train_loader.generator.manual_seed(settings["seed"] * 100003 + epoch)
        lr = optimizer.param_groups[0]["lr"]
        row = {"epoch": epoch, "loss": train_one_epoch(model, train_loader, loss_function, optimizer, scaler, device, use_amp), "lr": lr}
        if validation_loader is not None:
            row.update(evaluate(model, validation_loader, loss_function, device, use_amp, roi_size, names))
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(row[monitor])
        elif scheduler is not None:
            scheduler.step()
        row["epoch_time"] = round(time.perf_counter() - start, 3)

        improved = row[monitor] < state["best_value"]
        if improved:
            state.update(best_value=row[monitor], best_epoch=epoch, epochs_without_improvement=0)
        else:
            state["epochs_without_improvement"] += 1
        state["epoch"] = epoch
        state["rows"] = state["rows"] + [row]
        weights = checkpoint.model_weights(model)
        checkpoint.save(
            {**state, "model": weights, "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict() if scheduler is not None else None, "scaler": scaler.state_dict()},
            checkpoint_path,
        )
        training_log.append(row)
        checkpoint.save(weights, work_dir / "model.pth")
        if improved and settings["save_best"]:
            checkpoint.save(weights, work_dir / "model_best.pth")
        save_epoch_models(weights, work_dir, epoch, settings)
        log.info(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    return max(0, state["epoch"] - first_epoch + 1)


def train_one_epoch(model, loader, loss_function, optimizer, scaler, device, use_amp):
    """One pass over ``loader``; returns the mean training loss."""
    model.train()
    total, count = 0.0, 0
    with batches(loader) as iterator:
        for batch in iterator:
            image, label = batch["image"].to(device), batch["label"].to(device)
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, use_amp):
                loss = loss_function(model(image), label)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += loss.item() * len(image)
            count += len(image)
    return total / max(count, 1)


@torch.no_grad()
def evaluate(model, loader, loss_function, device, use_amp, roi_size, names):
    """Validation loss and Dice per output channel (sigmoid > 0.5)."""
    model.eval()
    dice = DiceMetric(include_background=True, reduction="mean_batch", ignore_empty=False)
    total, count = 0.0, 0
    with batches(loader) as iterator:
        for batch in iterator:
            image, label = batch["image"].to(device), batch["label"].to(device)
            with autocast(device, use_amp):
                logits = sliding_window_inference(image, roi_size, 1, model) if roi_size else model(image)
            logits = logits.float()
            total += loss_function(logits, label).item() * len(image)
            count += len(image)
            dice(y_pred=(torch.sigmoid(logits) > 0.5).float(), y=label)
    scores = dice.aggregate().cpu().tolist()
    row = {"val_loss": total / max(count, 1)}
    row.update({f"val_dice_{name}": score for name, score in zip(names, scores)})
    row["val_dice_mean"] = float(np.mean(scores))
    return row


def amp_enabled(requested, device):
    """Mixed precision runs on CUDA only; on CPU a request is reported once and ignored."""
    if requested and device.type != "cuda":
        warnings.warn("training.amp is set but the device is CPU: training in float32", stacklevel=2)
        return False
    return bool(requested)


def autocast(device, enabled):
    """float16 autocast on CUDA when enabled, else a no-op context."""
    return torch.autocast(device.type, dtype=torch.float16) if enabled else nullcontext()


def seed_everything(seed, epoch):
    """Seed Python, NumPy and torch from the run seed and the epoch, so a resumed run matches."""
    value = (seed * 100003 + epoch) % 2**32
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def save_epoch_models(weights, work_dir, epoch, settings):
    """``model_epoch<k>.pth`` every ``save_every_n_epochs``, keeping the last ``save_last_n_models``."""
    every = settings["save_every_n_epochs"]
    if not every or epoch % every:
        return
    checkpoint.save(weights, work_dir / f"model_epoch{epoch}.pth")
    keep = settings["save_last_n_models"]
    if keep:
        saved = sorted(work_dir.glob("model_epoch*.pth"), key=lambda p: int(p.stem.removeprefix("model_epoch")))
        for old in saved[:-keep]:
            old.unlink()
