"""The sections of a planned config: the network, loss, optimizer, schedule, normalization and augmentation.

The parts that do not depend on the data (optimizer, schedule shape, augmentation, loss
weighting) are the CPU recipe's (``examples/brats2020/cpu_recipe_config.json``, measured in
``docs/recipe.md``); longer schedules than the recipe's keep the richer augmentation it had before.
"""

import dataclasses

MAX_FILTERS = 320
# Schedules of up to this many optimizer steps per fold train as the CPU recipe (768 steps) does: flips only, two
# thirds of the patches centred on the label. Measured on realistic cases at 312 to 768 steps (docs/recipe.md).
SHORT_SCHEDULE_STEPS = 1000


@dataclasses.dataclass(frozen=True)
class Sections:
    """The sections of the planned config that the patch search does not change: the label scheme, its loss,
    the normalization and whether cases are cropped to their non-zero box."""

    scheme: object
    in_channels: int
    normalization: dict
    crop: bool

    def model(self, kernels, strides, target):
        """The ``model`` section of a topology."""
        return model_section(self.in_channels, self.scheme.n_channels, kernels, strides, target.base_filters)

    def config(self, target, spacing, patch_topology, batch, schedule, n_folds=2, window=None, tta=False,
               augmented_steps=None):
        """The whole config (without cases) of a patch ``(patch, kernels, strides)`` at ``spacing`` with ``batch``,
        a fold ``schedule`` of ``(n_epochs, steps per epoch, validation interval)``, ``n_folds``, the sliding
        ``window`` of validation and prediction (None: the patch), whether predictions are mirrored (``tta``) and
        the steps a fold that choose its augmentation (None: the schedule's)."""
        patch, kernels, strides = patch_topology
        n_epochs, per_epoch, interval = schedule
        augmented_steps = n_epochs * per_epoch if augmented_steps is None else augmented_steps
        scheme = self.scheme
        return {
            "model": self.model(kernels, strides, target),
            "loss": loss_section(scheme.mode),
            "optimizer": {"name": "AdamW", "lr": 0.003, "weight_decay": 0.0001},
            "scheduler": scheduler_section(n_epochs * per_epoch),
            "cross_validation": {"n_folds": n_folds, "random_seed": 25},
            "dataset": {"name": "SegmentationDataset", "label_mode": scheme.mode, "labels": list(scheme.values),
                        "label_names": scheme.names, **scheme.config_keys(),
                        "spacing": spacing, "crop_foreground": self.crop,
                        **self.normalization, "patch_size": patch, "patches_per_case": 1,
                        **augmentations(spacing, augmented_steps)},
            "training": {"n_epochs": n_epochs, "batch_size": batch, "validation_batch_size": 1,
                         "samples_per_epoch": per_epoch * batch, "validation_interval": interval,
                         "metric_to_monitor": "val_dice_mean", "amp": target.amp, "save_best": True, "seed": 0},
            "prediction": {**({"window": list(window)} if window else {}), **({"tta": True} if tta else {}),
                           "overlap": 0.5, "sw_batch_size": 4, "mask_to_nonzero": self.crop},
        }


def is_ct(name):
    """Whether a channel name says CT, the one modality whose intensities mean the same in every scan."""
    return name.strip().upper() == "CT"


def normalization_section(layout, fingerprint, reasons):
    """``(dataset normalization keys, crop_foreground)`` per channel kind."""
    channels = fingerprint["channels"]
    ct = [is_ct(c["name"]) or (layout.kind == "pairs" and c["image_min"] < -500) for c in channels]
    if all(ct):
        low = [c["percentile_0.5"] for c in channels]
        high = [c["percentile_99.5"] for c in channels]
        mean, std = [c["mean"] for c in channels], [max(c["std"], 1e-8) for c in channels]
        reasons.append(("normalization", "CT: clip to the foreground's 0.5-99.5 percentiles, z-score with the "
                        "dataset's foreground mean and std", "; ".join(
                            f"{c['name']}: [{lo:.1f}, {hi:.1f}], mean {m:.1f}, std {s:.1f}"
                            for c, lo, hi, m, s in zip(channels, low, high, mean, std))))
        if len(channels) == 1:  # one transform does both: the clipped range maps onto its z-scores
            kwargs = {"a_min": low[0], "a_max": high[0], "b_min": (low[0] - mean[0]) / std[0],
                      "b_max": (high[0] - mean[0]) / std[0], "clip": True}
            return {"normalization": "ScaleIntensityRanged", "normalization_kwargs": kwargs}, False
        return {"normalization": ["ThresholdIntensityd", "ThresholdIntensityd", "NormalizeIntensityd"],
                "normalization_kwargs": [{"threshold": min(low), "above": True, "cval": min(low)},
                                         {"threshold": max(high), "above": False, "cval": max(high)},
                                         {"subtrahend": mean, "divisor": std, "channel_wise": True}]}, False
    crop = not any(ct) and fingerprint["nonzero_share"] < 0.75
    reasons.append(("normalization", "z-score per channel" + (" over the non-zero region" if crop else ""), (
        f"{'MRI-like' if not any(ct) else 'mixed CT and other'} channels ({', '.join(c['name'] for c in channels)}): "
        "intensities differ between scans; the non-zero box holds a median "
        f"{fingerprint['nonzero_share']:.0%} of a volume"
        + (", so cases are cropped to it, and prediction labels nothing outside it" if crop else
           ", not worth cropping (nnU-Net crops when it saves a quarter)"))))
    return {"normalization": "NormalizeIntensityd", "normalization_kwargs": {"channel_wise": True, "nonzero": crop}}, crop


