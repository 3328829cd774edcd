"""Label maps <-> one binary channel per label or region.

With ``setup_label_hierarchy`` (BraTS: ``labels = [2, 1, 4]``) channel ``i`` is the union
of ``labels[i:]``: whole tumour {1, 2, 4}, tumour core {1, 4}, enhancing tumour {4}.
Without it, channel ``i`` is ``label == labels[i]``.
"""

import numpy as np
import torch
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type

BRATS_LABELS = (2, 1, 4)
BRATS_REGIONS = ("WT", "TC", "ET")


def region_masks(label, labels, hierarchy):
    """Stack one boolean mask per channel from an integer ``label`` array (any leading shape)."""
    module = torch if isinstance(label, torch.Tensor) else np
    masks = []
    for index in range(len(labels)):
        members = labels[index:] if hierarchy else labels[index : index + 1]
        mask = module.zeros_like(label, dtype=module.bool)
        for value in members:
            mask = mask | (label == value)
        masks.append(mask)
    return module.stack(masks)


def decode_regions(probabilities, labels, hierarchy, threshold=0.5):
    """Turn per-channel probabilities (C, ...) into an integer label map.

    Hierarchical channels are painted outer to inner, each only inside the ones before it
    (BraTS: edema 2 in the whole tumour, core 1 inside it, enhancing 4 inside the core):
    regions are nested by definition, so an inner channel firing outside its outer one is
    dropped rather than allowed to spill a label over the scan. Plain channels take the
    most probable label where it passes ``threshold``.
    """
    probabilities = np.asarray(probabilities)
    dtype = np.uint8 if max(labels) < 256 else np.int32
    label_map = np.zeros(probabilities.shape[1:], dtype=dtype)
    if hierarchy:
        inside = np.ones(label_map.shape, dtype=bool)
        for index, value in enumerate(labels):
            inside &= probabilities[index] > threshold
            label_map[inside] = value
        return label_map
    best = probabilities.argmax(axis=0)
    confident = probabilities.max(axis=0) > threshold
    label_map[confident] = np.asarray(labels, dtype=dtype)[best[confident]]
    return label_map


def region_names(labels, hierarchy):
    """Names of the output channels: WT/TC/ET for the BraTS hierarchy, else ``label<value>``."""
    if hierarchy and tuple(labels) == BRATS_LABELS:
        return list(BRATS_REGIONS)
    prefix = "region" if hierarchy else "label"
    return [f"{prefix}{value}" for value in labels]


class LabelsToRegionsd(MapTransform):
    """Replace an integer label map (1, ...) by one float channel per label or region.

    Args:
        keys: keys of the label maps.
        labels: label values, outermost first for a hierarchy.
        hierarchy: nested regions (BraTS) instead of one channel per label.
    """

    def __init__(self, keys, labels, hierarchy=False, allow_missing_keys=False):
        super().__init__(keys, allow_missing_keys)
        self.labels = list(labels)
        self.hierarchy = hierarchy

    def __call__(self, data):
        data = dict(data)
        for key in self.key_iterator(data):
            label = data[key]
            masks = region_masks(torch.as_tensor(label[0]), self.labels, self.hierarchy)
            # convert_to_dst_type keeps a MetaTensor's affine and applied operations.
            data[key] = convert_to_dst_type(masks, dst=label, dtype=torch.float32)[0]
        return data
