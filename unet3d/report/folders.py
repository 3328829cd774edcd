"""What a work folder holds for its report: a cross-validation run, one model (a fold or a run of its own), or an
evaluated prediction folder; and where each case's prediction, reference and images are."""

import dataclasses
import re
from pathlib import Path

import pandas

from unet3d.config.experiment import load_experiment
from unet3d.errors import UserError, listing
from unet3d.evaluate.evaluation import image_files_in

EVALUATION = "evaluation.csv"
TRAINING_LOG = "training_log.csv"
CV_SUMMARY = "cv_summary.csv"
CONFIG = "config.json"
FOLD = re.compile(r"fold\d+")


@dataclasses.dataclass(frozen=True)
class CaseFiles:
    """One case's files: its predicted label map, its reference label map (None: unlabelled) and its images."""

    id: str
    prediction: Path
    reference: Path = None
    images: tuple = ()


@dataclasses.dataclass(frozen=True)
class PredictionGroup:
    """A folder of predictions: its title, its cases' files (``{id: CaseFiles}``), its label scheme and, when
    evaluated, its per-case metrics (``evaluation.csv``'s DataFrame, a ``fold`` column where folds are merged)."""

    title: str
    cases: dict
    scheme: object
    per_case: pandas.DataFrame = None


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """A model's folder and its training log (a DataFrame)."""

    name: str
    folder: Path
    log: pandas.DataFrame


@dataclasses.dataclass(frozen=True)
class ReportInputs:
    """Everything one report shows: the folder, its experiment (None when unknown), trained models, the
    cross-validation summary, and the prediction groups."""

    folder: Path
    experiment: object
    models: tuple = ()
    cv_summary: pandas.DataFrame = None
    groups: tuple = ()


def run_experiment(folder):
    """The ``Experiment`` a run or fold folder was trained with (its ``config.json``, or ``fold<k>.json`` beside a
    fold's folder), or None when the folder holds neither. A run whose folds were trained as jobs of their own
    (``--fold K``) keeps no ``config.json``: its first fold's config stands for it (same labels and settings)."""
    folder = Path(folder)
    fold_config = folder.parent / f"{folder.name}.json" if FOLD.fullmatch(folder.name) else None
    first_fold = next((folder / f"{fold.name}.json" for fold in fold_folders(folder)
                       if (folder / f"{fold.name}.json").is_file()), None)
    for config in (folder / CONFIG, fold_config, first_fold):
        if config is not None and config.is_file():
            return load_experiment(config)
    return None


def is_run(folder):
    """Whether ``folder`` holds a trained model (a training log) or a cross-validation run (a summary, folds)."""
    folder = Path(folder)
    return (folder / TRAINING_LOG).is_file() or (folder / CV_SUMMARY).is_file() or any(fold_folders(folder))


def fold_folders(folder):
    """The ``fold<k>`` folders of a cross-validation run that hold a training log, in fold order."""
    folds = [p for p in Path(folder).glob("fold*") if FOLD.fullmatch(p.name) and (p / TRAINING_LOG).is_file()]
    return sorted(folds, key=lambda p: int(p.name[4:]))


def report_folders(folder):
    """``folder`` and the work folders below it that get a report: each fold, each evaluated prediction folder."""
    folder = Path(folder)
    found = [folder]
    for model in [*fold_folders(folder), folder]:
        found += [p for p in sorted((model / "predictions").glob("*")) if (p / EVALUATION).is_file()]
    found[1:1] = fold_folders(folder)
    return found


def read_inputs(folder, references=None, scheme=None, images=None, experiment=None):
    """The ``ReportInputs`` of a run, fold or model folder, or of an evaluated prediction folder.

    ``references`` (``{case id: label path}``), ``scheme``, ``images`` (``{case id: image paths}``) and the
    ``experiment`` whose config named them are those a prediction folder was evaluated with, when it lies outside a
    run (``unet3d-evaluate``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder")
    if (folder / EVALUATION).is_file():
        return prediction_folder_inputs(folder, references, scheme, images, experiment)
    if is_run(folder):
        return run_inputs(folder)
    raise UserError(f"{folder}: holds no {EVALUATION}, {TRAINING_LOG} or {CV_SUMMARY}; expected a run folder "
                    "(as unet3d-train writes) or a prediction folder evaluated by unet3d-evaluate")


def prediction_folder_inputs(folder, references=None, scheme=None, images=None, experiment=None):
    """The inputs of one evaluated prediction folder; a run's config gives its references when none are given."""
    run = run_experiment(folder.parent.parent) if folder.parent.name == "predictions" else None
    group = config_group(folder, run)
    if references is None:
        if group is None:
            raise UserError(f"{folder}: not a prediction folder of a run, so its references are not known; give them "
                            "as unet3d-evaluate took them (--label_dir, or --config_filename and --group)")
        return ReportInputs(folder, run, groups=(group_of(folder, run, group),))
    cases = case_files(folder, references, images or {})
    group = PredictionGroup(folder.name, cases, scheme, read_evaluation(folder / EVALUATION, cases, scheme))
    return ReportInputs(folder, run or experiment, groups=(group,))


