"""Data: pre-flight checks, preprocessing, datasets and loaders.

Names defined here are what a config's ``dataset.name`` and transform names can refer to
(besides MONAI's transforms).
"""

from unet3d.data.dataset import SegmentationDataset

__all__ = ["SegmentationDataset"]
