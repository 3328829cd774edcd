"""unet3d from Python or a notebook: train, predict and evaluate as the commands do.

A config is a path to a JSON file or a dict (whose relative data paths are taken from the
working folder). Mistakes raise ``unet3d.errors.UserError`` with the message the commands
print.
"""

from pathlib import Path

from unet3d.config.experiment import experiment_from_dict, load_experiment
from unet3d.config.overrides import apply_overrides
from unet3d.device import choose_device
from unet3d.errors import UserError
from unet3d.evaluate.evaluation import evaluate_predictions
from unet3d.predict.inference import predict as predict_experiment
from unet3d.report import evaluation_report
from unet3d.runs import workflow
from unet3d.distributed import Context


def _experiment(config, overrides=(), allow_unknown_keys=False):
    """``(Experiment, config filename or None)`` of a path or a dict."""
    if isinstance(config, dict):
        return experiment_from_dict(apply_overrides(config, overrides), allow_unknown_keys=allow_unknown_keys), None
    return load_experiment(config, allow_unknown_keys, overrides), Path(config)


def train(config, output_dir=None, name="experiment", device="auto", fold=None, overrides=(), **options):
    """Train ``config`` (every cross-validation fold, or ``fold``), then predict and evaluate its other groups,
    as ``unet3d-train`` does; returns the work folder.

    Args:
        config: a config file or a dict.
        output_dir: where the work folder goes (default: the config file's folder; needed for a dict).
        name: the work folder's name for a dict config (a file's is its name without ``.json``).
        device: "auto", "cpu", "cuda", "cuda:1", ...
        fold: train only this fold (1-based) of a cross-validation config.
        overrides: ``--set`` assignments, e.g. ``["training.n_epochs=5"]``.
        options: fields of ``unet3d.runs.workflow.RunOptions`` (``num_workers``, ``cache_dir``, ``restart``, ...).
    """
    experiment, filename = _experiment(config, overrides, options.get("allow_unknown_keys", False))
    if filename is None and output_dir is None:
        raise UserError("train(config=<dict>) needs output_dir: a dict has no folder to write beside")
    work_dir = workflow.work_dir_for(filename, output_dir) if filename else Path(output_dir) / name
    return workflow.train_experiment(experiment, work_dir, choose_device(device), Context(), fold,
                                     workflow.RunOptions(**options))


def predict(config, model_filename, output_dir, group=None, images=None, input_dir=None, ids=None, device="auto",
            overrides=(), **options):
    """Predict a config group, image lists (one list of files per case) or a BraTS folder with one model or an
    ensemble (a list of weight files or globs), as ``unet3d-predict`` does; returns the written paths.

    ``options`` are those of ``unet3d.predict.inference.predict_cases`` (``save_probabilities``,
    ``tta``, ``overwrite``, ...) and ``postprocessing`` (a ``postprocessing.json``, None, or
    "auto", the default: the one of the cross-validation run whose fold folders hold the
    models); ``prediction`` settings can be changed with ``overrides`` (e.g.
    ``["prediction.overlap=0.25"]``).
    """
    experiment, _ = _experiment(config, overrides)
    models = [model_filename] if isinstance(model_filename, (str, Path)) else list(model_filename)
    return predict_experiment(experiment, models, output_dir, choose_device(device), group=group, images=images,
                              input_dir=input_dir, ids=ids, **options)


def evaluate(prediction_dir, config=None, group=None, label_dir=None, labels=None, label_mode=None, label_names=None,
             output_filename=None, hausdorff=True, report=True):
    """Score the label maps in ``prediction_dir`` against a config group's labels or a label folder, as
    ``unet3d-evaluate`` does; returns ``(per_case, summary)`` DataFrames (also written as CSV, with ``report.html``
    beside them unless ``report`` is false)."""
    experiment = _experiment(config)[0] if config is not None else None
    per_case, summary, references, scheme = evaluate_predictions(
        prediction_dir, experiment, group, label_dir, labels, label_mode, label_names, output_filename, hausdorff)
    if report:
        evaluation_report(prediction_dir, output_filename, per_case, references, scheme, experiment, group)
    return per_case, summary