def run_inputs(folder):
    """The inputs of a cross-validation run (folds' validation cases merged) or of one model."""
    experiment = run_experiment(folder)
    if experiment is None:
        raise UserError(f"{folder}: no {CONFIG} (the config a run keeps) to read the cases and labels from")
    folds = fold_folders(folder)
    if not folds:
        model = TrainedModel(folder.name, folder, read_csv(folder / TRAINING_LOG))
        folders = [p for p in sorted((folder / "predictions").glob("*")) if p.is_dir() and config_group(p, experiment)]
        groups = [group_of(p, experiment, config_group(p, experiment)) for p in folders]
        return ReportInputs(folder, experiment, (model,), groups=tuple(groups))
    models = tuple(TrainedModel(fold.name, fold, read_csv(fold / TRAINING_LOG)) for fold in folds)
    summary = read_csv(folder / CV_SUMMARY) if (folder / CV_SUMMARY).is_file() else None
    evaluated = [fold for fold in folds if (fold / "predictions" / "validation" / EVALUATION).is_file()]
    if not evaluated:
        return ReportInputs(folder, experiment, models, summary)
    parts = [group_of(fold / "predictions" / "validation", run_experiment(fold), "validation") for fold in evaluated]
    per_case = pandas.concat([part.per_case.assign(fold=fold.name) for part, fold in zip(parts, evaluated)])
    cases = {case_id: files for part in parts for case_id, files in part.cases.items()}
    title = f"validation of {len(evaluated)} fold(s)"
    merged = PredictionGroup(title, cases, experiment.labels, per_case.reset_index(drop=True))
    return ReportInputs(folder, experiment, models, summary, (merged,))


def config_group(folder, experiment):
    """The config group a run's ``predictions/<group>`` folder holds (also ``<group>_<variant>``, such as
    post-processed copies), or None."""
    if experiment is None:
        return None
    names = [g for g in experiment.groups if folder.name == g or folder.name.startswith(f"{g}_")]
    return max(names, key=len, default=None)


def group_of(folder, experiment, group):
    """The ``PredictionGroup`` of a run's ``predictions/<group>`` folder, evaluated or not."""
    config_cases = {case.id: case for case in experiment.cases(group)}
    references = {i: case.label for i, case in config_cases.items() if case.label}
    images = {i: case.images for i, case in config_cases.items()}
    evaluation = folder / EVALUATION
    cases = case_files(folder, references, images, evaluated=evaluation.is_file())
    per_case = read_evaluation(evaluation, cases, experiment.labels) if evaluation.is_file() else None
    return PredictionGroup(folder.name, cases, experiment.labels, per_case)


def group_images(experiment, group):
    """``{case id: image paths}`` of a config group; nothing without a group."""
    return {case.id: case.images for case in experiment.cases(group)} if group else {}


def case_files(folder, references, images, evaluated=True):
    """``{case id: CaseFiles}`` of the label maps in ``folder`` (with a reference, when ``evaluated``)."""
    predictions = image_files_in(folder)
    if evaluated:
        predictions = {i: path for i, path in predictions.items() if i in references}
    return {i: CaseFiles(i, path, references.get(i), tuple(images.get(i, ()))) for i, path in predictions.items()}


def read_evaluation(path, cases, scheme):
    """``evaluation.csv`` as a DataFrame, refused when a case it scores has no label map or reference any more, or
    when it scores regions ``scheme`` does not name."""
    per_case = read_csv(path)
    missing = sorted(set(per_case["case"].astype(str)) - set(cases))
    if missing:
        raise UserError(f"{path}: scores case(s) whose label map or reference is missing: {listing(missing)}")
    unknown = [region for region in dict.fromkeys(per_case["region"].astype(str)) if region not in scheme.names]
    if unknown:
        raise UserError(f"{path}: scores region(s) {listing(unknown)}, which the labels ({', '.join(scheme.names)}) "
                        "do not name; give the labels it was evaluated with")
    return per_case.assign(case=per_case["case"].astype(str), region=per_case["region"].astype(str))


def read_csv(path):
    """A CSV unet3d wrote, as a DataFrame; a UserError naming the file when it cannot be read."""
    try:
        return pandas.read_csv(path)
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: cannot read ({error})") from None
