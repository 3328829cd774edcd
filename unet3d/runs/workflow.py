"""Whole runs of an experiment, one function per command-line mode: check, set up folds, train, summarize.

Training a config trains each cross-validation fold (or its one model), then predicts every
other group with the best weights and evaluates the groups that have labels.
"""

import dataclasses
import logging
from contextlib import nullcontext
from pathlib import Path

import torch

from unet3d import distributed
from unet3d.atomic import write_csv
from unet3d.config.experiment import check_new_output, load_experiment, require_writable
from unet3d.config.load import config_folder
from unet3d.config.schema import SECTIONS, resolved
from unet3d.data.dataset import build_dataset
from unet3d.data.files import check_channels, preflight
from unet3d.errors import UserError
from unet3d.evaluate.evaluation import evaluate_folder, group_label_files
from unet3d.models.inferer import Inferer
from unet3d.models.weights import load_matching_weights, trained_model
from unet3d.predict.inference import predict_cases
from unet3d.predict.postprocess import POSTPROCESSING_FILE
from unet3d.predict.write import prediction_path
from unet3d.report import ReportOptions, write_reports
from unet3d.runs.folds import fold_configs, write_fold_configs, write_if_changed
from unet3d.runs.lock import model_folder_lock
from unet3d.runs.postprocessing import decide_postprocessing, format_decision, postprocess_fold_predictions
from unet3d.runs.slurm import write_slurm_script
from unet3d.runs.summary import format_summary, summarize_folds
from unet3d.train.dry_run import dry_run
from unet3d.train.examples import write_examples
from unet3d.train.loop import fit
from unet3d.train.parts import build_parts
from unet3d.train.trackers import require_trackers

