"""From a dataset's layout and fingerprint to a config that fits the data, the target device and the time budget.

Each choice is recorded with its reason (``Plan.reasons``) for ``plan.md``. The structure
(spacing, patch, network, batch, folds, augmentation, test-time mirroring) follows from the
fingerprint, the target's memory and the speed table (``speed.SPEEDS``) alone, so planning
the same folder again gives the same structure on a busy machine, and a GPU can be planned
for from a login node. The budget then becomes a length (epochs, steps, validation interval)
through ``budget``'s arithmetic on the step's cost: measured on the device where it is here
(``speed.measure_step``), given (``--step_seconds``), or the table's. The parts that follow
nnU-Net's rules (spacing, topology, patch) live in ``topology``; the config's sections in
``sections``; the window and mirroring of validation and prediction, and their cost, in
``prediction``.
"""

import dataclasses
import os

import numpy as np

from unet3d.config.experiment import experiment_from_dict
from unet3d.config.labels import BRATS_2023_LABELS, BRATS_LABELS, BRATS_REGIONS, LabelScheme
from unet3d.errors import UserError
from unet3d.plan import budget, speed, topology
from unet3d.plan.prediction import WINDOW_REASON, mirrored, mirroring_reason, prediction_window, run_costs
from unet3d.plan.sections import MAX_FILTERS, Sections, augmentation_reason, normalization_section

# Training steps a fold needs at least: the CPU recipe's 576 until 2026-12 (768 since). At half that the recipe
# loses 0.01-0.02 Dice; a plan of 432 steps at a larger patch scored 0.03 below it on enhancing tumour (docs/plan.md).
MIN_STEPS = 576
STEP_LADDER = (MIN_STEPS, 250, 120, 60, 30)
FOLD_CHOICES = (5, 4, 3, 2)
# A patch covers at least this share of the median volume while the budget allows (nnU-Net's low-resolution
# configuration starts below a quarter; a CPU's patches are smaller, so an eighth: half of each axis).
LOWRES_SHARE = 0.125
BATCH_SHARE = 0.05
# The batch of a CPU's plan, and the smallest of a GPU's.
BATCH = 2
# The schedule of a config whose step is measured: (epochs, steps per epoch, validation interval).
MEASURED = (1, MIN_STEPS, 1)
NNUNET_MAX_STEPS = 1000 * 250
# What a GPU plan made without a GPU assumes, as nnU-Net's default planner does.
DEFAULT_GPU_MEMORY_GB = 8.0


@dataclasses.dataclass
class Plan:
    """The planned config, per choice ``(topic, choice, reason)``, and the inputs of its length (``cost``:
    seconds per step and window and where they came from), for ``plan.json``."""

    config: dict
    reasons: list
    estimate_minutes: float
    cost: dict


@dataclasses.dataclass(frozen=True)
class Target:
    """What a plan is for: ``device`` with ``memory_bytes`` for a step and ``budget_seconds`` for a whole run,
    ``threads`` of a CPU, and whether the device is on this machine (``present``: its step can be measured)."""

    device: object
    memory_bytes: int
    budget_seconds: float
    threads: int = 1
    present: bool = True

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

    @property
    def speed(self):
        """The speed table's line for the device class."""
        return speed.SPEEDS[self.device.type]

    def table_cost(self, model, patch, batch):
        """The ``StepCost`` of a step by the speed table."""
        return speed.table_cost(self.speed, model, patch, batch, self.threads)


