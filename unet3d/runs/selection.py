"""Choosing between configurations trained with cross-validation, as nnU-Net's ``find_best_configuration`` does.

Each configuration (a 3d and a 2d one of the same dataset, say) has been trained by
``unet3d-train`` on the same cases and folds. Its score is its mean out-of-fold Dice per
region: the folds' validation predictions, evaluated after training
(``<work dir>/fold<k>/predictions/validation/evaluation.csv``). Their ensemble is scored the
same way: each fold's validation cases are predicted by every configuration's model of that
fold, and the probabilities averaged on the case's input grid (``unet3d.predict.ensemble``).
The best mean over regions wins; on a tie the single configuration, and the first given.
``selection.json`` records the choice for ``unet3d-predict --selection``.
"""

import dataclasses
import logging
import os
from pathlib import Path

import pandas

from unet3d.atomic import write_csv, write_text
from unet3d.config.experiment import check_new_output, load_experiment
from unet3d.config.load import parse_json, write_json
from unet3d.errors import UserError
from unet3d.evaluate.evaluation import evaluate_folder, group_label_files, image_files_in
from unet3d.models.weights import trained_model
from unet3d.predict.ensemble import Member, check_members, predict_ensemble
from unet3d.predict.inputs import check_modalities, select_cases
from unet3d.predict.postprocess import AUTO, POSTPROCESSING_FILE, describe_steps, read_postprocessing
from unet3d.runs.postprocessing import write_decision
from unet3d.runs.workflow import best_weights, require_cross_validation, work_dir_for

log = logging.getLogger("unet3d")
ENSEMBLE = "ensemble"


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A configuration trained with cross-validation: its config file, ``Experiment``, work folder and the
    ``Experiment`` of each fold (``fold<k>.json``, as trained)."""

    config_filename: Path
    experiment: object
    work_dir: Path
    folds: list

    @property
    def name(self):
        """The configuration's name: its config file's stem."""
        return self.config_filename.stem

    def validation_ids(self):
        """Per fold, the sorted ids of its validation cases."""
        return [sorted(case.id for case in fold.cases("validation")) for fold in self.folds]

    def evaluation(self, k):
        """Fold ``k``'s (from 1) evaluation of its validation predictions."""
        return fold_evaluation(self.work_dir, k)


def fold_evaluation(work_dir, k):
    """Where training wrote fold ``k``'s (from 1) evaluation of its validation predictions."""
    return Path(work_dir) / f"fold{k}" / "predictions" / "validation" / "evaluation.csv"


def trained_run(config_filename, output_dir=None):
    """The ``TrainedRun`` of ``config_filename`` trained into ``output_dir`` (as ``unet3d-train`` was given it);
    a UserError when a fold is not trained and evaluated."""
    experiment = load_experiment(config_filename)
    require_cross_validation(experiment, "--select_best")
    work_dir = work_dir_for(config_filename, output_dir)
    folds = []
    for k in range(1, experiment.cross_validation.n_folds + 1):
        if not fold_evaluation(work_dir, k).is_file():
            raise UserError(f"{fold_evaluation(work_dir, k)} is missing: train every fold of {config_filename} first "
                            f"(unet3d-train --config_filename {config_filename}; --output_dir as it was trained)")
        folds.append(load_experiment(work_dir / f"fold{k}.json"))
    return TrainedRun(Path(config_filename), experiment, work_dir, folds)


def check_same_folds(runs):
    """Raise unless every run validates the same cases in each fold as the first."""
    reference = runs[0].validation_ids()
    for run in runs[1:]:
        if run.validation_ids() != reference:
            raise UserError(f"{run.config_filename}: its folds validate other cases than {runs[0].config_filename}'s; "
                            "configurations are compared on the same folds (the same training_filenames and "
                            "cross_validation settings)")
    check_members([Member(run.experiment, []) for run in runs])


def out_of_fold_dice(per_case, names):
    """``{region: mean Dice}`` over every out-of-fold case of the per-case evaluation ``per_case``."""
    means = per_case.groupby("region")["dice"].mean()
    return {name: float(means[name]) for name in names}


def run_dice(run):
    """A run's mean out-of-fold Dice per region, from its folds' ``evaluation.csv``."""
    per_case = pandas.concat([pandas.read_csv(run.evaluation(k)) for k in range(1, len(run.folds) + 1)])
    expected = sum(len(ids) for ids in run.validation_ids())
    if per_case["case"].nunique() != expected:
        raise UserError(f"{run.work_dir}: the folds' evaluation.csv hold {per_case['case'].nunique()} cases, not "
                        f"the {expected} validated; train the folds again to predict the rest")
    return out_of_fold_dice(per_case, run.experiment.labels.names)


