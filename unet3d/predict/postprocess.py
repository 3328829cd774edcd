"""Connected-component clean-up of label maps, one region (or label) at a time."""

import warnings

import torch
from monai.transforms import KeepLargestConnectedComponent, RemoveSmallObjects



def clean_label_map(label_map, scheme, min_component_size=0, keep_largest=False):
    """Drop components under ``min_component_size`` voxels and, with ``keep_largest``, all but the largest.

    ``label_map`` is a torch tensor of label values; ``scheme`` the ``LabelScheme`` that
    splits it into regions and paints them back.

    Each region (BraTS: WT, TC, ET) or label is cleaned on its own. In nested regions an
    inner region is then cut to what is left of the outer one, so a tumour removed from
    the whole tumour takes its core with it; general regions are painted back in order.
    """
    if not min_component_size and not keep_largest:
        return label_map
    masks = scheme.masks(torch.as_tensor(label_map))
    if min_component_size:
        with warnings.catch_warnings():
            # MONAI passes scikit-image's older min_size argument, which newer versions deprecate.
            warnings.simplefilter("ignore", FutureWarning)
            # One region at a time: given all channels at once, scikit-image would join a component
            # to the same voxels of the neighbouring channels and count their sizes together.
            remove = RemoveSmallObjects(min_size=min_component_size)
            masks = torch.stack([torch.as_tensor(remove(mask[None]))[0] for mask in masks])
    if keep_largest:
        channels = list(range(scheme.n_channels))
        masks = KeepLargestConnectedComponent(applied_labels=channels, is_onehot=True, independent=True)(masks)
    return scheme.paint(masks)