def plan_experiment(layout, fingerprint, target, step_seconds=None):
    """The ``Plan`` of a dataset (``DatasetLayout`` and its fingerprint) for a ``Target``; ``step_seconds`` replaces
    the measured (or table) seconds of a training step."""
    reasons, sections, spacing, shape = shared_choices(layout, fingerprint)
    found, wanted = fit_patch(sections, target, fingerprint, spacing, shape)
    batch = larger_batch(sections, target, found, shape, fingerprint["n_cases"])
    patch, kernels, strides = found
    model = sections.model(kernels, strides, target)
    n_folds = choose_folds(target, fingerprint, shape, model, patch, batch, prediction_window(target, shape, found))
    reasons += patch_reasons(target, found, spacing, shape, sections.crop, wanted)
    reasons.append(("network", f"DynUNet, {len(strides)} levels, filters {model['filters']}", (
        f"levels halve each axis until it is under {2 * topology.MIN_FEATURE_MAP} voxels (and only axes within twice "
        f"the finest spacing); kernels of 1 along an axis while its spacing is over twice the finest; "
        f"{target.base_filters} filters doubling per level up to {MAX_FILTERS} "
        f"({'nnU-Net' if target.cuda else 'the CPU recipe'}); batch {batch}")))
    return plan_length(sections, target, fingerprint, (spacing, shape, found, batch, n_folds), reasons, step_seconds)


def shared_choices(layout, fingerprint):
    """``(reasons, Sections, spacing, median shape)``: what every configuration of a dataset shares (labels,
    normalization, spacing), with the rows that explain them."""
    reasons = []
    scheme = label_scheme_of(layout, fingerprint, reasons)
    normalization, crop = normalization_section(layout, fingerprint, reasons)
    sections = Sections(scheme, len(layout.channel_names), normalization, crop)
    spacing, spacing_reason = spacing_of(fingerprint)
    reasons.insert(1, ("spacing", _mm(spacing), spacing_reason))
    return reasons, sections, spacing, median_shape(fingerprint["cases"], spacing, crop)


def plan_length(sections, target, fingerprint, structure, reasons, step_seconds=None):
    """The ``Plan`` of a ``structure`` ``(spacing, median shape, (patch, kernels, strides), batch, n_folds)``: the
    step's cost, the length the budget leaves, their rows after ``reasons``, and the config."""
    spacing, shape, found, batch, n_folds = structure
    cost = step_cost(sections, target, spacing, found, batch, step_seconds)
    window = prediction_window(target, shape, found)
    # Mirroring and augmentation are chosen by the speed table, as the structure is: the same on a busy machine.
    table = target.table_cost(sections.model(found[1], found[2], target), found[0], batch)
    tta, mirrored_seconds, measured_mirrored = mirrored(target, table, cost, fingerprint, (n_folds, shape, found),
                                                        window)
    augmented_steps = table_steps(sections, target, fingerprint, shape, found, batch, n_folds, tta)
    costs = run_costs(cost, fingerprint, n_folds, shape, found[0], window, tta)
    steps, n_epochs, per_epoch, interval = budget.fold_schedule(target.budget_seconds, cost, costs, n_folds,
                                                                NNUNET_MAX_STEPS)
    if steps < 1:
        raise too_short(target, cost, costs, n_folds)
    reasons.append(("step", f"{cost.step_seconds:.3f} s per training step, {cost.window_seconds:.4f} s per "
                    "inference window", cost.source))
    estimate = budget.run_seconds(cost, costs, n_folds, n_epochs, per_epoch, interval) / 60
    reasons.append(length_reason(target, n_folds, (steps, n_epochs, per_epoch, interval), costs, estimate))
    reasons.append(smallest_structure(fingerprint, sections.scheme, spacing))
    reasons.append(augmentation_reason(augmented_steps, target.speed.name, None if target.cuda else target.threads))
    if window:
        reasons.append(("prediction window", " x ".join(map(str, window)), WINDOW_REASON))
    if mirrored_seconds is not None:
        reasons.append(mirroring_reason(tta, mirrored_seconds, measured_mirrored, target.budget_seconds))
    config = sections.config(target, spacing, found, batch, (n_epochs, per_epoch, interval), n_folds, window, tta,
                             augmented_steps)
    return Plan(config, reasons, estimate, cost_inputs(target, cost, fingerprint, costs))


