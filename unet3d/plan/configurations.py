"""Which configurations a dataset is planned in, and the 2d one.

nnU-Net plans a 2d and a 3d configuration, trains both and keeps the better, or their
ensemble, by cross-validation. Here ``--configurations`` chooses: ``3d`` (the default),
``2d`` or ``all``; a 2d configuration is planned only where the slices are thick
(``topology.slice_axis``), and the plan says why one was or was not. The 2d configuration is
a DynUNet one slice deep with kernels and strides of 1 along the slices
(``topology.search_patch_2d``), its patch sized by memory at nnU-Net's 2d batch and its batch
then grown as nnU-Net's is. Both use the same folds, for ``unet3d-train --select_best``.
"""

import numpy as np

from unet3d.errors import UserError
from unet3d.plan import budget, planner, topology

CONFIGURATIONS = ("3d", "2d", "all")
# nnU-Net's reference batch of a 2d configuration: its patch must fit the memory at this batch.
BATCH_2D = 12


def configurations_of(choice, spacing):
    """``(names, reason)``: the configurations ``--configurations choice`` plans for data of target ``spacing``,
    and the plan's row saying why a 2d one is or is not among them."""
    if choice not in CONFIGURATIONS:
        raise UserError(f"--configurations {choice}: expected one of {', '.join(CONFIGURATIONS)}")
    axis, ratio = topology.slice_axis(spacing), max(spacing) / min(spacing)
    if axis is None:
        why = (f"the coarsest axis is {ratio:.2f} times the finest, under {topology.ANISOTROPY:g}: a 3d patch sees "
               "as much along every axis, so no 2d configuration is planned (nnU-Net's 2d wins on thick slices)")
        if choice == "2d":
            raise UserError(f"--configurations 2d: {why}; plan 3d")
        return ["3d"], ("configurations", "3d only", why)
    thick = f"slices {ratio:.2f} times thicker than the pixels (axis {axis}, at least {topology.ANISOTROPY:g})"
    if choice == "3d":
        return ["3d"], ("configurations", "3d", f"{thick}: --configurations all would add a 2d configuration, which "
                        "often wins on such data; unet3d-train --select_best chooses by cross-validation")
    names = ["3d", "2d"] if choice == "all" else ["2d"]
    return names, ("configurations", " and ".join(names), f"{thick}: a 2d network sees the plane at a larger "
                   "patch and batch; train each and let unet3d-train --select_best choose, or take their ensemble")


def fit_patch_2d(sections, target, fingerprint, spacing, shape):
    """``((patch, kernels, strides), steps wanted)``: the largest 2d patch whose step at ``BATCH_2D`` fits the
    target's memory and, with its batch (``batch_2d``), leaves the most of ``planner.STEP_LADDER``'s steps per fold
    by the speed table; where the budget allows none, the largest that fits memory."""
    def in_memory(patch, kernels, strides):
        filters = sections.model(kernels, strides, target)["filters"]
        return budget.estimated_bytes(patch, strides, filters, BATCH_2D, sections.in_channels,
                                      target.amp) <= target.memory_bytes

    def steps_at(*found):
        batch = batch_2d(sections, target, found, shape, fingerprint["n_cases"])
        return planner.table_steps(sections, target, fingerprint, shape, found, batch)

    for wanted in planner.STEP_LADDER:
        found = topology.search_patch_2d(spacing, shape,
                                         lambda *found: in_memory(*found) and steps_at(*found) >= wanted)
        if found is not None:
            return found, wanted
    found = topology.search_patch_2d(spacing, shape, in_memory)
    if found is None:
        raise UserError(f"no 2d patch fits {target.memory_bytes / 2 ** 30:.1f} GiB of {target.device.type} memory "
                        f"(--gpu_memory_gb) at a batch of {BATCH_2D}")
    return found, 0


