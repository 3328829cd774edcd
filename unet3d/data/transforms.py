"""The preprocessing chain built from a config's ``dataset`` section.

It comes in two parts: ``preprocessing`` is deterministic (load, reorient, resample, crop,
normalize, resize or pad) and can be cached on disk in a compact form
(``unet3d.data.stored``); ``sampling`` is the random part that runs every epoch on that form
(patches read from it, target channels built, spatial and intensity augmentation). With
``dataset.batch_augmentation`` the training items keep the label values, and the training loop augments
whole batches and makes the targets (``unet3d.data.batch_augmentation``).
"""

import inspect

import numpy as np
from monai.transforms import (
    Compose,
    CropForegroundd,
    DivisiblePadd,
    EnsureTyped,
    LoadImaged,
    Orientationd,
    Randomizable,
    Resized,
    SpatialPadd,
    Spacingd,
)

from unet3d.config.resolve import resolve
from unet3d.data.batch_augmentation import larger_patch
from unet3d.data.formats import readers
from unet3d.data.patches import ExpandCased, LabelTargetsd, RandForegroundPatchd
from unet3d.errors import UserError

ORIENTATION = "RAS"
AXIS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def preprocessing(settings, with_label=True):
    """Load, stack modalities, reorient to RAS, resample, crop, normalize, resize or pad.

    ``settings`` are one split's ``DatasetSettings``. The label stays one channel of label
    values (resampled and resized by nearest neighbour); ``sampling`` makes the scheme's
    channels. Every step is a MONAI invertible transform, so predictions can be brought back
    to the input's grid with ``monai.transforms.Invertd``. Files are read as
    ``unet3d.data.formats.readers`` says: NIfTI with nibabel; NRRD, MetaImage and DICOM series with ITK.
    """
    keys = ["image", "label"] if with_label else ["image"]
    modes = ("bilinear", "nearest")[: len(keys)]
    steps = [
        LoadImaged(keys, reader=readers(), ensure_channel_first=True, image_only=True),
        EnsureTyped("image", dtype="float32", track_meta=True),
        Orientationd(keys, axcodes=ORIENTATION, labels=AXIS_LABELS),
    ]
    if settings.spacing is not None:
        steps.append(Spacingd(keys, pixdim=settings.spacing, mode=modes))
    if settings.crop_foreground:
        steps.append(CropForegroundd(keys, source_key="image", allow_smaller=True))
    steps.extend(normalizations(settings.normalization, settings.normalization_kwargs))
    if settings.patch_size is not None:
        # Volumes smaller than a patch are padded so every patch lies inside the volume.
        steps.append(SpatialPadd(keys, spatial_size=settings.patch_size))
    elif settings.resample:
        steps.append(Resized(keys, spatial_size=settings.desired_shape, mode=("trilinear", "nearest")[: len(keys)]))
    if settings.divisible_by is not None:
        steps.append(DivisiblePadd(keys, k=settings.divisible_by))
    return Compose(steps)


def sampling(settings, labels=None, patches=True):
    """The random part, run on each compact case every epoch: patches (with ``patches``) or the whole volume
    with the ``LabelScheme``'s target channels (with ``labels``), then augmentation.

    Patches are centred on foreground with probability ``foreground_oversampling`` (nnU-Net
    uses one third) and on background otherwise (see ``unet3d.data.patches``); spatial
    augmentation runs on the patch, as it did after MONAI's ``RandCropByPosNegLabeld``.
    Without ``labels`` (prediction) the items are preprocessed volumes and only augmentation runs.
    """
    spatial = augmentations(settings.spatial_augmentations, ["image", "label"])
    # Spatial augmentation that resamples labels by nearest neighbour moves one channel of label values, and
    # the targets are made after it: the same targets as moving every target channel, for less work.
    later = labels is not None and spatial and all(entry.keeps_label_values for entry in settings.spatial_augmentations)
    batched = labels is not None and settings.batch_augmentation is not None
    if batched and not later and spatial:
        raise UserError("config key 'dataset.spatial_augmentations' resamples the label with a mode other than "
                        "nearest; with 'dataset.batch_augmentation' the label must stay label values")
    steps = []
    if labels is not None and patches and settings.patch_size is not None:
        read_size = larger_patch(settings.patch_size, settings.batch_augmentation) if batched else None
        steps.append(RandForegroundPatchd(None if later or batched else labels, settings.patch_size,
                                          settings.foreground_oversampling, settings.patches_per_case, read_size,
                                          by_class=settings.foreground_sampling == "classes"))
    elif labels is not None:
        steps.append(ExpandCased(None if later or batched else labels))
    steps.extend(spatial)
    if later and not batched:  # else the training loop makes the targets after the batched augmentation
        steps.append(LabelTargetsd(labels))
    steps.extend(augmentations(settings.intensity_augmentations, "image"))
    return Compose(steps)


def augmentations(entries, keys):
    """MONAI dictionary transforms from the ``Augmentation`` entries of a dataset setting.

    unet3d fills in ``keys``; a spatial transform with a ``mode`` parameter gets the
    transform's own default for the image and ``nearest`` for the label, so labels stay binary.
    """
    result = []
    for entry in entries or ():
        fixed = {"keys": keys}
        mode = inspect.signature(entry.lookup()).parameters.get("mode")
        if isinstance(keys, list) and mode is not None and not entry.sets_mode:
            fixed["mode"] = (getattr(mode.default, "value", mode.default), "nearest")
        result.append(entry.build(**fixed))
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


def seed_transforms(compose, seed):
    """Seed ``compose`` and every random transform inside it from ``seed``, each nested one with a seed of its own.

    MONAI's dictionary transforms hand their seed unchanged to the array transforms they wrap (``RandAffined`` to
    ``RandAffine`` and on to ``RandAffineGrid``, ``RandScaleIntensityd`` to ``RandScaleIntensity``), so the draw
    that decides whether a transform fires is also its first parameter's: with ``prob`` 0.2, the first rotation
    angle always lay in the lowest fifth of its range, and with 0.5 intensity factors and offsets were never
    positive. Here each wrapped transform gets a seed derived from ``seed`` and its place.
    """
    compose.set_random_state(seed)
    for index, step in enumerate(compose.transforms):
        for depth, inner in enumerate(nested_randomizables(step), start=1):
            state = np.random.SeedSequence([seed, index, depth]).generate_state(1)[0]  # uint32
            inner.set_random_state(seed=int(state))


def nested_randomizables(transform):
    """The random transforms held (at any depth) by ``transform``'s attributes, in a fixed order."""
    found, todo = [], [transform]
    while todo:
        current = todo.pop(0)
        for value in vars(current).values():
            if isinstance(value, Randomizable) and value is not transform and all(value is not f for f in found):
                found.append(value)
                todo.append(value)
    return found