def cost_inputs(target, cost, fingerprint, costs):
    """What the plan's length was computed from, for ``plan.json``: enough to replay it (``--step_seconds``)."""
    return {"device": str(target.device), "device_present": target.present, "threads": target.threads,
            "memory_gb": round(target.memory_bytes / 2 ** 30, 3), "budget_minutes": target.budget_seconds / 60,
            "step_seconds": cost.step_seconds, "window_seconds": cost.window_seconds, "source": cost.source,
            "read_seconds_per_case": budget.read_seconds(fingerprint),
            "preprocessing_seconds": costs.preprocessing, "validation_pass_seconds": costs.validation_pass,
            "prediction_seconds_per_fold": costs.predictions}


def step_cost(sections, target, spacing, found, batch, step_seconds=None):
    """The ``StepCost`` of the planned config: ``step_seconds`` where given, else its own step measured on the
    device where it is here, else the speed table's."""
    patch = found[0]
    model = sections.model(found[1], found[2], target)
    if step_seconds is None and not target.present:
        return target.table_cost(model, patch, batch)
    if step_seconds is not None:
        source = "given with --step_seconds; the window's seconds scaled from it by the speed table's ratio"
        return speed.given_cost(step_seconds, target.speed, model, patch, batch, target.threads, source)
    config = sections.config(target, spacing, found, batch, MEASURED)
    seconds, peak = speed.measure_step(experiment_from_dict(config, cases_required=False), target.device)
    if peak and peak > target.memory_bytes:
        raise UserError(f"the planned patch {patch} (batch {batch}) took {peak / 2 ** 30:.1f} GiB on "
                        f"{target.device}, over the estimate and the {target.memory_bytes / 2 ** 30:.1f} GiB allowed; "
                        "give a lower --gpu_memory_gb")
    how = (f"one thread's CPU seconds (which other processes do not change), shared by {target.threads} threads at "
           f"{speed.PARALLEL_EFFICIENCY:.0%} efficiency" if target.device.type == "cpu" else "wall-clock seconds")
    source = (f"the planned config's own training step measured on {target.device} with {target.amp} autocast: the "
              f"fastest of {speed.REPEATS} or more (up to {speed.MEASURED_SECONDS:g} s of steps) after a warm-up, "
              f"{how}, times {speed.DATA_OVERHEAD} for data loading; the window's seconds scaled from it by the speed "
              f"table's ratio. Replay with --step_seconds {seconds!r}")
    cost = speed.given_cost(seconds, target.speed, model, patch, batch, target.threads, source)
    return dataclasses.replace(cost, peak_bytes=peak)


def too_short(target, cost, costs, n_folds):
    """The UserError of a budget that does not hold the folds' overheads and one step per epoch."""
    fold = (costs.predictions + budget.MIN_VALIDATIONS * (costs.validation_pass + budget.EPOCH_OVERHEAD
                                                          + cost.step_seconds) + budget.FOLD_OVERHEAD)
    needed = (costs.preprocessing + n_folds * fold) / 60
    return UserError(f"--budget_minutes {target.budget_seconds / 60:g} is too short: preprocessing, "
                     f"{budget.MIN_VALIDATIONS} validated epochs and the predictions of {n_folds} folds alone take "
                     f"about {needed:.1f} minutes")


def spacing_of(fingerprint):
    """``(target spacing, why)``: nnU-Net's rule on the cases' spacings."""
    cases = fingerprint["cases"]
    spacing, anisotropic = topology.target_spacing([c["spacing"] for c in cases], [c["shape"] for c in cases])
    return [round(s, 4) for s in spacing], (
        f"median of the cases' spacings {_mm(fingerprint['median_spacing'])}; the coarse axis is "
        f"{fingerprint['anisotropy']:.2f} times the finest, "
        + ("so, as nnU-Net does for anisotropic data, it takes the 10th percentile of its spacings and no finer"
           if anisotropic else f"under nnU-Net's threshold of {topology.ANISOTROPY:g}, so it keeps its median")
        + "; never coarsened for the budget (small structures would be lost)")


