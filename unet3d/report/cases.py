"""A prediction group's part of the report: per region summary, volume scatter, the per-case table (worst first,
sortable) and pictures of its worst cases and of those asked for; for unlabelled predictions, pictures of the
prediction for quality control."""

import numpy as np
import pandas

from unet3d.evaluate.evaluation import read_label_map
from unet3d.evaluate.metrics import METRICS
from unet3d.report import charts, page, slices
from unet3d.report.sections import CASE_METRICS

ERROR_LEGEND = ((slices.REFERENCE, "reference contour"), (slices.PREDICTION, "prediction contour"),
                (slices.FALSE_POSITIVE, "false positive"), (slices.FALSE_NEGATIVE, "false negative"))


def ranked(per_case):
    """One row per case (mean Dice, mean HD95 and ``fold`` when present), worst first: lowest mean Dice, then
    highest mean HD95."""
    keys = ["case", "fold"] if "fold" in per_case else ["case"]
    table = per_case.groupby(keys, sort=False).agg(mean_dice=("dice", "mean"), mean_hd95=("hd95", "mean")).reset_index()
    return table.sort_values(["mean_dice", "mean_hd95", "case"], ascending=[True, False, True], na_position="last")


def pictured(order, requested, limit):
    """The case ids to draw: the first ``limit`` of ``order``, then those ``requested`` that are in ``order``."""
    chosen = list(order[:limit])
    return chosen + [case_id for case_id in requested if case_id in order and case_id not in chosen]


def group_section(group, options, memo):
    """``(name, id, html)`` of one prediction group."""
    element_id = page.anchor("group", group.title)
    if group.per_case is None:
        body = quality_control(group, options, memo, element_id)
        title = f"Predictions without reference: {group.title} ({len(group.cases)} cases)"
    else:
        body = evaluated(group, options, memo, element_id)
        title = f"Predictions: {group.title} ({group.per_case['case'].nunique()} cases evaluated)"
    return group.title, element_id, page.section(title, body, element_id)


def evaluated(group, options, memo, element_id):
    """Summary, scatter, the case table and pictures of an evaluated group."""
    per_case, regions = group.per_case, list(dict.fromkeys(group.per_case["region"]))
    summary_rows = [[region, *[mean_std(per_case.loc[per_case["region"] == region, metric]) for metric in METRICS]]
                    for region in regions]
    body = page.table(["region", *METRICS], summary_rows) + '<p class="note">mean ± std over the cases</p>'
    key = ("scatter", *sorted(str(case.prediction) for case in group.cases.values()))
    if key not in memo:
        memo[key] = charts.volume_scatter(per_case, regions)
    body += page.image(memo[key], "predicted against reference volume per region")
    order = ranked(per_case)
    drawn = pictured(list(order["case"]), options.cases, options.pictures)
    body += case_table(order, per_case, regions, drawn, element_id)
    body += picture_note(len(order), options) + page.legend(ERROR_LEGEND)
    for case_id in drawn:
        scores = per_case[per_case["case"] == case_id].set_index("region")
        region = group.scheme.names.index(scores["dice"].idxmin())
        picture = draw(group.cases[case_id], group.scheme, region, options, memo)
        text = ", ".join(f"{r} Dice {scores.loc[r, 'dice']:.3f}" for r in regions)
        body += page.figure(picture.uri, case_id, caption(case_id, picture, text), page.anchor(element_id, case_id))
    return body


def case_table(order, per_case, regions, drawn, element_id):
    """The per-case table, worst first, its case ids linking to their pictures."""
    header = ["case", *(["fold"] if "fold" in order else []), "mean Dice"]
    header += [f"{region} {name}" for region in regions for _, name, _ in CASE_METRICS]
    values = per_case.set_index(["case", "region"])
    rows = []
    for _, row in order.iterrows():
        case_id = row["case"]
        link = (f'<td><a href="#{page.anchor(element_id, case_id)}">{page.escape(case_id)}</a></td>'
                if case_id in drawn else case_id)
        cells = [link, *([row["fold"]] if "fold" in order else []), page.number(float(row["mean_dice"]))]
        cells += [page.number(float(values.loc[(case_id, region), metric]), digits)
                  for region in regions for metric, _, digits in CASE_METRICS]
        rows.append(cells)
    return page.table(header, rows, sortable=True, element_id=page.anchor(element_id, "cases"))


def picture_note(count, options):
    """What the pictures show, and when not every case has one, which ones do."""
    text = ("Each picture: axial, coronal and sagittal slices (the patient's right on the right) through the "
            "centre of the largest error of the case's worst region.")
    if count > options.pictures:
        text += (f" Pictures of the {options.pictures} worst of {count} cases (by mean Dice) only"
                 f"{' and of those asked for' if options.cases else ''}: unet3d-report --pictures N draws more, "
                 "--cases ID ... any case.")
    return f'<p class="note">{page.escape(text)}</p>'


def quality_control(group, options, memo, element_id):
    """Predicted volumes per region and pictures of the prediction, for a group without references."""
    ids = sorted(group.cases)
    regions = group.scheme.names
    rows = []
    for case_id in ids:
        label_map, affine = read_label_map(slices.require_file(group.cases[case_id].prediction))
        voxel_ml = abs(np.linalg.det(np.asarray(affine)[:3, :3])) / 1000
        rows.append([case_id, *[page.number(float(mask.sum()) * voxel_ml, 2) for mask in group.scheme.masks(label_map)]])
    body = page.table(["case", *[f"{region} predicted ml" for region in regions]], rows, sortable=True,
                      element_id=page.anchor(element_id, "cases"))
    drawn = pictured(ids, options.cases, options.pictures)
    if len(ids) > options.pictures:
        body += (f'<p class="note">Pictures of the first {options.pictures} of {len(ids)} cases; unet3d-report '
                 "--pictures N draws more, --cases ID ... any case.</p>")
    body += page.legend([(slices.REGION_COLOURS[i % len(slices.REGION_COLOURS)], name) for i, name in enumerate(regions)])
    for case_id in drawn:
        picture = draw(group.cases[case_id], group.scheme, None, options, memo)
        body += page.figure(picture.uri, case_id, caption(case_id, picture, "no reference"),
                            page.anchor(element_id, case_id))
    return body


def draw(case, scheme, region, options, memo):
    """The case's ``Picture``, drawn once per report run however many reports show it."""
    key = (str(case.prediction), str(case.reference), region, options.channel)
    if key not in memo:
        memo[key] = slices.case_picture(case, scheme, region, options.channel)
    return memo[key]


def caption(case_id, picture, scores):
    """A picture's caption: the case, what it shows, its scores and the voxel the slices cut through."""
    where = ", ".join(f"{name} {index}" for (name, _), index in
                      zip(slices.PLANES, (picture.centre[2], picture.centre[1], picture.centre[0])))
    return f"<b>{page.escape(case_id)}</b>: {page.escape(picture.caption)}; {page.escape(scores)}; slices {where}"


def mean_std(values):
    """A cell ``mean ± std`` of a metric over cases (NaN skipped)."""
    values = pandas.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return page.number(None)
    return f'<td class="n">{values.mean():.4f} ± {values.std(ddof=0):.4f}</td>'
