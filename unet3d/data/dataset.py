"""Datasets a config names in its ``dataset`` section."""

import monai.data

from unet3d.data.transforms import preprocessing


class SegmentationDataset(monai.data.Dataset):
    """Cases -> preprocessed ``{"id", "image", "label"}`` items (whole volumes).

    Args:
        data: case dicts with ``id``, ``image`` (list of modality paths) and ``label``.
        with_label: load and transform labels (training, validation); off for prediction.
        labels, setup_label_hierarchy, normalization, normalization_kwargs,
        crop_foreground, resample, desired_shape: see ``unet3d.data.transforms.preprocessing``.
    """

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
        with_label=True,
    ):
        transform = preprocessing(
            labels=labels,
            setup_label_hierarchy=setup_label_hierarchy,
            normalization=normalization,
            normalization_kwargs=normalization_kwargs,
            crop_foreground=crop_foreground,
            resample=resample,
            desired_shape=desired_shape,
            with_label=with_label,
        )
        super().__init__(data, transform=transform)