def loss_section(mode):
    """Dice + cross-entropy over the batch: sigmoid per region or label, softmax over classes."""
    if mode == "classes":
        return {"name": "DiceCELoss", "softmax": True, "to_onehot_y": True, "batch": True}
    return {"name": "DiceCELoss", "sigmoid": True, "batch": True}


def model_section(in_channels, out_channels, kernels, strides, base):
    """A DynUNet of the planned topology with deep supervision of all but the two coarsest outputs."""
    filters = [min(MAX_FILTERS, base * 2 ** level) for level in range(len(strides))]
    supervised = max(0, min(len(strides) - 2, 4))
    return {"name": "DynUNet", "spatial_dims": 3, "in_channels": in_channels, "out_channels": out_channels,
            "kernel_size": kernels, "strides": strides, "upsample_kernel_size": strides[1:], "filters": filters,
            "deep_supervision": supervised > 0, **({"deep_supr_num": supervised} if supervised else {})}


def scheduler_section(total_steps):
    """The recipe's linear warm-up (2% of the steps) then polynomial decay, stepped per batch, lengths "auto"."""
    warmup = max(1, min(250, round(0.02 * total_steps)))
    if total_steps <= 2 * warmup:
        return {"name": "PolynomialLR", "step_per_batch": True, "total_iters": "auto", "power": 0.9}
    return {"name": "SequentialLR", "step_per_batch": True, "milestones": [warmup], "schedulers": [
        {"name": "LinearLR", "start_factor": 0.1, "total_iters": "auto"},
        {"name": "PolynomialLR", "total_iters": "auto", "power": 0.9}]}


def augmentations(spacing, steps):
    """The dataset's sampling and augmentation keys for a fold of ``steps`` optimizer steps at ``spacing``.

    A short schedule (the CPU recipe's) learns more from unaltered patches and from tumour: flips only, two thirds of
    the patches centred on the label. A longer one gets rotations (only in the fine plane when one axis is coarse),
    scaling and intensity changes, and half of its patches on the label."""
    flips = {"name": "RandFlipd", "prob": 0.5, "spatial_axis": [0, 1, 2]}
    if steps <= SHORT_SCHEDULE_STEPS:
        return {"foreground_oversampling": 0.67, "spatial_augmentations": [flips], "intensity_augmentations": []}
    coarse = max(spacing) / min(spacing) >= 2
    rotate = [0.26 if not coarse or s == max(spacing) else 0.0 for s in spacing]
    return {"foreground_oversampling": 0.5, "spatial_augmentations": [
        {"name": "RandAffined", "prob": 0.2, "rotate_range": rotate, "scale_range": [0.1, 0.1, 0.1]}, flips],
        "intensity_augmentations": [
            {"name": "RandScaleIntensityd", "factors": 0.1, "prob": 0.5},
            {"name": "RandShiftIntensityd", "offsets": 0.1, "prob": 0.5},
            {"name": "RandGaussianNoised", "std": 0.05, "prob": 0.1}]}


def augmentation_reason(steps, table, threads=None):
    """The plan table's row for the augmentation of a fold of ``steps`` optimizer steps by the speed ``table`` (its
    name) for ``threads`` of a CPU: the table's steps, not the measured ones, so that a busy machine plans the
    same."""
    for_threads = f"; {threads} thread{'s' * (threads > 1)}" if threads else ""
    counted = f"{steps} steps a fold by the speed table ({table}{for_threads})"
    if steps <= SHORT_SCHEDULE_STEPS:
        return ("augmentation", "flips only; two thirds of the patches centred on the label", (
            f"{counted}, at most {SHORT_SCHEDULE_STEPS}: at the CPU recipe's length, flips alone and more tumour "
            "patches scored higher than rotation, scaling and intensity changes on realistic brain cases "
            "(docs/recipe.md)"))
    return ("augmentation", "rotation, scaling, flips, intensity scaling, shift and noise; half of the patches "
            "centred on the label", f"{counted}, over {SHORT_SCHEDULE_STEPS}: a schedule long enough for "
            "augmentation to pay, as in nnU-Net")
