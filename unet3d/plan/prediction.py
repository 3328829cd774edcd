"""How a planned config validates and predicts, and what that costs the budget: the sliding window and
test-time mirroring.

The speed table times one window of the training patch; a larger window counts as the patches of its voxels,
and mirrored predictions as their 8 passes (validation is never mirrored).
"""

import numpy as np

from unet3d.plan import budget, topology

WINDOW_REASON = ("validation and prediction on a CPU see the median volume whole (rounded up to what the network "
                 "divides, at most twice the patch per axis; one window over each volume, padded by less than that): "
                 "on brain-like cases it found more of tumours larger than the patch, in about a third of the "
                 "CPU-seconds of patch-sized windows (docs/recipe.md); nnU-Net's window is the patch, kept on a GPU")
# On a CPU, predictions are mirrored (nnU-Net's default) where the 8 passes take at most this share of the budget.
MIRRORED_SHARE = 0.1
# ... unless, at the step measured, they would take over this many times that share.
MEASURED_LIMIT = 2


def prediction_window(target, shape, found):
    """The sliding window of validation and prediction for a patch ``found`` (patch, kernels, strides): on a CPU,
    the median volume whole (``topology.whole_volume_window``); None (the patch, nnU-Net's) on a GPU, where a
    larger window is not measured yet, and for 2d networks."""
    patch, _, strides = found
    if target.cuda or min(patch) == topology.SLICES_2D:
        return None
    window = topology.whole_volume_window(shape, patch, strides)
    return window if window != list(patch) else None


def window_cost(shape, patch, window=None):
    """The sliding windows over a volume of ``shape``, in patch-sized windows (the speed table times one of
    ``patch``): a larger ``window`` counts as many as its voxels. The CPU recipe's network on one thread
    (``benchmarks/window_cap.py``): 0.56 s for one 72 x 96 x 80 window over a 72 x 92 x 78 case, 5.0 patches of
    48³ by voxels; 2.26 s for four windows of 72 x 88 x 72, 16.5 patches."""
    if window is None:
        return topology.windows(shape, patch)
    return topology.windows(shape, window) * float(np.prod(window)) / float(np.prod(patch))


def run_costs(cost, fingerprint, n_folds, shape, patch, window=None, tta=False):
    """``budget.RunCosts`` of a run of ``n_folds`` folds with a step's ``cost``, validating and predicting with
    sliding windows of ``window`` (None: the patch), its predictions mirrored with ``tta``."""
    return budget.run_costs(cost, fingerprint["n_cases"], n_folds, fingerprint["n_test_cases"],
                            window_cost(shape, patch, window), budget.read_seconds(fingerprint),
                            budget.MIRRORINGS if tta else 1)


def mirrored(target, table, cost, fingerprint, structure, window):
    """``(tta, table seconds, measured seconds)``: whether the plan's predictions average the 8 mirrorings
    (``prediction.tta``, nnU-Net's default) for a ``structure`` ``(n_folds, median shape, (patch, kernels,
    strides))``, and the seconds the folds' predictions would take mirrored at the speed ``table``'s step and at
    the step's measured (or given) ``cost``. On a CPU they are mirrored where the table's seconds are at most
    ``MIRRORED_SHARE`` of the budget, so that a busy machine plans the same, unless the measured ones take over
    ``MEASURED_LIMIT`` times that share (a machine much slower than the table's); not on a GPU (not measured there
    yet) nor for 2d networks (seconds None)."""
    n_folds, shape, (patch, _, _) = structure
    if target.cuda or min(patch) == topology.SLICES_2D:
        return False, None, None
    seconds, measured = (n_folds * run_costs(c, fingerprint, n_folds, shape, patch, window, tta=True).predictions
                         for c in (table, cost))
    share = MIRRORED_SHARE * target.budget_seconds
    return seconds <= share and measured <= MEASURED_LIMIT * share, seconds, measured


def mirroring_reason(tta, seconds, measured, budget_seconds):
    """The plan's row on test-time mirroring, whose folds' predictions would take ``seconds`` mirrored by the speed
    table and ``measured`` at the step's measured (or given) cost."""
    share = (f"mirrored, the folds' predictions take {seconds / 60:.1f} of the {budget_seconds / 60:.1f} minutes "
             f"by the speed table ({measured / 60:.1f} at the step's cost above)")
    if tta:
        return ("test-time mirroring", "predictions average the 8 mirrorings (not validation)",
                f"nnU-Net's default; on brain-like cases it raised the same models' whole tumour and core by "
                f"0.01-0.02 (docs/recipe.md); {share}, at most {MIRRORED_SHARE:.0%}")
    over = (f"over {MIRRORED_SHARE:.0%} of the budget" if seconds > MIRRORED_SHARE * budget_seconds else
            f"over {MEASURED_LIMIT * MIRRORED_SHARE:.0%} at the step's cost")
    return ("test-time mirroring", "none", f"{share}, {over} (\"prediction\": {{\"tta\": true}} mirrors all the same)")
