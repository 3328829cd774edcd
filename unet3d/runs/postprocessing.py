"""Post-processing chosen by cross-validation, as nnU-Net chooses it (``determine_postprocessing``).

Once every fold is trained, the out-of-fold predictions (each fold's
``fold<k>/predictions/validation``, raw label maps) are scored against their references
with and without connected-component clean-up (and, where some case lacks a region, with
the region removed from cases that predict little of it), one region (or label, or class) after
another, each on top of the steps already kept. A step is kept only where it raises the
region's mean out-of-fold Dice and lowers no other region's (in nested regions, removing a
whole-tumour component also removes the core inside it). The decision goes to
``<work_dir>/postprocessing.json``, which ``unet3d-predict`` applies to models of the run.
"""

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from unet3d.atomic import write_csv
from unet3d.config.load import write_json
from unet3d.evaluate.evaluation import evaluate_folder, group_label_files, image_files_in, read_case
from unet3d.predict.postprocess import (POSTPROCESSING_FILE, SMALL_COMPONENT_CONNECTIVITY, ComponentStep,
                                        clean_prediction_files, clean_regions, components, describe_steps,
                                        scheme_json)

log = logging.getLogger("unet3d")

# Thresholds as fractions of the smallest reference component of the region (see ``candidate_steps``).
CANDIDATE_FRACTIONS = (1 / 16, 1 / 8, 1 / 4, 1 / 2)
# A step must raise the mean Dice by more than rounding; a tie keeps the predictions as they are.
TOLERANCE = 1e-9
POSTPROCESSED = "_postprocessed"


def out_of_fold_files(experiment, work_dir):
    """``({case id: (prediction, reference)}, None)`` for every labelled training case, from the folds'
    validation predictions, or ``(None, why not)``."""
    references = {case.id: case.label for case in experiment.cases("training") if case.label}
    predictions = {}
    for fold in range(1, experiment.cross_validation.n_folds + 1):
        folder = Path(work_dir) / f"fold{fold}" / "predictions" / "validation"
        if folder.is_dir():
            predictions.update(image_files_in(folder))
    missing = sorted(set(references) - set(predictions))
    if not references or missing:
        return None, f"{len(missing)} of {len(references)} training cases have no out-of-fold prediction"
    return {case_id: (predictions[case_id], label) for case_id, label in references.items()}, None


def read_cropped(prediction_file, reference_file):
    """``(predicted, reference)`` label maps cut to the box around both's foreground (which changes no component
    and no Dice, and keeps many cases in memory)."""
    predicted, reference, _ = read_case(prediction_file, reference_file)
    foreground = np.argwhere((predicted > 0) | (reference > 0))
    if not len(foreground):
        return predicted[:1, :1, :1], reference[:1, :1, :1]
    box = tuple(slice(low, high + 1) for low, high in zip(foreground.min(axis=0), foreground.max(axis=0)))
    return predicted[box].copy(), reference[box].copy()  # copies: a view would keep the whole volume


def candidate_steps(reference_masks, around_masks=None):
    """The steps tried on one region, least aggressive first: removing components under a fraction
    (``CANDIDATE_FRACTIONS``) of the region's smallest reference component, then keeping only the largest;
    where some reference lacks the region, also removing the whole region from a case where less than a
    fraction of the smallest case's region is predicted, and (with ``around_masks``, the references' masks
    of the region around this one) where it is predicted in less than a fraction of the smallest share of
    that region it covers.

    The references show how small a true structure of this region can be. A threshold of at
    most half of the smallest keeps every predicted component that covers at least half of a
    true one and removes only specks smaller than anything real; a fixed size (0.2 ml) would
    delete every true component of a region whose structures are smaller, such as enhancing
    tumour of a few dozen voxels. Where the references hold no component of the region, only
    keeping the largest is tried. Removing a whole region can only help a case without it (in
    a case with it, Dice falls to 0), so it is tried only where such cases are among the
    references: a tumour that enhances nowhere, with a speck of enhancement predicted. A share
    tells that speck in a large core from a true tiny lesion filling most of a tiny core.
    """
    found = [components(mask, SMALL_COMPONENT_CONNECTIVITY)[1][1:] for mask in reference_masks]
    sizes = [size for case in found for size in case]
    if not sizes:
        return [ComponentStep(keep_largest=True)]
    steps = [ComponentStep(size) for size in fractions_of(min(sizes))] + [ComponentStep(keep_largest=True)]
    if any(not len(case) for case in found):
        steps += [ComponentStep(min_region_size=size) for size in fractions_of(min(case.sum() for case in found
                                                                                   if len(case)))]
        if around_masks is not None:
            share = min(case.sum() / around.sum() for case, around in zip(found, around_masks) if len(case))
            shares = sorted({round(float(share * fraction), 4) for fraction in CANDIDATE_FRACTIONS} - {0.0})
            steps += [ComponentStep(min_region_share=value) for value in shares]
    return steps