def fit_patch(sections, target, fingerprint, spacing, shape):
    """``(patch and topology, steps wanted)``: the largest patch that fits the target's memory and, by the speed
    table, leaves ``STEP_LADDER``'s most steps per fold in the fewest folds (2) while covering ``LOWRES_SHARE``
    of the median volume; where the budget allows none, the largest within ``LOWRES_SHARE`` that fits memory."""
    def in_memory(patch, kernels, strides):
        filters = sections.model(kernels, strides, target)["filters"]
        return budget.estimated_bytes(patch, strides, filters, BATCH, sections.in_channels,
                                      target.amp) <= target.memory_bytes

    def steps_at(patch, kernels, strides):
        return table_steps(sections, target, fingerprint, shape, (patch, kernels, strides), BATCH)

    for wanted in STEP_LADDER:
        found = topology.search_patch(spacing, shape, lambda *found: in_memory(*found) and steps_at(*found) >= wanted,
                                      floor=LOWRES_SHARE * np.prod(shape))
        if found is not None:
            return found, wanted
    found = topology.search_patch(spacing, shape, lambda patch, kernels, strides: in_memory(
        patch, kernels, strides) and np.prod(patch) <= LOWRES_SHARE * np.prod(shape))
    if found is None:
        raise UserError(f"even the smallest patch does not fit {target.memory_bytes / 2 ** 30:.1f} GiB of "
                        f"{target.device.type} memory (--gpu_memory_gb)")
    return found, 0


def table_steps(sections, target, fingerprint, shape, found, batch, n_folds=2, tta=False):
    """The training steps per fold that the budget leaves a patch ``found`` (patch, kernels, strides) with ``batch``
    by the speed table, in ``n_folds`` folds (the fewest, 2, while the patch is chosen: folds are chosen after it),
    the predictions mirrored with ``tta``."""
    patch = found[0]
    cost = target.table_cost(sections.model(found[1], found[2], target), patch, batch)
    costs = run_costs(cost, fingerprint, n_folds, shape, patch, prediction_window(target, shape, found), tta)
    return budget.fold_schedule(target.budget_seconds, cost, costs, n_folds, NNUNET_MAX_STEPS)[0]


def larger_batch(sections, target, found, shape, n_cases):
    """On a GPU, nnU-Net's rule of a larger batch where memory allows, up to ``BATCH_SHARE`` of the dataset's voxels;
    ``BATCH`` otherwise."""
    patch, kernels, strides = found
    batch = BATCH
    if target.cuda:
        filters = sections.model(kernels, strides, target)["filters"]
        while (budget.estimated_bytes(patch, strides, filters, batch + 1, sections.in_channels, target.amp)
               <= target.memory_bytes and (batch + 1) * np.prod(patch) <= BATCH_SHARE * n_cases * np.prod(shape)):
            batch += 1
    return batch


def patch_reasons(target, found, spacing, shape, crop, wanted):
    """The ``patch`` row of the plan's reasons."""
    patch = found[0]
    why_size = (f"the largest patch within {target.memory_bytes / 2 ** 30:.1f} GiB of {target.device.type} memory "
                + (f"that leaves at least {wanted} training steps per fold in the budget at the speed table's "
                   f"{target.speed.name}" if wanted else
                   f"within {LOWRES_SHARE:.0%} of the median volume: the budget is too short for {STEP_LADDER[-1]} "
                   "steps per fold at a larger one") + (
                    "" if wanted in (0, MIN_STEPS) else f" (the budget is too short for {MIN_STEPS} at a patch of "
                                                        f"{LOWRES_SHARE:.0%} of the volume: more minutes give more)"))
    return [("patch", f"{_voxels(patch)} voxels ({_mm([p * s for p, s in zip(patch, spacing)])})", (
        f"{why_size}; it covers {np.prod(patch) / np.prod(shape):.0%} of the median "
        f"{'non-zero-cropped ' if crop else ''}volume of {_voxels([round(s) for s in shape])} voxels"))]


