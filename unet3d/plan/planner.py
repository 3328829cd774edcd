"""From a dataset's layout and fingerprint to a config that fits the data, the device and the time budget.

Each choice is recorded with its reason (``Plan.reasons``) for ``plan.md``. The parts that
follow nnU-Net's rules (spacing, topology, patch) live in ``topology``; what a step costs and how
a budget divides in ``budget``; the config's sections in ``sections``. Each patch considered is
timed as the config that would be written (``time_config``): its own training step.
"""

import dataclasses
import os

import numpy as np

from unet3d.config.experiment import experiment_from_dict
from unet3d.config.labels import BRATS_2023_LABELS, BRATS_LABELS, BRATS_REGIONS, LabelScheme
from unet3d.errors import UserError
from unet3d.plan import budget, topology
from unet3d.plan.sections import MAX_FILTERS, Sections, normalization_section

# Training steps a fold needs at least: the CPU recipe's 576. At half that the recipe loses 0.01-0.02 Dice; a plan
# of 432 steps at a larger patch scored 0.03 below it on enhancing tumour (docs/plan.md).
MIN_STEPS = 576
STEP_LADDER = (MIN_STEPS, 250, 120, 60, 30)
FOLD_CHOICES = (5, 4, 3, 2)
# A patch should cover at least this share of the median volume, else the spacing is coarsened (nnU-Net's
# low-resolution configuration uses a quarter; a CPU's patches are smaller, so an eighth: half of each axis).
LOWRES_SHARE = 0.125
COARSEN = 1.1
BATCH_SHARE = 0.05
# The batch of a CPU's plan, and the smallest of a GPU's.
BATCH = 2
# The schedule of a config whose step is timed: (epochs, steps per epoch, validation interval).
MEASURED = (1, MIN_STEPS, 1)
NNUNET_MAX_STEPS = 1000 * 250
# Predicted components smaller than this (millilitres) are removed: the CPU recipe's 25 voxels of 2 mm.
MIN_COMPONENT_ML = 0.2


@dataclasses.dataclass
class Plan:
    """The planned config and, per choice, ``(topic, choice, reason)``."""

    config: dict
    reasons: list
    estimate_minutes: float


@dataclasses.dataclass(frozen=True)
class Target:
    """What a plan is for: ``device`` with ``memory_bytes`` for a step and ``budget_seconds`` for a whole run, and
    the step's precision and first level's filters there."""

    device: object
    memory_bytes: int
    budget_seconds: float

    @property
    def cuda(self):
        """Whether the target is a GPU."""
        return self.device.type == "cuda"

    @property
    def amp(self):
        """float16 with gradient scaling on a GPU, bfloat16 on a CPU."""
        return "fp16" if self.cuda else "bf16"

    @property
    def base_filters(self):
        """nnU-Net's 32 on a GPU, the CPU recipe's 16 on a CPU."""
        return 32 if self.cuda else 16


