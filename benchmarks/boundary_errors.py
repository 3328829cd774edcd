"""Where a model's errors are: at the reference boundary or away from it, and whether a threshold moves them.

Reads the probability maps that ``unet3d-predict --save_probabilities`` writes (X, Y, Z, channel) for the
cases of a config's group, decodes them with the config's label scheme at several thresholds, and prints per
region: the mean Dice at each threshold; the share of false positives within one voxel outside the reference
and of false negatives within one voxel inside it (diagonal neighbours included); and, per case, the bias of
the boundary ((false positives - false negatives) per reference boundary voxel) beside how bright one image
channel (``--channel``; the first, FLAIR for BraTS, by default) is just outside the reference relative to the
tissue 3 to 5 voxels away, and their correlation. Several prediction folders (e.g. seeds) are averaged.

Not a test; run it by hand, e.g. on the held-out cases of ``benchmarks/recipe.py``::

    .venv/bin/unet3d-predict --config_filename RUN/seed0/test.json --model_filename RUN/seed0/train/model_best.pth \\
        --group test --output_dir PROBS/seed0 --save_probabilities
    .venv/bin/python benchmarks/boundary_errors.py --config_filename RUN/seed0/test.json --probabilities PROBS/seed*
"""

import argparse
from pathlib import Path

import numpy as np
import pandas
from scipy import ndimage

from unet3d.config.experiment import load_experiment
from unet3d.data.formats import read_array
from unet3d.runs.postprocessing import dice_of_counts

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def reference_maps(scheme, label):
    """Per region of a reference ``label`` map: its mask and each voxel's distance outside and inside it, in voxels
    with a diagonal step counted as one (26-neighbourhood). They serve every prediction of the case."""
    return [(mask, ndimage.distance_transform_cdt(~mask, metric="chessboard"),
             ndimage.distance_transform_cdt(mask, metric="chessboard")) for mask in scheme.masks(label)]


def case_rows(scheme, probabilities, references, image, case, folder):
    """Per region of one case (``references``: its ``reference_maps``): Dice per threshold, and the boundary's
    errors at 0.5."""
    rows, decoded = [], {}
    for threshold in THRESHOLDS:
        decoded[threshold] = scheme.masks(np.asarray(scheme.decode(probabilities, threshold)))
        for name, predicted, (reference, _, _) in zip(scheme.names, decoded[threshold], references):
            dice = dice_of_counts((predicted & reference).sum(), predicted.sum(), reference.sum())
            rows.append({"folder": folder, "case": case, "region": name, "threshold": threshold, "dice": float(dice)})
    brain = image > 0
    errors = []
    for name, predicted, (reference, outside, inside) in zip(scheme.names, decoded[0.5], references):
        false_positive, false_negative = predicted & ~reference, reference & ~predicted
        surface = (reference & (inside <= 1)).sum()
        near = brain & (outside >= 3) & (outside <= 5)
        errors.append({"folder": folder, "case": case, "region": name, "false_positives": false_positive.sum(),
                       "fp_within_1": (false_positive & (outside <= 1)).sum(),
                       "false_negatives": false_negative.sum(), "fn_within_1": (false_negative & (inside <= 1)).sum(),
                       "bias": (false_positive.sum() - false_negative.sum()) / surface if surface else np.nan,
                       "outside_brightness": (np.median(image[brain & (outside > 0) & (outside <= 1)])
                                              / np.median(image[near]) if surface and near.any() else np.nan)})
    return rows, errors


def main():
    """Print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config_filename", type=Path, required=True)
    parser.add_argument("--group", default="test")
    parser.add_argument("--probabilities", type=Path, nargs="+", required=True,
                        help="folders of probability maps, one per model")
    parser.add_argument("--channel", type=int, default=0, help="the image channel whose brightness is compared")
    args = parser.parse_args()
    experiment = load_experiment(args.config_filename)
    scheme = experiment.labels
    dice_rows, error_rows = [], []
    for case in experiment.groups[args.group]:
        references = reference_maps(scheme, read_array(case.label).astype(np.int64))
        image = read_array(case.images[args.channel]).astype(np.float32)
        for folder in args.probabilities:
            probabilities = np.moveaxis(read_array(folder / f"{case.id}.nii.gz").astype(np.float32), -1, 0)
            rows, errors = case_rows(scheme, probabilities, references, image, case.id, str(folder))
            dice_rows += rows
            error_rows += errors
    dices = pandas.DataFrame(dice_rows).groupby(["threshold", "region"]).dice.mean().unstack()
    print("mean Dice by threshold (all folders)\n" + dices.round(3).to_string())
    errors = pandas.DataFrame(error_rows)
    totals = errors.groupby("region")[["false_positives", "fp_within_1", "false_negatives", "fn_within_1"]].sum()
    totals["fp_share_within_1"] = totals.fp_within_1 / totals.false_positives
    totals["fn_share_within_1"] = totals.fn_within_1 / totals.false_negatives
    print("\nerrors at 0.5, within one voxel of the reference boundary\n" + totals.round(3).to_string())
    per_case = errors.groupby(["region", "case"])[["bias", "outside_brightness"]].mean()
    print(f"\nper case: boundary bias and channel {args.channel} just outside the reference, against 3-5 voxels "
          "away\n"
          + per_case.round(3).to_string())
    for region, table in per_case.groupby(level="region"):
        print(f"{region}: correlation of bias and outside brightness {table.bias.corr(table.outside_brightness):.2f}")


if __name__ == "__main__":
    main()
