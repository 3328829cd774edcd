"""Datasets a config names in its ``dataset`` section, and building the one it names."""

import dataclasses

import monai.data
from monai.transforms import Compose, apply_transform

from unet3d.config.labels import LabelScheme
from unet3d.config.settings import DatasetSettings
from unet3d.data.cache import PreprocessingCache
from unet3d.data.transforms import preprocessing, sampling


class SegmentationDataset(monai.data.Dataset):
    """Cases -> preprocessed ``{"id", "image", "label"}`` items: whole volumes or random patches.

    Indices may be ``(index, seed)`` pairs (see ``unet3d.data.loaders.make_loader``): the
    seed then fixes the item's patches and augmentation, whichever worker loads it.

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
        self.preprocess = preprocessing(settings, labels, with_label)
        self.random = sampling(settings, patches=split == "training")
        self.cache = None
        if cache_dir is not None:
            key = {**settings.deterministic(), "label_scheme": dataclasses.asdict(labels), "with_label": with_label}
            self.cache = PreprocessingCache(cache_dir, self.preprocess, key)
        items = [case.as_dict() for case in self.cases]
        super().__init__(items, transform=Compose(self.preprocess.transforms + self.random.transforms))

    def __getitem__(self, index):
        if isinstance(index, tuple):
            index, seed = index
            self.random.set_random_state(seed)
        return super().__getitem__(index)

    def _transform(self, index):
        if self.cache is None:
            return super()._transform(index)
        item = self.cache.load(self.cases[index])
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