def plan_experiment(layout, fingerprint, device, budget_minutes, memory_bytes):
    """The ``Plan`` of a dataset (``DatasetLayout`` and its fingerprint) for ``device`` within ``budget_minutes`` of
    a whole ``unet3d-train`` run and ``memory_bytes`` of device memory."""
    reasons = []
    scheme = label_scheme_of(layout, fingerprint, reasons)
    target = Target(device, memory_bytes, budget_minutes * 60)
    normalization, crop = normalization_section(layout, fingerprint, reasons)
    sections = Sections(scheme, len(layout.channel_names), normalization, crop)
    target_spacing, spacing_reason = spacing_of(fingerprint)
    found, spacing, wanted, timing = fit_patch(sections, target, fingerprint, target_spacing)
    shape = median_shape(fingerprint["cases"], spacing, crop)
    spacing = [round(s, 4) for s in spacing]
    was_coarsened = spacing != [round(s, 4) for s in target_spacing]
    reasons.insert(1, ("spacing", _mm(spacing), spacing_reason + (
        f"; coarsened from {_mm(target_spacing)} for the patch (below)" if was_coarsened else "")))
    batch, timing = larger_batch(sections, target, spacing, found, shape, fingerprint["n_cases"], timing)
    patch, _, strides = found
    n_folds, (_, n_epochs, per_epoch, interval), costs = choose_folds(
        target.budget_seconds, timing, fingerprint["n_cases"], fingerprint["n_test_cases"],
        topology.windows(shape, patch), fingerprint["read_seconds"]["median_cpu_per_case"])
    model = sections.model(found[1], strides, target)
    reasons += patch_reasons(target, found, spacing, shape, crop, wanted,
                             _mm(target_spacing) if was_coarsened else None)
    reasons.append(("network", f"DynUNet, {len(strides)} levels, filters {model['filters']}", (
        f"levels halve each axis until it is under {2 * topology.MIN_FEATURE_MAP} voxels (and only axes within twice "
        f"the finest spacing); kernels of 1 along an axis while its spacing is over twice the finest; "
        f"{target.base_filters} filters doubling per level up to {MAX_FILTERS} "
        f"({'nnU-Net' if target.cuda else 'the CPU recipe'}); batch {batch}")))
    reasons.append(("timed step", f"{timing.step_seconds:.3f} s per step, {timing.window_seconds:.4f} s per "
                    "inference window", f"the planned config's training step measured on {device} with "
                    f"{target.amp} autocast, times {budget.DATA_OVERHEAD} for data loading"))
    estimate = budget.run_seconds(timing, costs, n_folds, n_epochs, per_epoch, interval) / 60
    reasons.append(("length", f"{n_folds} folds x {n_epochs} epochs x {per_epoch} steps, validation every "
                    f"{interval} epoch(s)", (
                        f"the most folds (of {', '.join(map(str, FOLD_CHOICES))}) that leave {MIN_STEPS} steps each "
                        f"in {budget_minutes:.4g} minutes, after preprocessing ({costs.preprocessing / 60:.1f} min), "
                        f"each fold's predictions ({costs.predictions / 60:.1f} min) and validations "
                        f"({costs.validation_pass:.1f} s each, at most {budget.VALIDATION_SHARE:.0%} of a fold); "
                        f"estimated run: {estimate:.1f} minutes")))
    min_component = clean_up(fingerprint, scheme, reasons)
    config = sections.config(target, spacing, found, batch, (n_epochs, per_epoch, interval), n_folds, min_component)
    return Plan(config, reasons, estimate)


def time_config(config, device):
    """The ``StepTiming`` of a planned config's own training step on ``device``."""
    return budget.time_step(experiment_from_dict(config, cases_required=False), device)


def time_patch(sections, target, spacing, found, batch):
    """The ``StepTiming`` of the config a patch ``found`` (patch, kernels, strides) at ``spacing`` with ``batch``
    would be written as."""
    return time_config(sections.config(target, spacing, found, batch, MEASURED), target.device)


def spacing_of(fingerprint):
    """``(target spacing, why)``: nnU-Net's rule on the cases' spacings."""
    cases = fingerprint["cases"]
    spacing, anisotropic = topology.target_spacing([c["spacing"] for c in cases], [c["shape"] for c in cases])
    return spacing, (
        f"median of the cases' spacings {_mm(fingerprint['median_spacing'])}; the coarse axis is "
        f"{fingerprint['anisotropy']:.2f} times the finest, "
        + ("so, as nnU-Net does for anisotropic data, it takes the 10th percentile of its spacings and no finer"
           if anisotropic else f"under nnU-Net's threshold of {topology.ANISOTROPY:g}, so it keeps its median"))


def fit_patch(sections, target, fingerprint, target_spacing):
    """``(patch and topology, spacing, steps wanted, StepTiming)`` of the largest patch that fits the target.

    A step's time is a fixed cost plus a cost per voxel: two measured patches give the
    guess the search uses, then the chosen patch is measured too, and searched again once
    where it leaves under 90% of the steps wanted.
    """
    cases, crop = fingerprint["cases"], sections.crop
    n_cases, n_test = fingerprint["n_cases"], fingerprint["n_test_cases"]
    seconds_per_case = fingerprint["read_seconds"]["median_cpu_per_case"]

    def measure(spacing, found):
        return time_patch(sections, target, spacing, found, BATCH)

    def steps_at(timing, shape, patch):  # per fold, in the fewest folds (2): folds are chosen after the patch
        costs = budget.run_costs(timing, n_cases, 2, n_test, topology.windows(shape, patch), seconds_per_case)
        return budget.fold_schedule(target.budget_seconds, timing, costs, 2)[0]

    def in_memory(patch, kernels, strides):
        filters = sections.model(kernels, strides, target)["filters"]
        return budget.estimated_bytes(patch, strides, filters, BATCH, sections.in_channels,
                                      target.amp) <= target.memory_bytes

    spacing = target_spacing
    shape = median_shape(cases, spacing, crop)
    reference = topology.fitted([min(s, 64) for s in topology.initial_patch(spacing, shape)], spacing)[:3]
    small = topology.fitted([min(s, topology.MIN_PATCH) for s in reference[0]], spacing)[:3]
    points = {tuple(p[0]): measure(spacing, p) for p in (small, reference)}
    for _ in range(2):
        guess = budget.time_model([(np.prod(patch), timing) for patch, timing in points.items()])
        found, spacing, wanted = choose_patch(target_spacing, lambda spacing: median_shape(cases, spacing, crop),
                                              guess, in_memory, steps_at)
        if found is None:
            raise UserError(f"even the smallest patch does not fit {target.memory_bytes / 2 ** 30:.1f} GiB of "
                            f"{target.device.type} memory (--gpu_memory_gb)")
        if tuple(found[0]) not in points:
            points[tuple(found[0])] = measure(spacing, found)
        timing = points[tuple(found[0])]
        if steps_at(timing, median_shape(cases, spacing, crop), found[0]) >= 0.9 * wanted:
            break
    return found, spacing, wanted, timing