def length_reason(target, n_folds, schedule, costs, estimate):
    """The ``length`` row of the plan's reasons: what the folds leave, as planned."""
    steps, n_epochs, per_epoch, interval = schedule
    folds_why = (f"the most folds (of {', '.join(map(str, FOLD_CHOICES))}) that leave {MIN_STEPS} steps each by the "
                 "speed table" if n_folds > 2 else "2 folds, the fewest")
    return ("length", f"{n_folds} folds x {n_epochs} epochs x {per_epoch} steps ({steps} steps per fold), validation "
            f"every {interval} epoch(s)", (
                f"{folds_why}; the steps are what {target.budget_seconds / 60:.4g} minutes leave at the step's cost "
                f"(above), after preprocessing ({costs.preprocessing / 60:.1f} min), each fold's predictions "
                f"({costs.predictions / 60:.1f} min) and validations ({costs.validation_pass:.1f} s each, at least "
                f"{budget.MIN_VALIDATIONS} per fold, otherwise at most {budget.VALIDATION_SHARE:.0%} of a fold); "
                f"estimated run: {estimate:.1f} minutes"))


def smallest_structure(fingerprint, scheme, spacing):
    """The ``smallest structure`` row: the smallest label in a case, in voxels of the planned spacing; why the plan
    sets no minimum component size."""
    voxel = float(np.prod(spacing))
    stats = {value: stats for value, stats in fingerprint["label_stats"].items() if stats["cases_present"]}
    value = min(stats, key=lambda v: stats[v].get("min_volume_mm3", stats[v]["median_volume_mm3"]))
    smallest = stats[value].get("min_volume_mm3", stats[value]["median_volume_mm3"])
    return ("smallest structure", f"label {value}: {smallest / voxel:.0f} voxels in its smallest case "
            f"({stats[value]['median_volume_mm3'] / voxel:.0f} median)", (
                "at the planned spacing; no fixed clean-up is planned, as it could remove such structures: "
                "after cross-validation, unet3d-train keeps a clean-up per "
                f"{'region' if scheme.mode == 'regions' else 'class'} only where the out-of-fold predictions show it "
                "raises Dice (postprocessing.json)"))


def choose_folds(target, fingerprint, shape, model, patch, batch, window=None):
    """The most folds (``FOLD_CHOICES``) that leave ``MIN_STEPS`` each by the speed table, else 2, validating and
    predicting with ``window`` (None: the patch)."""
    n_cases = fingerprint["n_cases"]
    if n_cases < 2:
        raise UserError(f"the dataset has {n_cases} labelled case; cross-validation needs at least 2")
    cost = target.table_cost(model, patch, batch)
    for n_folds in [n for n in FOLD_CHOICES if n <= n_cases]:
        costs = run_costs(cost, fingerprint, n_folds, shape, patch, window)
        if budget.fold_schedule(target.budget_seconds, cost, costs, n_folds, NNUNET_MAX_STEPS)[0] >= MIN_STEPS:
            return n_folds
    return 2


def median_shape(cases, spacing, crop):
    """The median shape (voxels) of the cases, cropped to their non-zero box with ``crop``, at ``spacing``."""
    key = "nonzero_shape" if crop else "shape"
    return [float(s) for s in np.median([[n * s / t for n, s, t in zip(c[key], c["spacing"], spacing)]
                                         for c in cases], axis=0)]


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
        why = ("dataset.json defines nested regions (nnU-Net's region labels), one sigmoid each" if scheme.nested
               else "dataset.json's overlapping regions, one sigmoid each, painted in its regions_class_order"
               if scheme.hierarchy else "dataset.json's exclusive labels: a softmax over background and each class")
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


def device_memory(device, gpu_memory_gb=None, present=True):
    """Bytes a training step may use: ``gpu_memory_gb`` (or 85% of the GPU's, or ``DEFAULT_GPU_MEMORY_GB`` for a GPU
    that is not here) on CUDA, half the RAM on CPU."""
    if gpu_memory_gb is not None:
        return int(gpu_memory_gb * 2 ** 30)
    if device.type == "cuda":
        if not present:
            return int(DEFAULT_GPU_MEMORY_GB * 2 ** 30)
        import torch

        return int(0.85 * torch.cuda.get_device_properties(device).total_memory)
    return int(0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