def ensemble_dice(runs, output_dir, device, num_workers=0):
    """The mean out-of-fold Dice per region of the runs' ensemble, its predictions written to ``output_dir``, where
    the post-processing is then chosen on them as a run's is on its folds' (``postprocessing.json``)."""
    references = {}
    for k, folds in enumerate(zip(*(run.folds for run in runs)), start=1):
        members = [Member(fold, [trained_model(fold.model, best_weights(run.work_dir / f"fold{k}"), device)])
                   for run, fold in zip(runs, folds)]
        cases = folds[0].cases("validation")
        log.info("fold %d: predicting its %d validation case(s) with the ensemble", k, len(cases))
        predict_ensemble(members, cases, output_dir, device, overwrite=True, num_workers=num_workers)
        references.update(group_label_files(folds[0], "validation"))
    scheme = runs[0].experiment.labels
    per_case, _ = evaluate_folder(output_dir, references, scheme)
    if runs[0].experiment.prediction.min_component_size is None:  # else that config's clean-up stands, as in a run
        predictions = image_files_in(output_dir)
        write_decision({case: (predictions[case], label) for case, label in references.items()}, scheme, output_dir,
                       len(runs[0].folds))
    return out_of_fold_dice(per_case, scheme.names)


def dice_table(scores, names):
    """The table of ``{configuration: {region: Dice}}``: a row per configuration, a column per region, the mean."""
    rows = [{"configuration": name, **{f"dice_{region}": dice[region] for region in names},
             "mean": sum(dice.values()) / len(dice)} for name, dice in scores.items()]
    return pandas.DataFrame(rows)


def best_of(table):
    """The configuration of the highest mean; the first on a tie (single configurations come before the ensemble)."""
    return str(table.loc[table["mean"].idxmax(), "configuration"])


def select_best(config_filenames, output_filename=None, output_dir=None, device="cpu", num_workers=0):
    """Compare configurations trained with cross-validation and their ensemble; write ``selection.json`` with the
    choice, and ``selection.md`` and ``selection.csv`` with the table; returns the table."""
    if len(config_filenames) < 2:
        raise UserError("--select_best compares two or more configs trained with cross-validation; got "
                        f"{len(config_filenames)}")
    names = [Path(name).stem for name in config_filenames]
    if len(set(names)) != len(names) or ENSEMBLE in names:
        raise UserError(f"--select_best {' '.join(map(str, config_filenames))}: each config needs a name of its own, "
                        f"other than '{ENSEMBLE}' (the table's row of their ensemble)")
    output = Path(output_filename or Path(output_dir or Path(config_filenames[0]).parent) / "selection.json")
    runs = [trained_run(name, output_dir) for name in config_filenames]
    inputs = [path for run in runs for path in (run.config_filename, *run.experiment.input_files())]
    check_new_output(output, inputs, "--output_filename", ".json")
    for path in (output.with_suffix(".md"), output.with_suffix(".csv")):
        check_new_output(path, inputs, "--output_filename")
    check_same_folds(runs)
    scores = {run.name: run_dice(run) for run in runs}
    scores[ENSEMBLE] = ensemble_dice(runs, output.with_name(f"{output.stem}_ensemble"), device, num_workers)
    table = dice_table(scores, runs[0].experiment.labels.names)
    write_selection(output, runs, table)
    return table


def write_selection(output, runs, table):
    """Write ``selection.json`` (the choice, its configurations' files, the table), ``selection.md`` and
    ``selection.csv`` beside it, and print the table."""
    selected = best_of(table)
    members = [run for run in runs if selected in (ENSEMBLE, run.name)]
    base = output.resolve().parent
    record = {
        "selected": selected,
        "members": [run.name for run in members],
        "configurations": {run.name: {"config_filename": os.path.relpath(run.config_filename.resolve(), base),
                                      "work_dir": os.path.relpath(run.work_dir.resolve(), base),
                                      "n_folds": len(run.folds)} for run in runs},
        "n_cases": sum(len(ids) for ids in runs[0].validation_ids()),
        "table": table.to_dict(orient="records"),
        "postprocessing": None,
    }
    chosen = output.with_name(f"{output.stem}_ensemble") / POSTPROCESSING_FILE
    if selected == ENSEMBLE and chosen.is_file():  # a single configuration's is its run's own, found by prediction
        record["postprocessing"] = os.path.relpath(chosen.resolve(), base)
    base.mkdir(parents=True, exist_ok=True)
    write_json(record, output)
    write_csv(table, output.with_suffix(".csv"))
    text = selection_markdown(record, table)
    write_text(output.with_suffix(".md"), text)
    print(text, end="")
    log.info("wrote %s, %s and %s", output, output.with_suffix(".md").name, output.with_suffix(".csv").name)