log = logging.getLogger("unet3d")
EFFECTIVE_CONFIG = "config.json"


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a run uses this machine and its files; none of it changes what is learned.

    Args:
        num_workers, pin_memory: of the data loaders (pin_memory None: when CUDA is available).
        cache_dir: preprocessed cases (None: ``default_cache_dir``).
        restart: train every model from scratch instead of resuming its checkpoint.
        n_examples: first write this many training items as NIfTI (``data_loader_testing/``).
        log_copy: a second path for the training log (3DUnetCNN's ``--training_log_filename``).
        allow_unknown_keys: for the fold configs, as for the config.
    """

    num_workers: int = 0
    pin_memory: bool = None
    cache_dir: Path = None
    restart: bool = False
    n_examples: int = 0
    log_copy: Path = None
    allow_unknown_keys: bool = False


def work_dir_for(config_filename, output_dir=None):
    """``<output_dir or the config's folder>/<config name>``."""
    config_filename = Path(config_filename)
    base = Path(output_dir) if output_dir else config_folder(config_filename)
    return base / config_filename.stem


def default_cache_dir(experiment, work_dir):
    """Where preprocessed cases go: ``<work dir>/cache`` for a cross-validation config, else beside the work dir.

    Both give the same folder for a config's folds, whether trained by one run of the whole
    config or as separate ``fold<k>.json`` jobs.
    """
    work_dir = Path(work_dir)
    return work_dir / "cache" if experiment.cross_validation else work_dir.parent / "cache"


def build_components(experiment):
    """Build every component the config names once, so that its mistakes surface before any file is read."""
    parts = build_parts(experiment, torch.device("cpu"), amp=False)  # the precision's warnings are for the run
    if experiment.training.pretrained:
        load_matching_weights(parts.model, experiment.training.pretrained)
    for split in ("training", "validation"):  # each split's transforms, augmentation included
        build_dataset(experiment.dataset, experiment.labels, [], split)
    Inferer.from_experiment(experiment)
    if experiment.cross_validation:
        fold_configs(experiment)


def check_experiment(experiment, work_dir, cache_dir=None, device=torch.device("cpu"), log_copy=None):
    """Build every component, check the output folders (and the log copy's path), the trackers (their packages,
    a server's answer) and every case's files and channels, then run one step of every component and check that a
    step at the real size fits on ``device`` (``dry_run``), before any work.

    Cases that pass the value checks are remembered under ``cache_dir`` (None: not remembered).
    """
    build_components(experiment)
    check_output_folder(work_dir)
    if cache_dir is not None:
        require_writable(cache_dir, "cache folder", folder=True, hint=" (see --cache_dir)")
    if log_copy:
        check_log_copy(experiment, log_copy)
    require_trackers(experiment.training.trackers, work_dir)
    cases = [case for group in experiment.groups.values() for case in group]
    preflight(cases, experiment.labels.values, cache_dir)
    check_channels(cases, experiment.in_channels, "; give the model one input channel per image")
    dry_run(experiment, device)


def check_log_copy(experiment, log_copy):
    """Raise when the log copy (``--training_log_filename``) is one of the config's files, not a .csv, or in a folder
    that cannot be made or written."""
    check_new_output(log_copy, experiment.input_files(), "--training_log_filename", ".csv")
    require_writable(log_copy, "--training_log_filename")


def resolved_settings(experiment):
    """The config with every default filled in (the schema's and the named classes'), for ``--check``."""
    return resolved(experiment.source, {name: getattr(experiment, name) for name in SECTIONS})


def check_output_folder(work_dir):
    """Raise when ``work_dir`` cannot be created or written, before any work is done."""
    require_writable(work_dir, "output folder", folder=True, hint=" (see --output_dir)")


def require_cross_validation(experiment, flag):
    """Raise when ``flag`` is used with a config that has no ``cross_validation`` section."""
    if not experiment.cross_validation:
        raise UserError(f"{experiment.filename}: {flag} needs a 'cross_validation' section")


def setup_cross_validation(experiment, work_dir, slurm=None):
    """Write ``fold<k>.json`` and the SLURM job array ``submit_folds.sh`` that trains each fold; returns the script."""
    require_cross_validation(experiment, "--setup_crossval_only")
    check_experiment(experiment, work_dir)
    fold_filenames = write_fold_configs(experiment, work_dir)
    script = write_slurm_script(work_dir, len(fold_filenames), Path(work_dir).name, **(slurm or {}))
    log.info("wrote %d fold configs and %s; train one fold with: unet3d-train --config_filename %s",
             len(fold_filenames), script.name, fold_filenames[0])
    return script


def train_experiment(experiment, work_dir, device, context=distributed.Context(), fold=None, options=RunOptions()):
    """Train (every fold of, or fold ``fold`` of) an experiment and predict its other groups; returns ``work_dir``.

    The config as read (``--set`` included, data paths absolute) is kept as
    ``<work_dir>/config.json``. The main process holds the lock of ``work_dir`` (but for a
    single ``fold``) and of each fold's folder, so a second run into one folder is refused.
    Under torchrun every process runs this with its own ``context``; only the main one writes.
    """
    if fold is not None:
        require_cross_validation(experiment, "--fold")
        if not 1 <= fold <= experiment.cross_validation.n_folds:
            raise UserError(f"--fold {fold}: the config has folds 1 to {experiment.cross_validation.n_folds}")
    if options.log_copy and experiment.cross_validation and fold is None:
        raise UserError("--training_log_filename names one log: give --fold K with a cross-validation config")
    options = dataclasses.replace(options, cache_dir=options.cache_dir or default_cache_dir(experiment, work_dir))
    check_experiment(experiment, work_dir, options.cache_dir, device, options.log_copy)
    # Jobs of single folds (--fold K) may share the parent folder: they write the same fold configs.
    with locked(work_dir, context, fold is None):
        if context.is_main and fold is None:
            write_if_changed(experiment.source, Path(work_dir) / EFFECTIVE_CONFIG)
        if not experiment.cross_validation:
            train_and_predict(experiment, work_dir, device, context, options)
            write_run_reports(work_dir, context, device)
            return work_dir
        fold_filenames = write_fold_configs(experiment, work_dir, write=context.is_main)
        distributed.barrier(context)
        for fold_filename in [fold_filenames[fold - 1]] if fold else fold_filenames:
            log.info("fold %s", fold_filename.stem)
            fold_experiment = load_experiment(fold_filename, options.allow_unknown_keys)
            with locked(Path(work_dir) / fold_filename.stem, context):  # a fold may also run as a job of its own
                train_and_predict(fold_experiment, Path(work_dir) / fold_filename.stem, device, context, options)
        if context.is_main:
            summarize_cross_validation(experiment, work_dir, require_all=True)
        write_run_reports(Path(work_dir) / f"fold{fold}" if fold else work_dir, context, device)
    return work_dir


def write_run_reports(folder, context, device):
    """``report.html`` in ``folder`` and the work folders below it, by the main process. A report that cannot
    be written is a warning, not a failure: the run's models, predictions and evaluations are on disk."""
    if not context.is_main:
        return
    device = torch.device(device)
    name = f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)
    try:
        write_reports(folder, ReportOptions(device=name))
    except (UserError, OSError) as error:
        log.warning("report.html not written (%s); write it with: unet3d-report %s", error, folder)


