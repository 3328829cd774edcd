"""``report.html``: one self-contained page per work folder (the run, each fold, each evaluated prediction
folder), written atomically and again on every call; the inputs are only read."""

import dataclasses
import logging
import time
from pathlib import Path

from unet3d.atomic import write_text
from unet3d.errors import UserError, listing
from unet3d.report import page, sections
from unet3d.report.cases import group_section
from unet3d.report.folders import (EVALUATION, PredictionGroup, ReportInputs, case_files, group_images, read_inputs,
                                   report_folders, run_experiment)

log = logging.getLogger("unet3d")
REPORT = "report.html"


@dataclasses.dataclass(frozen=True)
class ReportOptions:
    """What a report draws.

    Args:
        cases: ids of cases drawn whatever their rank.
        channel: the image channel drawn under the contours (0: the first).
        pictures: the worst cases drawn per prediction group (the page says when there are more).
        device: the device training ran on, when the report is written at its end.
    """

    cases: tuple = ()
    channel: int = 0
    pictures: int = 20
    device: str = None


def write_reports(folder, options=ReportOptions(), references=None, scheme=None, images=None, experiment=None):
    """``report.html`` in ``folder`` and in each work folder below it; returns their paths.

    A case drawn in several reports (the run's, its fold's, its prediction folder's) is read and drawn once.
    ``references``, ``scheme``, ``images`` and ``experiment`` are those of ``read_inputs``, for a prediction folder
    outside a run.
    """
    start, memo = time.perf_counter(), {}
    folders = report_folders(folder)
    inputs = [read_inputs(folders[0], references, scheme, images, experiment), *map(read_inputs, folders[1:])]
    require_cases(inputs[0], options.cases, folder)
    written = [write_report(one, options, memo) for one in inputs]
    log.info("wrote %s (%d report(s), %.1f s)", written[0], len(written), time.perf_counter() - start)
    return written


def evaluation_report(prediction_dir, output_filename, per_case, references, scheme, experiment=None, group=None,
                      options=ReportOptions()):
    """``report.html`` beside the evaluation CSV ``output_filename`` (None: ``<prediction_dir>/evaluation.csv``) of
    ``prediction_dir``, from its DataFrame ``per_case``, the ``references`` (``{case id: label path}``) and
    ``LabelScheme`` it was scored with, and the ``experiment`` whose ``group`` names the images; returns its path."""
    folder = Path(output_filename or Path(prediction_dir) / EVALUATION).parent
    cases = case_files(prediction_dir, references, group_images(experiment, group))
    run = run_experiment(folder.parent.parent) if folder.parent.name == "predictions" else None
    group = PredictionGroup(folder.name, cases, scheme, per_case.assign(case=per_case["case"].astype(str)))
    inputs = ReportInputs(folder, run or experiment, groups=(group,))
    require_cases(inputs, options.cases, folder)
    return write_report(inputs, options, {})


def require_cases(inputs, requested, folder):
    """Raise when a case asked for (``--cases``) is in none of the report's prediction groups."""
    known = {case_id for group in inputs.groups for case_id in group.cases}
    unknown = [case_id for case_id in requested if case_id not in known]
    if unknown:
        raise UserError(f"--cases: {listing(unknown)} not among the predictions of {folder}")


def write_report(inputs, options, memo):
    """Write ``<folder>/report.html`` of one ``ReportInputs``; returns its path."""
    parts = [sections.glance(inputs, options.device), sections.plan(inputs), sections.curves(inputs),
             sections.folds(inputs)]
    evaluated_first = sorted(inputs.groups, key=lambda group: group.per_case is None)
    parts += [group_section(group, options, memo) for group in evaluated_first]
    title = f"unet3d report: {inputs.folder.name}"
    path = inputs.folder / REPORT
    write_text(path, page.page(title, [part for part in parts if part is not None]))
    return path
