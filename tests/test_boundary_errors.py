"""The boundary-error benchmark's counts, on a cube predicted one voxel too large."""

import numpy as np

from helpers import REPO, load_module
from unet3d.config.labels import LabelScheme


def test_a_prediction_one_voxel_too_large_has_all_its_errors_at_the_boundary_and_a_positive_bias():
    benchmark = load_module(REPO / "benchmarks" / "boundary_errors.py", "boundary_errors")
    label = np.zeros((20, 20, 20), np.int64)
    label[6:14, 6:14, 6:14] = 2  # edema: the whole tumour only
    label[9:11, 9:11, 9:11] = 1  # a core inside it
    probabilities = np.zeros((3, 20, 20, 20), np.float32)
    probabilities[0, 5:15, 5:15, 5:15] = 0.9  # the whole tumour one voxel too large on every side
    probabilities[0, 4:16, 4:16, 4:16] += 0.05  # below every threshold
    probabilities[1, 9:11, 9:11, 9:11] = 0.65  # the core, found at thresholds under 0.65
    image = np.where(label > 0, 2.0, 1.0).astype(np.float32)
    scheme = LabelScheme.brats()
    rows, errors = benchmark.case_rows(scheme, probabilities, benchmark.reference_maps(scheme, label), image, "case",
                                       "seed0")
    wt = {row["threshold"]: row["dice"] for row in rows if row["region"] == "WT"}
    tc = {row["threshold"]: row["dice"] for row in rows if row["region"] == "TC"}
    assert wt[0.5] == wt[0.8] == 2 * 8 ** 3 / (8 ** 3 + 10 ** 3)
    assert tc[0.6] == 1.0 and tc[0.7] == 0.0
    whole = next(e for e in errors if e["region"] == "WT")
    assert whole["false_positives"] == whole["fp_within_1"] == 10 ** 3 - 8 ** 3 and whole["false_negatives"] == 0
    assert whole["bias"] == (10 ** 3 - 8 ** 3) / (8 ** 3 - 6 ** 3)  # per voxel of the reference's surface
    core = next(e for e in errors if e["region"] == "TC")
    assert core["false_positives"] == core["false_negatives"] == 0
    assert whole["outside_brightness"] == 1.0
