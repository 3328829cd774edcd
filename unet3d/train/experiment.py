"""A whole run from one config: pre-flight checks, folds, training, then predictions."""

import logging
import os
from pathlib import Path

from unet3d.atomic import write_csv
from unet3d.config import schema
from unet3d.config.load import filename_groups, group_name, load_config
from unet3d.config.resolve import lookup, resolve
from unet3d.data.files import cases, preflight
from unet3d.errors import UserError
from unet3d.evaluate.evaluation import evaluate_folder
from unet3d.predict.inference import build_model, inference_settings, predict_cases
from unet3d.train import distributed
from unet3d.train.folds import cross_validation_settings, fold_configs, write_fold_configs
from unet3d.train.loop import fit, training_settings
from unet3d.train.monitor import metric_mode
from unet3d.train.schedulers import build_scheduler
from unet3d.train.slurm import write_slurm_script
from unet3d.train.summary import format_summary, summarize_folds

log = logging.getLogger("unet3d")


def work_dir_for(config_filename, output_dir=None):
    """``<output_dir or the config's folder>/<config name>``."""
    config_filename = Path(config_filename)
    base = Path(output_dir) if output_dir else config_filename.resolve().parent
    return base / config_filename.stem


def check_config(config):
    """Build every component the config names once, so mistakes surface before any work is done."""
    settings = training_settings(config)
    model = resolve("model", config["model"], "model")
    optimizer = resolve("optimizer", config["optimizer"], "optimizer", model.parameters())
    build_scheduler(config.get("scheduler"), optimizer, metric_mode(settings["metric_to_monitor"], settings["metric_mode"]))
    resolve("loss", config["loss"], "loss")
    resolve("dataset", config["dataset"], "dataset", data=[])
    inference_settings(config)
    if "cross_validation" in config:
        fold_configs(config)


def resolved_settings(config_filename, allow_unknown_keys=False):
    """The config with every default filled in (the schema's and the named classes'), for ``--check``."""
    config = load_config(config_filename, allow_unknown_keys)
    return schema.resolved(config, lambda kind, name: lookup(kind, name, f"{kind}.name"))


def check_output_folder(work_dir):
    """Raise when ``work_dir`` cannot be created or written, before any work is done."""
    existing = Path(work_dir)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"output folder {work_dir}: {existing} is a file, not a folder (see --output_dir)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"output folder {work_dir}: {existing} is not writable (see --output_dir)")


def default_cache_dir(config, work_dir):
    """Where preprocessed cases go: ``<work dir>/cache`` for a cross-validation config, else beside the work dir.

    Both give the same folder for a config's folds, whether trained by one run of the whole
    config or as separate ``fold<k>.json`` jobs.
    """
    work_dir = Path(work_dir)
    return work_dir / "cache" if "cross_validation" in config else work_dir.parent / "cache"


def run_experiment(config_filename, output_dir=None, device=None, setup_crossval_only=False, num_workers=0,
                   cache_dir=None, fold=None, summarize_only=False, slurm=None, restart=False, check_only=False,
                   allow_unknown_keys=False):
    """Train (every fold of) ``config_filename`` and predict its other groups; returns the work folder.

    Args:
        setup_crossval_only: write ``fold<k>.json`` and ``submit_folds.sh`` and stop.
        cache_dir: preprocessed cases (default: ``default_cache_dir``).
        fold: train only this fold (1-based).
        summarize_only: write and print the cross-validation summary of what is trained.
        slurm: ``#SBATCH`` settings for ``submit_folds.sh`` (see ``unet3d.train.slurm``).
        restart: train every model from scratch instead of resuming its checkpoint.
        check_only: stop after checking the config, its data and the output folder.
        allow_unknown_keys: warn about config keys the schema does not know instead of stopping.

    Under torchrun every process runs this; only the main one writes files.
    """
    config = load_config(config_filename, allow_unknown_keys)
    work_dir = work_dir_for(config_filename, output_dir)
    cross_validation = "cross_validation" in config
    for flag, value in (("--setup_crossval_only", setup_crossval_only), ("--fold", fold), ("--summarize", summarize_only)):
        if value and not cross_validation:
            raise UserError(f"{config_filename}: {flag} needs a 'cross_validation' section")
    if summarize_only:
        summarize(config, work_dir, require_all=False)
        return work_dir
    check_config(config)
    check_output_folder(work_dir)
    cache_dir = cache_dir or default_cache_dir(config, work_dir)
    preflight(config, cache_dir=None if setup_crossval_only else cache_dir)
    if check_only:
        return work_dir
    if not cross_validation:
        train_and_predict(config, work_dir, device, num_workers, cache_dir, restart)
        return work_dir
    context = distributed.from_environment()
    fold_filenames = write_fold_configs(config, work_dir, write=context.is_main)
    distributed.barrier(context)
    if fold is not None and not 1 <= fold <= len(fold_filenames):
        raise UserError(f"--fold {fold}: the config has folds 1 to {len(fold_filenames)}")
    if setup_crossval_only:
        script = write_slurm_script(work_dir, len(fold_filenames), work_dir.name, **(slurm or {}))
        log.info("wrote %d fold configs and %s; train one fold with: unet3d-train --config_filename %s",
                 len(fold_filenames), script.name, fold_filenames[0])
        print(f"sbatch {script}")
        return work_dir
    for fold_filename in [fold_filenames[fold - 1]] if fold else fold_filenames:
        log.info("fold %s", fold_filename.stem)
        train_and_predict(load_config(fold_filename, allow_unknown_keys), work_dir / fold_filename.stem, device, num_workers, cache_dir, restart)
    if context.is_main:
        summarize(config, work_dir, require_all=True)
    return work_dir


def summarize(config, work_dir, require_all):
    """Write ``cv_summary.csv`` and print it; with ``require_all``, only once every fold has a log."""
    n_folds = cross_validation_settings(config)["n_folds"]
    fold_dirs = [work_dir / f"fold{k}" for k in range(1, n_folds + 1)]
    trained = [d for d in fold_dirs if (d / "training_log.csv").is_file()]
    if require_all and len(trained) < n_folds:
        log.info("%d of %d folds trained; the summary is written once all are", len(trained), n_folds)
        return
    table = summarize_folds(fold_dirs, training_settings(config))
    if table is None:
        raise UserError(f"{work_dir}: no fold has a training_log.csv yet")
    write_csv(table, work_dir / "cv_summary.csv")
    print(format_summary(table))


def train_and_predict(config, work_dir, device, num_workers=0, cache_dir=None, restart=False):
    """Train one model into ``work_dir`` then predict every group but training with its best weights.

    Groups with labels (validation) are evaluated into ``predictions/<group>/evaluation.csv``.

    Predictions of a model that trained further in this call replace older ones; a rerun
    of a finished model only fills in predictions that are missing.
    """
    trained_epochs = fit(config, work_dir, device, num_workers, cache_dir=cache_dir, restart=restart)
    if not distributed.from_environment().is_main:
        return
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