def fractions_of(size):
    """The distinct thresholds ``CANDIDATE_FRACTIONS`` of ``size`` voxels, smallest first; none under 2 (removing
    what is under one voxel removes nothing: the step without a clean-up is tried anyway)."""
    return sorted({int(size * fraction) for fraction in CANDIDATE_FRACTIONS} - {0, 1})


def dice_of_counts(true_positive, predicted, reference):
    """Dice per region from voxel counts; 1 where prediction and reference are both empty (as evaluation)."""
    total = predicted + reference
    return np.where(total > 0, 2 * true_positive / np.maximum(total, 1), 1.0)


def candidate_dice(predicted, reference, scheme, index, steps):
    """The Dice of each region (steps x regions) of one case with each of ``steps`` (of one kind each) applied to
    region ``index``, from component counts rather than cleaned copies: removing a component of that region
    removes its voxels from it and, in nested regions, from the regions inside it (``clean_regions``)."""
    masks, truth = scheme.masks(predicted), scheme.masks(reference)
    affected = range(index, len(masks)) if scheme.nested else [index]
    counts = [masks.sum(axis=(1, 2, 3)), (masks & truth).sum(axis=(1, 2, 3))]
    reference_voxels = truth.sum(axis=(1, 2, 3))
    around = counts[0][index - 1] if scheme.nested and index else None
    labellings, rows = {}, []
    for step in steps:
        if not step:
            rows.append(dice_of_counts(counts[1], counts[0], reference_voxels))
            continue
        if step.connectivity not in labellings:
            labels, sizes = components(masks[index], step.connectivity)
            inside = {j: [np.bincount(labels[mask], minlength=len(sizes)) for mask in (masks[j], masks[j] & truth[j])]
                      for j in affected}
            labellings[step.connectivity] = sizes, inside
        sizes, inside = labellings[step.connectivity]
        removed = ~step.kept(sizes, around)
        removed[0] = False
        predicted_voxels, true_positive = (count.copy() for count in counts)
        for j, (in_prediction, in_both) in inside.items():
            predicted_voxels[j] -= in_prediction[removed].sum()
            true_positive[j] -= in_both[removed].sum()
        rows.append(dice_of_counts(true_positive, predicted_voxels, reference_voxels))
    return np.array(rows)


def choose_steps(cases, scheme):
    """``(steps, records, mean Dice per region without and with the steps)``: greedily, region after region,
    the step that raises that region's mean Dice most and lowers no region's, or none; one record per region
    (``region``, ``step``, ``candidates``: each step tried, none first, with its mean Dice per region).

    ``cases`` are ``(predicted, reference)`` label maps (NumPy).
    """
    current, steps, records, raw = [predicted for predicted, _ in cases], [], [], None
    for index, name in enumerate(scheme.names):
        references = [scheme.masks(reference) for _, reference in cases]
        tried = [ComponentStep()] + candidate_steps([masks[index] for masks in references],
                                                    [masks[index - 1] for masks in references]
                                                    if scheme.nested and index else None)
        dice = np.mean([candidate_dice(predicted, reference, scheme, index, tried)
                        for predicted, (_, reference) in zip(current, cases)], axis=0)
        raw = dice[0] if raw is None else raw
        helps = (dice[:, index] > dice[0, index] + TOLERANCE) & np.all(dice >= dice[0] - TOLERANCE, axis=1)
        best = int(np.argmax(np.where(helps, dice[:, index], -np.inf))) if helps.any() else 0
        steps.append(tried[best])
        if best:
            only = [ComponentStep()] * len(scheme.region_sets)
            only[index] = tried[best]
            current = [clean_regions(predicted, scheme, only).numpy() for predicted in current]
        records.append({"region": name, "step": tried[best].as_json(),
                        "candidates": [{"step": step.as_json(), "dice": float(row[index]),
                                        "dice_by_region": dict(zip(scheme.names, map(float, row)))}
                                       for step, row in zip(tried, dice)]})
    return steps, records, raw, dice[best]


