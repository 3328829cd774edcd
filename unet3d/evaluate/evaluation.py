"""A folder of predictions against reference labels: per-case CSV, summary CSV and table.

Predictions are ``<prediction_dir>/<case id>.nii[.gz]`` label maps (or ``.nrrd``, ``.mha``),
as ``unet3d-predict`` writes them. References come from a config group's ``label`` entries
or a label folder holding ``<case id>.nii[.gz]`` files (or another format that
``unet3d.data.formats`` reads) or BraTS case folders ``<id>/<id>_seg.nii[.gz]``.
"""

import logging
from pathlib import Path

import numpy as np
import pandas

from unet3d.atomic import write_csv
from unet3d.config.experiment import check_new_output, require_writable
from unet3d.config.labels import LabelScheme, label_scheme
from unet3d.config.settings import LabelSettings
from unet3d.data.brats import label_file
from unet3d.data.checks import AFFINE_TOLERANCE_MM
from unet3d.data.formats import read_array, read_header
from unet3d.errors import UserError, listing
from unet3d.evaluate.metrics import METRICS, region_metrics
from unet3d.image_suffixes import image_stem

log = logging.getLogger("unet3d")

STATISTICS = {
    "mean": "mean",
    "std": "std",
    "median": "median",
    "25%": lambda values: values.quantile(0.25),
    "75%": lambda values: values.quantile(0.75),
    "count": "count",
}


def image_files_in(folder):
    """``{name without .nii[.gz], .nrrd, ...: path}`` for the image files directly in ``folder`` (not hidden ones)."""
    files = (p for p in sorted(Path(folder).iterdir()) if p.is_file() and not p.name.startswith("."))
    return {stem: p for p in files if (stem := image_stem(p)) is not None}


def label_files(label_dir):
    """Reference labels in ``label_dir``: ``<case id>.nii[.gz]`` files and BraTS case folders
    (``<id>/<id>_seg.nii[.gz]``, BraTS 2023's ``<id>/<id>-seg.nii.gz``)."""
    label_dir = Path(label_dir)
    if not label_dir.is_dir():
        raise UserError(f"--label_dir {label_dir}: not a folder")
    result = image_files_in(label_dir)
    for case_dir in sorted(p for p in label_dir.iterdir() if p.is_dir()):
        found = label_file(case_dir)
        if found is not None:
            result.setdefault(case_dir.name, found)
    return result


def group_label_files(experiment, group):
    """Reference labels of a config group: ``{case id: label path}``."""
    labelled = {case.id: case.label for case in experiment.cases(group) if case.label}
    if not labelled:
        raise UserError(f"config key '{group}_filenames' has no 'label' entries to evaluate against")
    return labelled


def read_label_map(path):
    """``(integer array, affine)`` of a label map; a probability map is a UserError."""
    header = read_header(path)
    if len(header.shape) != 3:
        raise UserError(f"{path}: expected a 3D label map, got shape {header.shape} (probability maps are not evaluated)")
    return np.asarray(read_array(path)).round().astype(np.int32), header.affine


def read_case(prediction_file, reference_file):
    """``(predicted, reference, affine)`` label maps of one case, after checking both files share a grid."""
    predicted, affine = read_label_map(prediction_file)
    reference, reference_affine = read_label_map(reference_file)
    if predicted.shape != reference.shape or not np.allclose(affine, reference_affine, atol=AFFINE_TOLERANCE_MM):
        raise UserError(f"{prediction_file}: not on the grid of {reference_file} "
                        f"(shapes {predicted.shape} and {reference.shape}, or affines differ)")
    return predicted, reference, reference_affine


def evaluate_case(prediction_file, reference_file, scheme, hausdorff=True):
    """Rows of ``region_metrics`` for one case, after checking both files share a grid."""
    predicted, reference, affine = read_case(prediction_file, reference_file)
    return region_metrics(scheme.masks(predicted), scheme.masks(reference), affine, scheme.names, hausdorff)


def evaluate_files(prediction_files, reference_files, scheme, hausdorff=True):
    """Per case and region metrics as a DataFrame (columns ``case``, ``region``, ``METRICS``)."""
    if not prediction_files:
        raise UserError("no predictions (<case id>.nii.gz) to evaluate")
    unmatched = sorted(set(prediction_files) - set(reference_files))
    if len(unmatched) == len(prediction_files):
        raise UserError(f"none of the {len(unmatched)} prediction(s) has a reference label: {listing(unmatched)}")
    if unmatched:
        log.warning("%d prediction(s) have no reference label and are not evaluated: %s", len(unmatched),
                    listing(unmatched))
    missing = len(set(reference_files) - set(prediction_files))
    if missing:
        log.info("%d reference case(s) have no prediction and are not evaluated", missing)
    rows = []
    for case_id in sorted(set(prediction_files) & set(reference_files)):
        if Path(prediction_files[case_id]).resolve() == Path(reference_files[case_id]).resolve():
            raise UserError(f"{prediction_files[case_id]}: is its own reference label; predictions and references "
                            "must be different files (the same folder given twice?)")
        for row in evaluate_case(prediction_files[case_id], reference_files[case_id], scheme, hausdorff):
            rows.append({"case": case_id, **row})
    return pandas.DataFrame(rows, columns=["case", "region", *METRICS])


