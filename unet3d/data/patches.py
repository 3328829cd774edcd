"""Random patches cut from compact cases (``unet3d.data.stored``), reading only the patch.

``RandForegroundPatchd`` draws what MONAI's ``RandCropByPosNegLabeld`` draws: with
probability ``foreground_oversampling`` a centre uniform over the foreground voxels (any
label value of the scheme), otherwise one uniform over the background voxels; centres are
moved inwards so the patch lies inside the volume (MONAI's ``correct_crop_centers``). The
foreground centre comes from the case's stored locations (a value chosen in proportion to
its voxel count, or with ``dataset.foreground_sampling: "classes"`` uniformly among the
values in the case as nnU-Net chooses, then one of its sampled voxels); a background centre is a uniform voxel,
drawn again while it lands on foreground. Neither scans the label, and only the patch's
chunks are decompressed from the cache's Blosc2 arrays.

Given no label scheme, both keep the label as one channel of label values, so that spatial
augmentation moves one small channel instead of every target channel; ``LabelTargetsd``
then makes the targets (what nearest-neighbour resampling gives either way).
"""

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Randomizable, Transform
from monai.transforms.utils import correct_crop_centers

from unet3d.data.stored import expand, targets

BACKGROUND_TRIES = 1000  # a case that is nearly all foreground falls back to any voxel after this many


class RandForegroundPatchd(Randomizable, Transform):
    """Compact case -> a list of ``num_samples`` patch items ``{"id", "image", "label"}`` (float32 image, target
    channels or label values).

    Args:
        labels: the ``LabelScheme`` that builds the target channels; None keeps the label values.
        patch_size: the patch's spatial size.
        foreground_share: probability that a patch is centred on foreground.
        num_samples: patches per case.
        read_size: read this larger box around each patch (zeros where it leaves the volume), for
            ``dataset.batch_augmentation``'s rotation and scaling to sample from; default: the patch alone.
        by_class: choose the foreground label value uniformly among those in the case (nnU-Net's sampling), not in
            proportion to its voxel count (``dataset.foreground_sampling``).
    """

    def __init__(self, labels, patch_size, foreground_share, num_samples=1, read_size=None, by_class=False):
        self.labels = labels
        self.patch_size = tuple(int(n) for n in patch_size)
        self.read_size = tuple(int(n) for n in read_size) if read_size else self.patch_size
        self.foreground_share = foreground_share
        self.num_samples = num_samples
        self.by_class = by_class

    def randomize(self, data=None):
        """Not used: the centres depend on the case and are drawn in ``__call__``."""

    def centre(self, stored):
        """One patch centre (before correction) drawn as ``RandCropByPosNegLabeld`` would (``by_class``: as
        ``RandCropByLabelClassesd`` would, with equal ratios for the label values in the case)."""
        locations = stored["locations"]
        values = [value for value, (_, count) in locations.items() if count > 0]
        counts = np.array([locations[value][1] for value in values], dtype=np.float64)
        shape = stored["label"].shape
        background_possible = counts.sum() < np.prod(shape)
        share = self.foreground_share if values and background_possible else float(bool(values))
        if self.R.rand() < share:
            weights = np.ones(len(values)) / len(values) if self.by_class else counts / counts.sum()
            value = values[self.R.choice(len(values), p=weights)] if len(values) > 1 else values[0]
            coordinates = locations[value][0]
            return tuple(int(c) for c in coordinates[self.R.randint(len(coordinates))])
        foreground = np.array(values, dtype=stored["label"].dtype)
        for _ in range(BACKGROUND_TRIES):
            voxel = tuple(int(self.R.randint(n)) for n in shape)
            if not np.isin(stored["label"][voxel], foreground):
                return voxel
        return voxel

    def __call__(self, stored):
        shape = stored["label"].shape
        size = tuple(min(p, n) for p, n in zip(self.patch_size, shape))
        patches = []
        for _ in range(self.num_samples):
            centre = correct_crop_centers(list(self.centre(stored)), size, shape, allow_smaller=True)
            start = [int(c) - n // 2 for c, n in zip(centre, size)]
            if self.read_size == self.patch_size:
                patches.append(expand(stored, self.labels, start, size))
            else:
                patches.append(with_margin(stored, self.labels, start, size, self.read_size))
        return patches


def with_margin(stored, labels, start, size, read_size):
    """The patch of ``size`` at ``start`` in the middle of a box of ``read_size`` (``dataset.batch_augmentation``'s
    larger patch): read where the box lies in the volume, zeros where it leaves it, so that the middle of the
    item is the patch the sampling chose."""
    box_start = [s - (r - n) // 2 for s, n, r in zip(start, size, read_size)]
    inside = [max(b, 0) for b in box_start]
    ends = [min(b + r, n) for b, r, n in zip(box_start, read_size, stored["label"].shape)]
    item = expand(stored, labels, inside, [e - i for e, i in zip(ends, inside)])
    if list(item["image"].shape[1:]) == list(read_size):
        return item
    # Zeros and a copy: a tenth of the time of MONAI's padding of MetaTensors.
    place = (slice(None), *(slice(i - b, e - b) for b, i, e in zip(box_start, inside, ends)))
    affine = item["image"].affine.clone()
    affine[:3, 3] -= affine[:3, :3] @ torch.as_tensor([i - b for b, i in zip(box_start, inside)], dtype=affine.dtype)
    for key in ("image", "label"):
        padded = torch.zeros((item[key].shape[0], *read_size), dtype=item[key].dtype)
        padded[place] = item[key].as_tensor()
        meta = {name: value for name, value in item[key].meta.items() if name != "affine"}
        item[key] = MetaTensor(padded, affine=affine.clone(), meta=meta)
    return item


class ExpandCased(Transform):
    """Compact case -> the whole volume as ``{"id", "image", "label"}`` (float32 image, target channels, or label
    values without ``labels``)."""

    def __init__(self, labels=None):
        self.labels = labels

    def __call__(self, stored):
        return expand(stored, self.labels)


class LabelTargetsd(Transform):
    """An item's ``label`` of label values (1, X, Y, Z) -> the ``LabelScheme``'s target channels (uint8)."""

    def __init__(self, labels):
        self.labels = labels

    def __call__(self, item):
        label = item["label"]
        made = targets(label, self.labels)
        if isinstance(label, MetaTensor):  # its meta holds the affine
            made = MetaTensor(made, meta=dict(label.meta), applied_operations=list(label.applied_operations))
        return {**item, "label": made}