def larger_batch(sections, target, spacing, found, shape, n_cases, timing):
    """``(batch, StepTiming)``: on a GPU, nnU-Net's rule of a larger batch where memory allows, up to
    ``BATCH_SHARE`` of the dataset's voxels (the step timed again); ``BATCH`` and ``timing`` otherwise.
    A measured peak over the memory allowed is refused."""
    patch, kernels, strides = found
    batch = BATCH
    if target.cuda:
        filters = sections.model(kernels, strides, target)["filters"]
        while (budget.estimated_bytes(patch, strides, filters, batch + 1, sections.in_channels, target.amp)
               <= target.memory_bytes and (batch + 1) * np.prod(patch) <= BATCH_SHARE * n_cases * np.prod(shape)):
            batch += 1
        if batch != BATCH:
            timing = time_patch(sections, target, spacing, found, batch)
    if timing.peak_bytes and timing.peak_bytes > target.memory_bytes:
        raise UserError(f"the planned patch {patch} (batch {batch}) took {timing.peak_bytes / 2 ** 30:.1f} GiB on "
                        f"{target.device}, over the estimate and the {target.memory_bytes / 2 ** 30:.1f} GiB allowed; "
                        "give a lower --gpu_memory_gb")
    return batch, timing


def patch_reasons(target, found, spacing, shape, crop, wanted, coarsened_from):
    """The ``patch`` row of the plan's reasons."""
    patch = found[0]
    why_size = (f"the largest patch within {target.memory_bytes / 2 ** 30:.1f} GiB of {target.device.type} memory "
                f"that leaves at least {wanted} training steps per fold in the budget" + (
                    "" if wanted == MIN_STEPS else f" (the budget is too short for {MIN_STEPS} at a useful patch "
                                                   "size: more minutes give more steps)"))
    coarser = (f"; the spacing was coarsened from {coarsened_from} for it to cover {LOWRES_SHARE:.0%}"
               if coarsened_from else "")
    return [("patch", f"{_voxels(patch)} voxels ({_mm([p * s for p, s in zip(patch, spacing)])})", (
        f"{why_size}; it covers {np.prod(patch) / np.prod(shape):.0%} of the median "
        f"{'non-zero-cropped ' if crop else ''}volume of {_voxels([round(s) for s in shape])} voxels{coarser}"))]


def clean_up(fingerprint, scheme, reasons):
    """The smallest component a prediction keeps (voxels of the median input spacing), with its reason."""
    voxel_ml = float(np.prod(fingerprint["median_spacing"])) / 1000
    min_component = max(1, round(MIN_COMPONENT_ML / voxel_ml))
    reasons.append(("clean-up", f"components under {min_component} voxels removed from each "
                    f"{'region' if scheme.mode == 'regions' else 'class'} of a prediction", (
                        f"{MIN_COMPONENT_ML:g} ml at the median input voxel of {voxel_ml * 1000:.3g} mm3 (the "
                        "predictions' grid): stray specks cost a case its whole Dice where a label is absent")))
    return min_component


def choose_patch(target, shape_at, guess, in_memory, steps_at):
    """``(patch and topology, spacing, steps)``: the largest patch that fits memory, covers ``LOWRES_SHARE`` of the
    median volume and leaves ``MIN_STEPS`` per fold, with ``guess(voxels)`` the ``StepTiming`` of a patch.

    Where the budget is too short, the spacing coarsens (up to twice ``target``) before the steps go
    down ``STEP_LADDER``; where nothing fits, the smallest patch at ``target`` with whatever steps remain.
    """
    for wanted in STEP_LADDER:
        spacing = list(target)
        while min(spacing) <= 2 * min(target):
            shape = shape_at(spacing)

            def fits(patch, kernels, strides):
                return in_memory(patch, kernels, strides) and steps_at(guess(np.prod(patch)), shape, patch) >= wanted

            found = topology.search_patch(spacing, shape, fits, floor=LOWRES_SHARE * np.prod(shape))
            if found is not None:
                return found, spacing, wanted
            spacing = coarsened(spacing)
    shape = shape_at(target)
    smallest = topology.search_patch(target, shape, lambda patch, kernels, strides: in_memory(
        patch, kernels, strides) and np.prod(patch) <= LOWRES_SHARE * np.prod(shape))
    return smallest, list(target), 0