def locked(folder, context, wanted=True):
    """``folder``'s lock for the main process (see ``unet3d.runs.lock``); nothing for the others."""
    return model_folder_lock(folder) if context.is_main and wanted else nullcontext()


def summarize_cross_validation(experiment, work_dir, require_all=False):
    """Write ``cv_summary.csv`` and print it; with ``require_all``, only once every fold has a log.

    Once every fold is trained, the post-processing is chosen on the out-of-fold predictions
    (``postprocessing.json``, see ``unet3d.runs.postprocessing``), printed, and applied to the
    folds' predictions of the other groups (``fold<k>/predictions/<group>_postprocessed``).
    """
    require_cross_validation(experiment, "--summarize")
    n_folds = experiment.cross_validation.n_folds
    fold_dirs = [Path(work_dir) / f"fold{k}" for k in range(1, n_folds + 1)]
    trained = [d for d in fold_dirs if (d / "training_log.csv").is_file()]
    if require_all and len(trained) < n_folds:
        log.info("%d of %d folds trained; the summary is written once all are", len(trained), n_folds)
        return
    table = summarize_folds(fold_dirs, experiment.training)
    if table is None:
        raise UserError(f"{work_dir}: no fold has a training_log.csv yet")
    write_csv(table, Path(work_dir) / "cv_summary.csv")
    print(format_summary(table))
    if len(trained) < n_folds:
        log.info("post-processing is chosen by cross-validation once all %d folds are trained", n_folds)
        return
    steps, decision = decide_postprocessing(experiment, work_dir)
    if steps is not None:
        print(f"\npost-processing chosen on the out-of-fold predictions ({POSTPROCESSING_FILE}):")
        print(format_decision(decision))
        postprocess_fold_predictions(experiment, work_dir, steps)


def train_and_predict(experiment, work_dir, device, context=distributed.Context(), options=RunOptions()):
    """Train one model into ``work_dir`` then predict every group but training with its best weights.

    Groups with labels (validation) are evaluated into ``predictions/<group>/evaluation.csv``.

    Predictions of a model that trained further in this call replace older ones; a rerun
    of a finished model only fills in predictions that are missing.
    """
    work_dir = Path(work_dir)
    if options.n_examples and context.is_main:
        write_examples(experiment, work_dir, options.n_examples, options.cache_dir)
    trained_epochs = fit(experiment, work_dir, device, context, num_workers=options.num_workers,
                         cache_dir=options.cache_dir, restart=options.restart, pin_memory=options.pin_memory,
                         log_copy=options.log_copy)
    if context.is_main:
        predict_groups(experiment, work_dir, device, trained_epochs, options.num_workers)


def best_weights(work_dir):
    """The weights a trained model predicts with: ``model_best.pth`` in ``work_dir``, else ``model.pth``."""
    best = Path(work_dir) / "model_best.pth"
    return best if best.is_file() else Path(work_dir) / "model.pth"


def predict_groups(experiment, work_dir, device, trained_epochs, num_workers=0):
    """Predict every group but training with the best weights in ``work_dir``; evaluate those with labels.

    After ``trained_epochs`` of new training every prediction is written again; after none,
    only the missing ones are.
    """
    model = trained_model(experiment.model, best_weights(work_dir), device)
    for group, cases in experiment.groups.items():
        if group == "training":
            continue
        output_dir = work_dir / "predictions" / group
        todo = list(cases)
        if not trained_epochs:
            todo = [case for case in todo
                    if not prediction_path(case, output_dir, experiment.prediction.output_format).exists()]
        if todo:
            predict_cases(experiment, model, todo, output_dir, device, overwrite=True, num_workers=num_workers)
        if all(case.label for case in cases) and (todo or not (output_dir / "evaluation.csv").is_file()):
            # evaluation.csv, evaluation_summary.csv
            evaluate_folder(output_dir, group_label_files(experiment, group), experiment.labels)
