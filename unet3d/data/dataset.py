"""Datasets a config names in its ``dataset`` section, and building the one it names."""

import dataclasses

import monai.data
from monai.transforms import apply_transform

from unet3d.config.labels import LabelScheme
from unet3d.config.settings import DatasetSettings
from unet3d.data.cache import PreprocessingCache
from unet3d.data.stored import compact, expand
from unet3d.data.transforms import preprocessing, sampling, seed_transforms


class SegmentationDataset(monai.data.Dataset):
    """Cases -> preprocessed ``{"id", "image", "label"}`` items: whole volumes or random patches.

    Indices may be ``(index, seed)`` pairs (see ``unet3d.data.loaders.make_loader``): the
    seed then fixes the item's patches and augmentation, whichever worker loads it.

    Labelled cases pass through their compact form (``unet3d.data.stored``: float16 image,
    one channel of label values, foreground locations) whether or not ``cache_dir`` keeps it
    on disk, so a case gives the same tensors from the cache as without it. ``transform``
    is the preprocessing alone, what ``monai.transforms.Invertd`` undoes for prediction.

    Args:
        data: the cases (``unet3d.config.Case``).
        settings: the config's ``DatasetSettings``; this split's are taken from them.
        labels: the ``LabelScheme`` that makes the label channels.
        split: ``"training"`` (patches and augmentation), ``"validation"`` or None (prediction).
        cache_dir: keep the deterministic part's output here (see ``unet3d.data.cache``).
        with_label: load and transform labels (training, validation); off for prediction.
    """

    accepts_seeds = True

    def __init__(self, data, settings=None, labels=None, split=None, cache_dir=None, with_label=True):
        settings = (settings or DatasetSettings()).for_split(split)
        labels = labels or LabelScheme()
        self.cases = [case if with_label else dataclasses.replace(case, label=None) for case in data]
        self.labels = labels.require("they are needed to train") if with_label else None
        self.preprocess = preprocessing(settings, with_label)
        self.random = sampling(settings, self.labels, patches=split == "training")
        self.cache = None
        if cache_dir is not None:
            key = {**settings.preprocessing_settings(), "label_scheme": labels.cache_key(), "with_label": with_label}
            self.cache = PreprocessingCache(cache_dir, self.compact_case, key)
        super().__init__([case.as_dict() for case in self.cases], transform=self.preprocess)

    def compact_case(self, item):
        """A case item, preprocessed, in its compact form."""
        return compact(self.preprocess(item), self.labels.values if self.labels else ())

    def __getitem__(self, index):
        if isinstance(index, tuple):
            index, seed = index
            seed_transforms(self.random, seed)
        return super().__getitem__(index)

    def _transform(self, index):
        if self.cache is not None:
            item = self.cache.load(self.cases[index])
        elif self.labels is not None:
            item = self.compact_case(self.data[index])
        else:
            item = apply_transform(self.preprocess, self.data[index])
        if self.labels is None and self.cache is not None:
            item = expand(item)
        return apply_transform(self.random, item) if self.random.transforms else item


def build_dataset(spec, labels, cases, split=None, cache_dir=None, with_label=True):
    """The dataset the config's ``dataset`` section (a ``DatasetSpec``) names, over ``cases``.

    ``SegmentationDataset`` gets the typed settings; another class (a plug-in's) gets the
    section's keyword arguments and ``data`` as a list of ``{"id", "image", "label"}`` dicts.
    """
    if spec.settings is not None:
        return SegmentationDataset(cases, spec.settings, labels, split, cache_dir, with_label)
    fixed = {"data": [case.as_dict() for case in cases]}
    for name, value, default in (("split", split, None), ("cache_dir", cache_dir, None), ("with_label", with_label, True)):
        if value != default:
            fixed[name] = value
    return spec.component.build(**fixed)
