"""Datasets a config names in its ``dataset`` section."""

import monai.data
from monai.transforms import Compose, apply_transform

from unet3d.data.cache import PreprocessingCache
from unet3d.data.transforms import preprocessing, sampling
from unet3d.errors import UserError

SPLITS = ("training", "validation")
RANDOM_SETTINGS = ("foreground_oversampling", "patches_per_case", "spatial_augmentations", "intensity_augmentations")


class SegmentationDataset(monai.data.Dataset):
    """Cases -> preprocessed ``{"id", "image", "label"}`` items: whole volumes or random patches.

    Indices may be ``(index, seed)`` pairs (see ``unet3d.data.loaders.make_loader``): the
    seed then fixes the item's patches and augmentation, whichever worker loads it.

    Args:
        data: case dicts with ``id``, ``image`` (list of modality paths) and ``label``.
        labels, setup_label_hierarchy, normalization, normalization_kwargs, crop_foreground,
        resample, desired_shape, spacing, patch_size, divisible_by: the deterministic
            preprocessing, see ``unet3d.data.transforms.preprocessing``.
        foreground_oversampling, patches_per_case, spatial_augmentations,
        intensity_augmentations: the random part, see ``unet3d.data.transforms.sampling``;
            patches and augmentation apply to the training split only.
        training, validation: settings that replace the ones above for that split.
        split: ``"training"``, ``"validation"`` or None (prediction: no random part).
        cache_dir: keep the deterministic part's output here (see ``unet3d.data.cache``).
        with_label: load and transform labels (training, validation); off for prediction.
    """

    accepts_seeds = True

    def __init__(
        self,
        data,
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
        foreground_oversampling=0.33,
        patches_per_case=1,
        spatial_augmentations=None,
        intensity_augmentations=None,
        training=None,
        validation=None,
        split=None,
        cache_dir=None,
        with_label=True,
    ):
        given = {
            "labels": labels, "setup_label_hierarchy": setup_label_hierarchy, "normalization": normalization,
            "normalization_kwargs": normalization_kwargs, "crop_foreground": crop_foreground, "resample": resample,
            "desired_shape": desired_shape, "spacing": spacing, "patch_size": patch_size,
            "divisible_by": divisible_by, "foreground_oversampling": foreground_oversampling,
            "patches_per_case": patches_per_case, "spatial_augmentations": spatial_augmentations,
            "intensity_augmentations": intensity_augmentations,
        }
        overrides = {"training": training, "validation": validation}
        settings = split_settings(given, split, overrides)
        deterministic = {k: v for k, v in settings.items() if k not in RANDOM_SETTINGS}
        self.preprocess = preprocessing(**deterministic, with_label=with_label)
        random = {k: settings[k] for k in RANDOM_SETTINGS}
        self.random = sampling(patch_size=settings["patch_size"] if split == "training" else None, **random)
        if split != "training":
            # Built for its errors only: a mistake in the training augmentation then surfaces
            # wherever the dataset is first built (the pre-training config check, prediction).
            training_settings = split_settings(given, "training", overrides)
            sampling(**{k: training_settings[k] for k in RANDOM_SETTINGS + ("patch_size",)})
        self.cache = None
        if cache_dir is not None:
            self.cache = PreprocessingCache(cache_dir, self.preprocess, {**deterministic, "with_label": with_label})
        super().__init__(data, transform=Compose(self.preprocess.transforms + self.random.transforms))

    def __getitem__(self, index):
        if isinstance(index, tuple):
            index, seed = index
            self.random.set_random_state(seed)
        return super().__getitem__(index)

    def _transform(self, index):
        if self.cache is None:
            return super()._transform(index)
        item = self.cache.load(self.data[index])
        return apply_transform(self.random, item) if self.random.transforms else item


def split_settings(settings, split, overrides):
    """``settings`` for one split: augmentation for training only, then ``dataset.<split>`` on top."""
    result = dict(settings)
    if split != "training":
        result.update(spatial_augmentations=None, intensity_augmentations=None)
    for name, override in overrides.items():
        if override is None:
            continue
        if not isinstance(override, dict):
            raise UserError(f"config key 'dataset.{name}' must be an object of dataset settings for the {name} split")
        unknown = sorted(set(override) - set(settings))
        if unknown:
            raise UserError(f"config key 'dataset.{name}': unknown setting '{unknown[0]}'; accepted: {', '.join(settings)}")
        if name == split:
            result.update(override)
    return result
