"""A whole run from one config: pre-flight checks, folds, training, then predictions."""

import logging
from pathlib import Path

from unet3d.config.load import filename_groups, group_name, load_config
from unet3d.config.resolve import resolve
from unet3d.data.files import cases, preflight
from unet3d.errors import UserError
from unet3d.evaluate.evaluation import evaluate_folder
from unet3d.predict.inference import build_model, predict_cases
from unet3d.train.folds import fold_configs, write_fold_configs
from unet3d.train.loop import fit, training_settings

log = logging.getLogger("unet3d")


def work_dir_for(config_filename, output_dir=None):
    """``<output_dir or the config's folder>/<config name>``."""
    config_filename = Path(config_filename)
    base = Path(output_dir) if output_dir else config_filename.resolve().parent
    return base / config_filename.stem


def check_config(config):
    """Build every component the config names once, so mistakes surface before any work is done."""
    training_settings(config)
    model = resolve("model", config["model"], "model")
    optimizer = resolve("optimizer", config["optimizer"], "optimizer", model.parameters())
    if config.get("scheduler"):
        resolve("scheduler", config["scheduler"], "scheduler", optimizer)
    resolve("loss", config["loss"], "loss")
    resolve("dataset", config["dataset"], "dataset", data=[])
    if "cross_validation" in config:
        fold_configs(config)


def run_experiment(config_filename, output_dir=None, device=None, setup_crossval_only=False, num_workers=0):
    """Train (every fold of) ``config_filename`` and predict its other groups; returns the work folder."""
    config = load_config(config_filename)
    work_dir = work_dir_for(config_filename, output_dir)
    check_config(config)
    preflight(config)
    if "cross_validation" not in config:
        if setup_crossval_only:
            raise UserError(f"{config_filename}: --setup_crossval_only needs a 'cross_validation' section")
        train_and_predict(config, work_dir, device, num_workers)
        return work_dir
    fold_filenames = write_fold_configs(config, work_dir)
    if setup_crossval_only:
        log.info("wrote %d fold configs to %s; train one with: unet3d-train --config_filename %s",
                 len(fold_filenames), work_dir, fold_filenames[0])
        return work_dir
    for fold_filename in fold_filenames:
        log.info("fold %s", fold_filename.stem)
        train_and_predict(load_config(fold_filename), work_dir / fold_filename.stem, device, num_workers)
    return work_dir


def train_and_predict(config, work_dir, device, num_workers=0):
    """Train one model into ``work_dir`` then predict every group but training with its best weights.

    Groups with labels (validation) are evaluated into ``predictions/<group>/evaluation.csv``.

    Predictions of a model that trained further in this call replace older ones; a rerun
    of a finished model only fills in predictions that are missing.
    """
    trained_epochs = fit(config, work_dir, device, num_workers)
    best = work_dir / "model_best.pth"
    model = build_model(config, best if best.is_file() else work_dir / "model.pth", device)
    for key in filename_groups(config):
        group = group_name(key)
        if group == "training":
            continue
        output_dir = work_dir / "predictions" / group
        todo = cases(config, group)
        if not trained_epochs:
            todo = [case for case in todo if not (output_dir / f"{case['id']}.nii.gz").exists()]
        if todo:
            predict_cases(config, model, todo, output_dir, device, overwrite=True, num_workers=num_workers)
        if all("label" in case for case in cases(config, group)) and (todo or not (output_dir / "evaluation.csv").is_file()):
            evaluate_folder(output_dir, config=config, group=group)  # evaluation.csv, evaluation_summary.csv
