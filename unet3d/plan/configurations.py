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
from unet3d.plan.sections import Sections, normalization_section

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


def fit_patch_2d(sections, target, spacing, shape):
    """``(patch, kernels, strides)`` of the largest 2d patch whose step at ``BATCH_2D`` fits the target's memory."""
    def in_memory(patch, kernels, strides):
        filters = sections.model(kernels, strides, target)["filters"]
        return budget.estimated_bytes(patch, strides, filters, BATCH_2D, sections.in_channels,
                                      target.amp) <= target.memory_bytes

    found = topology.search_patch_2d(spacing, shape, in_memory)
    if found is None:
        raise UserError(f"no 2d patch fits {target.memory_bytes / 2 ** 30:.1f} GiB of {target.device.type} memory "
                        f"(--gpu_memory_gb) at a batch of {BATCH_2D}")
    return found


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


def plan_configurations(names, layout, fingerprint, device, budget_minutes, memory_bytes):
    """``{name: Plan}`` of the configurations ``names`` ("3d", "2d"); a 2d one takes the 3d one's folds."""
    plans = {}
    if "3d" in names:
        plans["3d"] = planner.plan_experiment(layout, fingerprint, device, budget_minutes, memory_bytes)
    if "2d" in names:
        n_folds = plans["3d"].config["cross_validation"]["n_folds"] if plans else None
        plans["2d"] = plan_2d(layout, fingerprint, device, budget_minutes, memory_bytes, n_folds)
    return plans


def plan_2d(layout, fingerprint, device, budget_minutes, memory_bytes, n_folds=None):
    """The ``Plan`` of a dataset's 2d configuration, within ``budget_minutes`` of its own ``unet3d-train`` run, with
    ``n_folds`` (the 3d plan's: the two are compared fold by fold; None: the most the budget allows)."""
    reasons = []
    scheme = planner.label_scheme_of(layout, fingerprint, reasons)
    target = planner.Target(device, memory_bytes, budget_minutes * 60)
    normalization, crop = normalization_section(layout, fingerprint, reasons)
    sections = Sections(scheme, len(layout.channel_names), normalization, crop)
    spacing, spacing_reason = planner.spacing_of(fingerprint)
    spacing = [round(s, 4) for s in spacing]
    reasons.insert(1, ("spacing", planner._mm(spacing), spacing_reason))
    shape = planner.median_shape(fingerprint["cases"], spacing, crop)
    found = fit_patch_2d(sections, target, spacing, shape)
    batch = batch_2d(sections, target, found, shape, fingerprint["n_cases"])
    timing = planner.time_patch(sections, target, spacing, found, batch)
    if timing.peak_bytes and timing.peak_bytes > target.memory_bytes:
        raise UserError(f"the 2d patch {found[0]} (batch {batch}) took {timing.peak_bytes / 2 ** 30:.1f} GiB on "
                        f"{device}, over the {target.memory_bytes / 2 ** 30:.1f} GiB allowed; give a lower "
                        "--gpu_memory_gb")
    cases = (fingerprint["n_cases"], fingerprint["n_test_cases"], topology.windows(shape, found[0]),
             fingerprint["read_seconds"]["median_cpu_per_case"])
    if n_folds is None:
        n_folds, (steps, n_epochs, per_epoch, interval), costs = planner.choose_folds(target.budget_seconds, timing,
                                                                                      *cases)
    else:
        costs = budget.run_costs(timing, cases[0], n_folds, *cases[1:])
        steps, n_epochs, per_epoch, interval = budget.fold_schedule(target.budget_seconds, timing, costs, n_folds,
                                                                    planner.NNUNET_MAX_STEPS)
    if steps < 1:
        raise UserError(f"--budget_minutes {budget_minutes:g} is too short for the 2d configuration's {n_folds} folds")
    reasons += patch_2d_reasons(sections, target, found, batch, spacing, shape)
    estimate = budget.run_seconds(timing, costs, n_folds, n_epochs, per_epoch, interval) / 60
    reasons.append(("length", f"{n_folds} folds x {n_epochs} epochs x {per_epoch} steps, validation every "
                    f"{interval} epoch(s)", "the 3d configuration's folds where it is planned too, to compare the two "
                    f"fold by fold; a step timed at {timing.step_seconds:.3f} s on {device}; estimated run: "
                    f"{estimate:.1f} of {budget_minutes:.4g} minutes"))
    min_component = planner.clean_up(fingerprint, scheme, reasons)
    config = sections.config(target, spacing, found, batch, (n_epochs, per_epoch, interval), n_folds, min_component)
    return planner.Plan(config, reasons, estimate)


def patch_2d_reasons(sections, target, found, batch, spacing, shape):
    """The ``patch`` and ``network`` rows of a 2d plan."""
    patch, kernels, strides = found
    axis = topology.slice_axis(spacing)
    filters = sections.model(kernels, strides, target)["filters"]
    return [("patch", f"{planner._voxels(patch)} voxels ({planner._mm([p * s for p, s in zip(patch, spacing)])}), "
             f"batch {batch}", f"one slice along axis {axis}; in the plane the area of 2048 x 2048 pixels (nnU-Net's "
             f"2d) clipped to the median shape {planner._voxels([round(s) for s in shape])}, shrunk until a step of "
             f"batch {BATCH_2D} fits {target.memory_bytes / 2 ** 30:.1f} GiB; then as many patches as memory allows, "
             f"up to {planner.BATCH_SHARE:.0%} of the dataset's voxels"),
            ("network", f"DynUNet, {len(strides)} levels, filters {filters}, kernels and strides of 1 along axis "
             f"{axis}", "a 2d network in a 3d DynUNet (spatial_dims 3): training, sliding-window prediction and "
             "export run unchanged")]