def selection_markdown(record, table):
    """The selection as Markdown: the table of mean out-of-fold Dice and the choice."""
    columns = list(table.columns)
    lines = [f"# Selection: {record['selected']}", "",
             f"Mean out-of-fold Dice of {record['n_cases']} cases in {table.shape[0] - 1} configurations' "
             f"cross-validation folds, and of their ensemble (probabilities averaged); the highest mean is chosen.",
             "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(str(v) if isinstance(v, str) else f"{v:.4f}" for v in row) + " |")
    members = ", ".join(record["configurations"][name]["config_filename"] for name in record["members"])
    lines += ["", f"Selected: **{record['selected']}** ({members}), before post-processing, as nnU-Net compares. "
              "Predict with it: `unet3d-predict --selection <this selection.json> --images ... --output_dir ...`."]
    return "\n".join(lines) + "\n"


def read_selection(selection_filename):
    """``(runs, post-processing)`` of a ``selection.json``: ``[(config filename, [its folds' model files])]`` of the
    configurations it chose (one, or an ensemble's members), and the ensemble's ``postprocessing.json`` or None."""
    path = Path(selection_filename)
    try:
        record = parse_json(path.read_text(encoding="utf-8"), path)
        base = path.resolve().parent
        chosen = [record["configurations"][name] for name in record["members"]]
        postprocessing = record.get("postprocessing") and base / record["postprocessing"]
    except FileNotFoundError:
        raise UserError(f"--selection {path}: file not found") from None
    except (KeyError, TypeError, AttributeError):
        raise UserError(f"--selection {path}: not a selection.json (unet3d-train --select_best writes one)") from None
    runs = []
    for entry in chosen:
        work_dir = base / entry["work_dir"]
        models = [best_weights(work_dir / f"fold{k}") for k in range(1, entry["n_folds"] + 1)]
        missing = [str(m) for m in models if not m.is_file()]
        if missing:
            raise UserError(f"--selection {path}: {missing[0]} is missing (the selected runs were moved or deleted)")
        runs.append((base / entry["config_filename"], models))
    return runs, postprocessing


def predict_selected(selection, output_dir, device, prediction_changes=None, overrides=(), allow_unknown_keys=False,
                     cases=None, postprocessing=AUTO, **options):
    """Predict ``cases`` (``group``, ``images``, ``input_dir``, ``ids``: of the first config) with the ensemble of a
    ``read_selection``, each configuration by its folds' models; returns the written paths.

    ``prediction_changes`` (the command line's) apply to every configuration's prediction settings, and
    ``overrides`` (``--set``) to every config. ``postprocessing`` is a ``postprocessing.json``, None, or ``AUTO``:
    the one chosen on the ensemble's out-of-fold predictions. The other ``options`` are ``predict_ensemble``'s.
    """
    runs, chosen = selection
    experiments = [load_experiment(config, allow_unknown_keys, overrides) for config, _ in runs]
    case_list = select_cases(experiments[0], **(cases or {}))
    for experiment in experiments[1:]:
        check_modalities(experiment, case_list)
    members = []
    for experiment, (config, model_files) in zip(experiments, runs):
        log.info("%s: %d model(s): %s", config.name, len(model_files), ", ".join(map(str, model_files)))
        models = [trained_model(experiment.model, path, device) for path in model_files]
        members.append(Member(experiment, models, experiment.prediction.override(**(prediction_changes or {}))))
    path = chosen if postprocessing == AUTO else postprocessing
    if path and not options.get("save_probabilities"):
        options["postprocessing"] = ensemble_steps(path, members[0], options.get("keep_largest"))
    return predict_ensemble(members, case_list, output_dir, device, **options)


def ensemble_steps(path, first, keep_largest=False):
    """The clean-up steps of the ``postprocessing.json`` at ``path`` for an ensemble whose first ``Member`` is
    ``first``, or None where the user's own clean-up (``--keep_largest``, ``prediction.min_component_size``)
    applies instead."""
    scheme, prediction = first.experiment.labels, first.prediction
    if keep_largest or prediction.min_component_size is not None:
        log.info("the ensemble's post-processing (%s) is not applied: the clean-up is chosen already", path)
        return None
    steps = read_postprocessing(path, scheme)
    log.info("post-processing chosen on the ensemble's out-of-fold predictions (%s): %s", path,
             describe_steps(scheme, steps))
    return steps