def summarize(per_case):
    """Mean, std, median, quartiles and count (NaN skipped) of each metric, per region."""
    grouped = per_case.groupby("region", sort=False)[list(METRICS)]
    parts = [grouped.agg(statistic).assign(statistic=name) for name, statistic in STATISTICS.items()]
    summary = pandas.concat(parts).reset_index()
    order = {name: index for index, name in enumerate(STATISTICS)}
    regions = {name: index for index, name in enumerate(per_case["region"].unique())}
    summary = summary.sort_values(["region", "statistic"], key=lambda c: c.map(regions if c.name == "region" else order))
    return summary[["region", "statistic", *METRICS]].reset_index(drop=True)


def summary_table(summary):
    """The summary as text: one line per region and statistic."""
    return summary.to_string(index=False, float_format=lambda value: f"{value:.4f}")


def summary_filename(output_filename):
    """``evaluation.csv`` -> ``evaluation_summary.csv`` beside it."""
    output_filename = Path(output_filename)
    return output_filename.with_name(f"{output_filename.stem}_summary{output_filename.suffix or '.csv'}")


def check_outputs(prediction_dir, references, output_filename=None, protected=()):
    """Raise when ``prediction_dir`` is not a folder or the CSVs cannot be written where asked (one of the label
    maps or of ``protected``, a folder that cannot be made or written); returns ``(predictions by case id, output
    filename)``. Nothing is read but folder listings."""
    prediction_dir = Path(prediction_dir)
    if not prediction_dir.is_dir():
        raise UserError(f"--prediction_dir {prediction_dir}: not a folder")
    output_filename = Path(output_filename or prediction_dir / "evaluation.csv")
    predictions = image_files_in(prediction_dir)
    inputs = [*predictions.values(), *references.values(), *protected]
    for path in (output_filename, summary_filename(output_filename)):
        check_new_output(path, inputs, "--output_filename", ".csv")
    require_writable(output_filename, "--output_filename")
    return predictions, output_filename


def evaluate_folder(prediction_dir, references, scheme, output_filename=None, hausdorff=True, protected=()):
    """Evaluate ``prediction_dir`` against ``references`` (``{case id: label path}``) per region of ``scheme``
    (a ``LabelScheme``); writes both CSVs, returns ``(per_case, summary)``.

    The per-case CSV goes to ``output_filename`` (default ``<prediction_dir>/evaluation.csv``)
    and the summary beside it as ``<name>_summary.csv``; neither may be one of the label maps or of ``protected``
    (the config's files).
    """
    predictions, output_filename = check_outputs(prediction_dir, references, output_filename, protected)
    per_case = evaluate_files(predictions, references, scheme, hausdorff)
    summary = summarize(per_case)
    write_csv(per_case, output_filename)
    write_csv(summary, summary_filename(output_filename))
    log.info("wrote %s and %s", output_filename, summary_filename(output_filename))
    return per_case, summary


def reference_files(experiment=None, group=None, label_dir=None):
    """``{case id: label path}`` from a config group or a label folder (listed, not read)."""
    if (group is None) == (label_dir is None):
        raise UserError("give the references with either --config_filename and --group, or --label_dir")
    if group is not None and experiment is None:
        raise UserError("--group needs --config_filename")
    return group_label_files(experiment, group) if group is not None else label_files(label_dir)


def evaluate_predictions(prediction_dir, experiment=None, group=None, label_dir=None, labels=None, label_mode=None,
                         label_names=None, output_filename=None, hausdorff=True):
    """``unet3d-evaluate``: find the references, check every folder and file named, then read and score; returns
    ``(per_case, summary, references, scheme)``: ``evaluate_folder``'s tables, the ``{case id: label path}`` and
    the ``LabelScheme`` scored with. No label map is read before the checks have passed."""
    references = reference_files(experiment, group, label_dir)
    protected = experiment.input_files() if experiment else ()
    check_outputs(prediction_dir, references, output_filename, protected)
    scheme = evaluation_scheme(references, experiment, labels, label_mode, label_names)
    return (*evaluate_folder(prediction_dir, references, scheme, output_filename, hausdorff, protected), references,
            scheme)


def evaluation_inputs(experiment=None, group=None, label_dir=None, labels=None, label_mode=None, label_names=None):
    """``(references, scheme)`` for ``evaluate_folder``: references from a config group or a label folder.

    The label scheme is never guessed: ``labels`` (with ``label_mode``, default "labels",
    and ``label_names``) when given, else the config's, else every value present in the
    references, each its own label (and a log line says so).
    """
    references = reference_files(experiment, group, label_dir)
    return references, evaluation_scheme(references, experiment, labels, label_mode, label_names)


def evaluation_scheme(references, experiment=None, labels=None, label_mode=None, label_names=None):
    """The ``LabelScheme`` to score by: ``labels`` (with ``label_mode`` and ``label_names``), else the config's,
    else every value in the ``references`` (which are then read)."""
    if labels:
        return label_scheme(LabelSettings.from_flags(labels, label_mode, label_names))
    if label_mode or label_names:
        raise UserError("--label_mode and --label_names go with --labels")
    if experiment is not None and experiment.labels.values:
        return experiment.labels
    values = sorted(set().union(*(np.unique(read_label_map(path)[0]).tolist() for path in references.values())) - {0})
    if not values:
        raise UserError("the reference label maps hold no label but 0; give the label values with --labels")
    log.info("label values %s read from the reference label maps, each scored on its own; give --labels "
             "(and --label_mode regions for nested regions such as BraTS's) to choose", ", ".join(map(str, values)))
    return LabelScheme(tuple(values), "labels")