def decide_postprocessing(experiment, work_dir):
    """Choose the post-processing from the out-of-fold predictions of a finished cross-validation run and write
    ``postprocessing.json`` and ``postprocessing.csv`` into ``work_dir``; returns ``(steps, table)``, or
    ``(None, None)`` (with a log line saying why) when it cannot be chosen."""
    scheme = experiment.labels
    if experiment.prediction.min_component_size is not None:
        log.info("post-processing is not chosen by cross-validation: the config sets prediction.min_component_size "
                 "(%d), which cleans the predictions itself", experiment.prediction.min_component_size)
        return None, None
    files, why_not = out_of_fold_files(experiment, work_dir)
    if files is None:
        log.info("post-processing is not chosen: %s", why_not)
        return None, None
    return write_decision(files, scheme, work_dir, experiment.cross_validation.n_folds)


def write_decision(files, scheme, folder, n_folds):
    """Choose the post-processing on out-of-fold ``files`` (``{case id: (prediction, reference)}``) of ``n_folds``
    folds and write ``postprocessing.json`` and ``postprocessing.csv`` into ``folder``; returns ``(steps, table)``."""
    cases = [read_cropped(*files[case_id]) for case_id in sorted(files)]
    steps, records, raw, final = choose_steps(cases, scheme)
    for index, record in enumerate(records):
        record.update(dice_before=float(raw[index]), dice_after=float(final[index]))
    decision = {"label_scheme": scheme_json(scheme), "n_cases": len(cases), "n_folds": n_folds, "regions": records}
    write_json(decision, Path(folder) / POSTPROCESSING_FILE)
    table = decision_table(records, steps)
    write_csv(table, Path(folder) / "postprocessing.csv")
    for row in table.itertuples():
        # Before and after all the steps: a region without a step of its own may still gain from the steps of
        # the regions around it (a whole-tumour speck removed takes its enhancing tumour with it).
        log.info("post-processing %s: %s; its out-of-fold mean Dice (%d cases) %.4f without post-processing, "
                 "%.4f with all of it", row.region, row.step, len(cases), row.dice_before, row.dice_after)
    return steps, table


def decision_table(records, steps):
    """Region, chosen step, and the out-of-fold mean Dice without and with the chosen post-processing."""
    return pd.DataFrame([{"region": r["region"], "step": step.describe(), "dice_before": r["dice_before"],
                          "dice_after": r["dice_after"]} for r, step in zip(records, steps)])


def format_decision(table):
    """The decision as text, for the run's summary."""
    return table.to_string(index=False, float_format=lambda value: f"{value:.4f}")


def postprocess_fold_predictions(experiment, work_dir, steps):
    """Write each fold's predictions of the groups other than training and validation again, cleaned by ``steps``,
    to ``fold<k>/predictions/<group>_postprocessed/`` (evaluated where the group has labels); returns the folders."""
    folders = []
    for fold in range(1, experiment.cross_validation.n_folds + 1):
        for group, cases in experiment.groups.items():
            source = Path(work_dir) / f"fold{fold}" / "predictions" / group
            if group in ("training", "validation") or not source.is_dir():
                continue
            target = source.with_name(group + POSTPROCESSED)
            clean_prediction_files(image_files_in(source), target, experiment.labels, steps)
            if cases and all(case.label for case in cases):
                evaluate_folder(target, group_label_files(experiment, group), experiment.labels)
            folders.append(target)
    if folders:
        log.info("wrote %s with the post-processing chosen (%s)", ", ".join(str(f) for f in folders),
                 describe_steps(experiment.labels, steps))
    return folders
