"""Post-processing chosen by cross-validation, as nnU-Net chooses it (``determine_postprocessing``).

Once every fold is trained, the out-of-fold predictions (each fold's
``fold<k>/predictions/validation``, raw label maps) are scored against their references
with and without connected-component clean-up, one region (or label, or class) after
another, each on top of the steps already kept. A step is kept only where it raises the
region's mean out-of-fold Dice and lowers no other region's (in a hierarchy, removing a
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
from unet3d.evaluate.metrics import region_dice
from unet3d.predict.postprocess import (POSTPROCESSING_FILE, ComponentStep, clean_prediction_files, clean_regions,
                                        component_sizes, describe_steps, scheme_json)

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
    return predicted[box], reference[box]


def candidate_steps(reference_masks):
    """The steps tried on one region, least aggressive first: removing components under a fraction
    (``CANDIDATE_FRACTIONS``) of the region's smallest reference component, then keeping only the largest.

    The references show how small a true structure of this region can be. A threshold of at
    most half of the smallest keeps every predicted component that covers at least half of a
    true one and removes only specks smaller than anything real; a fixed size (0.2 ml) would
    delete every true component of a region whose structures are smaller, such as enhancing
    tumour of a few dozen voxels. Where the references hold no component of the region, only
    keeping the largest is tried.
    """
    sizes = [size for mask in reference_masks for size in component_sizes(mask)]
    if not sizes:
        return [ComponentStep(keep_largest=True)]
    thresholds = sorted({max(1, int(min(sizes) * fraction)) for fraction in CANDIDATE_FRACTIONS})
    return [ComponentStep(size) for size in thresholds] + [ComponentStep(keep_largest=True)]


def mean_dice(label_maps, reference_masks, scheme):
    """The mean Dice per region (NumPy, regions) of ``label_maps`` against the cases' ``reference_masks``."""
    return np.mean([region_dice(scheme.masks(m), r).numpy() for m, r in zip(label_maps, reference_masks)], axis=0)


def try_step(label_maps, reference_masks, scheme, index, step):
    """``(cleaned label maps, mean Dice per region)`` with ``step`` applied to region ``index``."""
    steps = [ComponentStep()] * len(scheme.values)
    steps[index] = step
    cleaned = [clean_regions(m, scheme, steps) for m in label_maps]
    return cleaned, mean_dice(cleaned, reference_masks, scheme)


def choose_steps(cases, scheme):
    """``(steps, records, mean Dice per region with the steps)``: greedily, region after region, the step that
    raises that region's mean Dice most and lowers no region's, or none; one record per region (``region``,
    ``step``, ``candidates``: each step tried, none first, with its mean Dice per region).

    ``cases`` are ``(predicted, reference)`` label maps (NumPy).
    """
    current = [predicted for predicted, _ in cases]
    reference_masks = [scheme.masks(reference) for _, reference in cases]
    baseline = mean_dice(current, reference_masks, scheme)
    steps, records = [], []
    for index, name in enumerate(scheme.names):
        tried = [(ComponentStep(), baseline)]
        best, best_maps = tried[0], current
        for step in candidate_steps([masks[index] for masks in reference_masks]):
            cleaned, dice = try_step(current, reference_masks, scheme, index, step)
            tried.append((step, dice))
            if dice[index] > best[1][index] + TOLERANCE and np.all(dice >= baseline - TOLERANCE):
                best, best_maps = (step, dice), cleaned
        current, baseline = best_maps, best[1]
        steps.append(best[0])
        records.append({"region": name, "step": best[0].as_json(),
                        "candidates": [{"step": step.as_json(), "dice": float(dice[index]),
                                        "dice_by_region": dict(zip(scheme.names, map(float, dice)))}
                                       for step, dice in tried]})
    return steps, records, baseline


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
    cases = [read_cropped(*files[case_id]) for case_id in sorted(files)]
    raw = mean_dice([predicted for predicted, _ in cases], [scheme.masks(r) for _, r in cases], scheme)
    steps, records, final = choose_steps(cases, scheme)
    for index, record in enumerate(records):
        record.update(dice_before=float(raw[index]), dice_after=float(final[index]))
    decision = {"label_scheme": scheme_json(scheme), "n_cases": len(cases),
                "n_folds": experiment.cross_validation.n_folds, "regions": records}
    write_json(decision, Path(work_dir) / POSTPROCESSING_FILE)
    table = decision_table(records, steps)
    write_csv(table, Path(work_dir) / "postprocessing.csv")
    for row in table.itertuples():
        log.info("post-processing %s: %s (out-of-fold mean Dice of %d cases %.4f -> %.4f)", row.region, row.step,
                 len(cases), row.dice_before, row.dice_after)
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
