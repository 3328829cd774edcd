"""The deterministic preprocessing chain built from a config's ``dataset`` section."""

from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureTyped,
    LoadImaged,
    Resized,
)

from unet3d.config.resolve import resolve
from unet3d.data.labels import LabelsToRegionsd
from unet3d.errors import UserError


def preprocessing(
    labels=None,
    setup_label_hierarchy=False,
    normalization=None,
    normalization_kwargs=None,
    crop_foreground=False,
    resample=False,
    desired_shape=None,
    with_label=True,
):
    """Load, stack modalities as channels, split labels into channels, crop, normalize, resize.

    Every step is a MONAI invertible transform (or label-only), so predictions can be
    brought back to the input's grid with ``monai.transforms.Invertd``.
    """
    keys = ["image", "label"] if with_label else ["image"]
    steps = [
        LoadImaged(keys, ensure_channel_first=True, image_only=True),
        EnsureTyped("image", dtype="float32", track_meta=True),
    ]
    if with_label:
        if not labels:
            raise UserError("config key 'dataset.labels' is missing (expected the label values, e.g. [2, 1, 4])")
        steps.append(LabelsToRegionsd("label", labels, setup_label_hierarchy))
    if crop_foreground:
        steps.append(CropForegroundd(keys, source_key="image", allow_smaller=True))
    steps.extend(normalizations(normalization, normalization_kwargs))
    if resample:
        if not desired_shape or len(desired_shape) != 3 or not all(isinstance(s, int) and s > 0 for s in desired_shape):
            raise UserError("config key 'dataset.desired_shape' must be three positive integers when 'resample' is true")
        modes = ("trilinear", "nearest")[: len(keys)]
        steps.append(Resized(keys, spatial_size=desired_shape, mode=modes))
    return Compose(steps)


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