def choose_folds(budget_seconds, timing, n_cases, n_test, case_windows, seconds_per_case):
    """``(n_folds, fold schedule, RunCosts)``: the most folds that leave ``MIN_STEPS`` each, else 2."""
    if n_cases < 2:
        raise UserError(f"the dataset has {n_cases} labelled case; cross-validation needs at least 2")
    for n_folds in (*[n for n in FOLD_CHOICES if n <= n_cases], 2):
        costs = budget.run_costs(timing, n_cases, n_folds, n_test, case_windows, seconds_per_case)
        schedule = budget.fold_schedule(budget_seconds, timing, costs, n_folds, NNUNET_MAX_STEPS)
        if schedule[0] >= MIN_STEPS or n_folds == 2:
            break
    if schedule[0] < 1:
        needed = (costs.preprocessing + 2 * (costs.predictions + costs.validation_pass + budget.FOLD_OVERHEAD
                                             + budget.EPOCH_OVERHEAD + timing.step_seconds)) / 60
        raise UserError(f"--budget_minutes {budget_seconds / 60:g} is too short: preprocessing, one epoch and the "
                        f"predictions of 2 folds alone take about {needed:.1f} minutes")
    return n_folds, schedule, costs


def median_shape(cases, spacing, crop):
    """The median shape (voxels) of the cases, cropped to their non-zero box with ``crop``, at ``spacing``."""
    key = "nonzero_shape" if crop else "shape"
    return [float(s) for s in np.median([[n * s / t for n, s, t in zip(c[key], c["spacing"], spacing)]
                                         for c in cases], axis=0)]


def coarsened(spacing):
    """One step of nnU-Net's low-resolution spacing: the finer axes coarsen first, all of them once isotropic."""
    spacing = np.asarray(spacing, float)
    finer = spacing < spacing.max() / 1.001
    spacing[finer if finer.any() else slice(None)] *= COARSEN
    return [float(min(s, spacing.max())) for s in spacing]


def label_scheme_of(layout, fingerprint, reasons):
    """The dataset's ``LabelScheme``: dataset.json's, BraTS regions, or the label maps' values as classes."""
    found = sorted(int(value) for value in fingerprint["label_stats"])
    if not found:
        raise UserError(f"{layout.root}: the label maps hold no foreground (every voxel 0)")
    if layout.kind == "brats":
        scheme = LabelScheme(BRATS_2023_LABELS if 3 in found and 4 not in found else BRATS_LABELS, "regions",
                             BRATS_REGIONS)
        why = "BraTS folders: nested whole tumour, tumour core and enhancing tumour, one sigmoid each"
    elif layout.scheme is not None:
        scheme = layout.scheme
        why = ("dataset.json defines nested regions (nnU-Net's region labels), one sigmoid each" if scheme.hierarchy
               else "dataset.json's exclusive labels: a softmax over background and each class")
    else:
        scheme = LabelScheme(tuple(found), "classes")
        why = "exclusive labels, their values read from the label maps: a softmax over background and each class"
    unknown = sorted(set(found) - set(scheme.values))
    if unknown:
        raise UserError(f"{layout.root}: the label maps hold value(s) {unknown} that the dataset's labels "
                        f"{list(scheme.values)} do not name")
    reasons.append(("labels", f"{scheme.mode} {scheme.names} of labels {list(scheme.values)}", why))
    return scheme


def _mm(values):
    return " x ".join(f"{v:.3g}" for v in values) + " mm"


def _voxels(values):
    return " x ".join(str(int(v)) for v in values)


def device_memory(device, gpu_memory_gb=None):
    """Bytes a training step may use: ``gpu_memory_gb`` (or 85% of the GPU's) on CUDA, half the RAM on CPU."""
    if gpu_memory_gb is not None:
        return int(gpu_memory_gb * 2 ** 30)
    if device.type == "cuda":
        import torch

        return int(0.85 * torch.cuda.get_device_properties(device).total_memory)
    return int(0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
