"""The transform that turns a label map into the output channels of a label scheme."""

import torch
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type

from unet3d.config.labels import LabelScheme


class LabelsToRegionsd(MapTransform):
    """Replace an integer label map (1, ...) by the training targets of a label scheme: one float channel per
    label or region, or for mutually exclusive classes one channel of class indices.

    Args:
        keys: keys of the label maps.
        labels: label values, outermost first for regions.
        hierarchy: nested regions (BraTS) instead of one channel per label (3DUnetCNN's spelling).
        mode: "regions", "labels" or "classes" (see ``unet3d.config.labels``); overrides ``hierarchy``.
    """

    def __init__(self, keys, labels, hierarchy=False, mode=None, allow_missing_keys=False):
        super().__init__(keys, allow_missing_keys)
        self.scheme = LabelScheme(tuple(labels), mode or ("regions" if hierarchy else "labels"))

    def __call__(self, data):
        data = dict(data)
        for key in self.key_iterator(data):
            label = data[key]
            masks = self.scheme.targets(torch.as_tensor(label[0]))
            # convert_to_dst_type keeps a MetaTensor's affine and applied operations.
            data[key] = convert_to_dst_type(masks, dst=label, dtype=torch.float32)[0]
        return data