def batch_2d(sections, target, found, shape, n_cases):
    """nnU-Net's 2d batch: the most patches memory allows, up to ``planner.BATCH_SHARE`` of the dataset's voxels,
    at least ``planner.BATCH``."""
    patch, kernels, strides = found
    filters = sections.model(kernels, strides, target)["filters"]
    batch = planner.BATCH
    while (budget.estimated_bytes(patch, strides, filters, batch + 1, sections.in_channels, target.amp)
           <= target.memory_bytes and (batch + 1) * np.prod(patch) <= planner.BATCH_SHARE * n_cases * np.prod(shape)):
        batch += 1
    return batch


def plan_configurations(names, layout, fingerprint, target, step_seconds=None):
    """``{name: Plan}`` of the configurations ``names`` ("3d", "2d") for a ``planner.Target``; a 2d one takes the 3d
    one's folds. ``step_seconds`` replaces a step's measured seconds (of one configuration)."""
    plans = {}
    if "3d" in names:
        plans["3d"] = planner.plan_experiment(layout, fingerprint, target, step_seconds)
    if "2d" in names:
        n_folds = plans["3d"].config["cross_validation"]["n_folds"] if plans else None
        plans["2d"] = plan_2d(layout, fingerprint, target, n_folds, step_seconds)
    return plans


def plan_2d(layout, fingerprint, target, n_folds=None, step_seconds=None):
    """The ``Plan`` of a dataset's 2d configuration for a ``planner.Target`` (the whole budget for its own
    ``unet3d-train`` run), on ``n_folds`` (the 3d plan's, to compare the two fold by fold; None: the most the
    speed table allows)."""
    reasons, sections, spacing, shape = planner.shared_choices(layout, fingerprint)
    found, wanted = fit_patch_2d(sections, target, fingerprint, spacing, shape)
    batch = batch_2d(sections, target, found, shape, fingerprint["n_cases"])
    if n_folds is None:
        model = sections.model(found[1], found[2], target)
        n_folds = planner.choose_folds(target, fingerprint, shape, model, found[0], batch)
    reasons += patch_2d_reasons(sections, target, (found, batch, wanted), spacing, shape)
    plan = planner.plan_length(sections, target, fingerprint, (spacing, shape, found, batch, n_folds), reasons,
                               step_seconds)
    plan.reasons = [(topic, choice, why + ("; the folds are the 3d configuration's where both are planned, to "
                                           "compare the two fold by fold" if topic == "length" else ""))
                    for topic, choice, why in plan.reasons]
    return plan


def patch_2d_reasons(sections, target, chosen, spacing, shape):
    """The ``patch`` and ``network`` rows of a 2d plan of ``chosen`` ``((patch, kernels, strides), batch, steps
    wanted)``."""
    (patch, kernels, strides), batch, wanted = chosen
    axis = topology.slice_axis(spacing)
    filters = sections.model(kernels, strides, target)["filters"]
    return [("patch", f"{planner._voxels(patch)} voxels ({planner._mm([p * s for p, s in zip(patch, spacing)])}), "
             f"batch {batch}", f"one slice along axis {axis}; in the plane the area of 2048 x 2048 pixels (nnU-Net's "
             f"2d) clipped to the median shape {planner._voxels([round(s) for s in shape])}, shrunk until a step of "
             f"batch {BATCH_2D} fits {target.memory_bytes / 2 ** 30:.1f} GiB" + (
                 f" and, by the speed table, leaves {wanted} steps per fold in the budget" if wanted else
                 " (the budget is too short for the steps wanted at any patch)")
             + f"; then as many patches as memory allows, up to {planner.BATCH_SHARE:.0%} of the dataset's voxels"),
            ("network", f"DynUNet, {len(strides)} levels, filters {filters}, kernels and strides of 1 along axis "
             f"{axis}", "a 2d network in a 3d DynUNet (spatial_dims 3): training, sliding-window prediction and "
             "export run unchanged")]
