"""A folder of predictions against reference labels: per-case CSV, summary CSV and table.

Predictions are ``<prediction_dir>/<case id>.nii[.gz]`` label maps, as ``unet3d-predict``
writes them. References come from a config group's ``label`` entries or a label folder
holding ``<case id>.nii[.gz]`` files or BraTS case folders ``<id>/<id>_seg.nii[.gz]``.
"""

import logging
from pathlib import Path

import nibabel
import numpy as np
import pandas

from unet3d.atomic import write_csv
from unet3d.data.files import NIFTI_SUFFIX, cases
from unet3d.data.labels import BRATS_LABELS, region_masks, region_names
from unet3d.errors import UserError
from unet3d.evaluate.metrics import METRICS, region_metrics

log = logging.getLogger("unet3d")

STATISTICS = {
    "mean": "mean",
    "std": "std",
    "median": "median",
    "25%": lambda values: values.quantile(0.25),
    "75%": lambda values: values.quantile(0.75),
    "count": "count",
}


def nifti_files(folder):
    """``{name without .nii[.gz]: path}`` for the NIfTI files directly in ``folder`` (not hidden ones)."""
    return {NIFTI_SUFFIX.sub("", p.name): p for p in sorted(Path(folder).iterdir())
            if p.is_file() and not p.name.startswith(".") and NIFTI_SUFFIX.search(p.name)}


def label_files(label_dir):
    """Reference labels in ``label_dir``: ``<case id>.nii[.gz]`` files and BraTS ``<id>/<id>_seg.nii[.gz]``."""
    label_dir = Path(label_dir)
    if not label_dir.is_dir():
        raise UserError(f"--label_dir {label_dir}: not a folder")
    result = nifti_files(label_dir)
    for case_dir in sorted(p for p in label_dir.iterdir() if p.is_dir()):
        for suffix in (".nii.gz", ".nii"):
            if (case_dir / f"{case_dir.name}_seg{suffix}").is_file():
                result.setdefault(case_dir.name, case_dir / f"{case_dir.name}_seg{suffix}")
                break
    return result


def group_label_files(config, group):
    """Reference labels of a config group: ``{case id: label path}``."""
    labelled = {case["id"]: case["label"] for case in cases(config, group) if "label" in case}
    if not labelled:
        raise UserError(f"config key '{group}_filenames' has no 'label' entries to evaluate against")
    return labelled


def read_label_map(path):
    """``(integer array, affine)`` of a label map; a probability map is a UserError."""
    image = nibabel.load(path)
    if len(image.shape) != 3:
        raise UserError(f"{path}: expected a 3D label map, got shape {image.shape} (probability maps are not evaluated)")
    return np.asarray(image.dataobj).round().astype(np.int32), image.affine


def evaluate_case(prediction_file, reference_file, labels, hierarchy, hausdorff=True):
    """Rows of ``region_metrics`` for one case, after checking both files share a grid."""
    predicted, affine = read_label_map(prediction_file)
    reference, reference_affine = read_label_map(reference_file)
    if predicted.shape != reference.shape or not np.allclose(affine, reference_affine, atol=1e-3):
        raise UserError(f"{prediction_file}: not on the grid of {reference_file} "
                        f"(shapes {predicted.shape} and {reference.shape}, or affines differ)")
    return region_metrics(region_masks(predicted, labels, hierarchy), region_masks(reference, labels, hierarchy),
                          reference_affine, region_names(labels, hierarchy), hausdorff)


def evaluate_files(prediction_files, reference_files, labels, hierarchy, hausdorff=True):
    """Per case and region metrics as a DataFrame (columns ``case``, ``region``, ``METRICS``)."""
    unmatched = sorted(set(prediction_files) - set(reference_files))
    if unmatched:
        raise UserError(f"{len(unmatched)} prediction(s) have no reference label: {', '.join(unmatched[:5])}")
    if not prediction_files:
        raise UserError("no predictions (<case id>.nii.gz) to evaluate")
    missing = len(set(reference_files) - set(prediction_files))
    if missing:
        log.info("%d reference case(s) have no prediction and are not evaluated", missing)
    rows = []
    for case_id in sorted(prediction_files):
        for row in evaluate_case(prediction_files[case_id], reference_files[case_id], labels, hierarchy, hausdorff):
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


def evaluate_predictions(prediction_dir, reference_files, labels=BRATS_LABELS, hierarchy=True, output_filename=None,
                         hausdorff=True):
    """Evaluate ``prediction_dir`` against ``{case id: label path}``; writes both CSVs, returns ``(per_case, summary)``.

    The per-case CSV goes to ``output_filename`` (default ``<prediction_dir>/evaluation.csv``)
    and the summary beside it as ``<name>_summary.csv``.
    """
    prediction_dir = Path(prediction_dir)
    if not prediction_dir.is_dir():
        raise UserError(f"--prediction_dir {prediction_dir}: not a folder")
    per_case = evaluate_files(nifti_files(prediction_dir), reference_files, list(labels), hierarchy, hausdorff)
    summary = summarize(per_case)
    output_filename = Path(output_filename or prediction_dir / "evaluation.csv")
    write_csv(per_case, output_filename)
    write_csv(summary, summary_filename(output_filename))
    log.info("wrote %s and %s", output_filename, summary_filename(output_filename))
    return per_case, summary


def evaluate_folder(prediction_dir, config=None, group=None, label_dir=None, labels=None, hierarchy=False,
                    output_filename=None, hausdorff=True):
    """``evaluate_predictions`` with references from a config group or a label folder.

    Labels: ``labels`` and ``hierarchy`` when given, else the config's ``dataset.labels``
    and ``setup_label_hierarchy``, else the BraTS hierarchy 2, 1, 4.
    """
    if (group is None) == (label_dir is None):
        raise UserError("give the references with either --config_filename and --group, or --label_dir")
    if group is not None and config is None:
        raise UserError("--group needs --config_filename")
    if not labels and config is not None and config["dataset"].get("labels"):
        labels, hierarchy = config["dataset"]["labels"], config["dataset"].get("setup_label_hierarchy", False)
    elif not labels:
        labels, hierarchy = BRATS_LABELS, True
    references = group_label_files(config, group) if group is not None else label_files(label_dir)
    return evaluate_predictions(prediction_dir, references, labels, hierarchy, output_filename, hausdorff)
