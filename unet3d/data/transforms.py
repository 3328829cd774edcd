"""The preprocessing chain built from a config's ``dataset`` section.

It comes in two parts: ``preprocessing`` is deterministic (load, reorient, resample, crop,
normalize, resize or pad) and can be cached on disk; ``sampling`` is the random part that
runs every epoch (patches, spatial and intensity augmentation).
"""

import inspect

from monai.transforms import (
    Compose,
    CropForegroundd,
    DivisiblePadd,
    EnsureTyped,
    LoadImaged,
    Orientationd,
    RandCropByPosNegLabeld,
    Resized,
    SpatialPadd,
    Spacingd,
)

from unet3d.config.resolve import lookup, resolve
from unet3d.data.labels import LabelsToRegionsd
from unet3d.errors import UserError

ORIENTATION = "RAS"
AXIS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def preprocessing(
    labels=None,
    setup_label_hierarchy=False,
    normalization=None,
    normalization_kwargs=None,
    crop_foreground=False,
    resample=False,
    desired_shape=None,
    spacing=None,
    patch_size=None,
    divisible_by=None,
    with_label=True,
):
    """Load, stack modalities, reorient to RAS, resample, split labels, crop, normalize, resize or pad.

    Every step is a MONAI invertible transform (or label-only), so predictions can be
    brought back to the input's grid with ``monai.transforms.Invertd``.
    """
    keys = ["image", "label"] if with_label else ["image"]
    modes = ("bilinear", "nearest")[: len(keys)]
    steps = [
        LoadImaged(keys, ensure_channel_first=True, image_only=True),
        EnsureTyped("image", dtype="float32", track_meta=True),
        Orientationd(keys, axcodes=ORIENTATION, labels=AXIS_LABELS),
    ]
    if spacing is not None:
        steps.append(Spacingd(keys, pixdim=positive_triple(spacing, "dataset.spacing", float), mode=modes))
    if with_label:
        if not labels:
            raise UserError("config key 'dataset.labels' is missing (expected the label values, e.g. [2, 1, 4])")
        steps.append(LabelsToRegionsd("label", labels, setup_label_hierarchy))
    if crop_foreground:
        steps.append(CropForegroundd(keys, source_key="image", allow_smaller=True))
    steps.extend(normalizations(normalization, normalization_kwargs))
    if patch_size is not None:
        # Volumes smaller than a patch are padded so every patch lies inside the volume.
        steps.append(SpatialPadd(keys, spatial_size=positive_triple(patch_size, "dataset.patch_size")))
    elif resample:
        shape = positive_triple(desired_shape, "dataset.desired_shape")
        steps.append(Resized(keys, spatial_size=shape, mode=("trilinear", "nearest")[: len(keys)]))
    if divisible_by is not None:
        steps.append(DivisiblePadd(keys, k=positive_triple(divisible_by, "dataset.divisible_by")))
    return Compose(steps)


def inference_window(dataset_spec):
    """The sliding window for validation and prediction: ``patch_size``, else ``desired_shape``, else None."""
    window = dataset_spec.get("patch_size") or dataset_spec.get("desired_shape")
    return positive_triple(window, "dataset.patch_size") if window else None


def sampling(patch_size=None, foreground_oversampling=0.33, patches_per_case=1,
             spatial_augmentations=(), intensity_augmentations=()):
    """The random part, run on each preprocessed case every epoch: patches, then augmentation.

    Patches are centred on foreground with probability ``foreground_oversampling`` (nnU-Net
    uses one third) and on background otherwise.
    """
    steps = []
    if patch_size is not None:
        if not isinstance(foreground_oversampling, (int, float)) or not 0 <= foreground_oversampling <= 1:
            raise UserError("config key 'dataset.foreground_oversampling' must be a number from 0 to 1")
        if not isinstance(patches_per_case, int) or patches_per_case < 1:
            raise UserError("config key 'dataset.patches_per_case' must be a positive integer")
        steps.append(RandCropByPosNegLabeld(
            ["image", "label"], label_key="label", spatial_size=positive_triple(patch_size, "dataset.patch_size"),
            pos=foreground_oversampling, neg=1 - foreground_oversampling, num_samples=patches_per_case,
            allow_smaller=True,
        ))
    steps.extend(augmentations(spatial_augmentations, "dataset.spatial_augmentations", ["image", "label"]))
    steps.extend(augmentations(intensity_augmentations, "dataset.intensity_augmentations", "image"))
    return Compose(steps)


def augmentations(specs, key, keys):
    """MONAI dictionary transforms from a list of ``{"name": ..., **kwargs}``.

    unet3d fills in ``keys``; a spatial transform with a ``mode`` parameter gets the
    transform's own default for the image and ``nearest`` for the label, so labels stay binary.
    """
    if not specs:
        return []
    if not isinstance(specs, list):
        raise UserError(f"config key '{key}' must be a list of {{\"name\": ...}} objects")
    result = []
    for index, spec in enumerate(specs):
        where = f"{key}[{index}]"
        if not isinstance(spec, dict) or "name" not in spec:
            raise UserError(f"config key '{where}' must be an object with a 'name'")
        fixed = {"keys": keys}
        mode = inspect.signature(lookup("transform", spec["name"], f"{where}.name")).parameters.get("mode")
        if isinstance(keys, list) and mode is not None and "mode" not in spec:
            fixed["mode"] = (getattr(mode.default, "value", mode.default), "nearest")
        result.append(resolve("transform", spec, where, **fixed))
    return result


def normalizations(names, kwargs):
    """MONAI intensity transforms for ``dataset.normalization``: a name or a list of names.

    ``normalization_kwargs`` is one object for one name, or a list of objects, one per name.
    """
    if names is None:
        return []
    if isinstance(names, str):
        names, kwargs = [names], [kwargs or {}]
    elif kwargs is None:
        kwargs = [{} for _ in names]
    elif isinstance(kwargs, dict):
        kwargs = [kwargs for _ in names]
    if len(kwargs) != len(names):
        raise UserError("config key 'dataset.normalization_kwargs' must have one object per normalization")
    return [
        resolve("transform", {"name": name, **extra}, "dataset.normalization_kwargs", name_key="dataset.normalization", keys="image")
        for name, extra in zip(names, kwargs)
    ]


def positive_triple(value, key, kind=int):
    """``value`` as three positive numbers (one number is repeated), or a UserError naming ``key``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * 3
    valid = isinstance(value, (list, tuple)) and len(value) == 3 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and (kind is float or isinstance(v, int))
        for v in value
    )
    if not valid:
        noun = "integers" if kind is int else "numbers"
        raise UserError(f"config key '{key}' must be three positive {noun}, got {value!r}")
    return [kind(v) for v in value]
