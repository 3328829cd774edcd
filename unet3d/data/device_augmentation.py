"""Augmentation on the training device (``dataset.augment_on_device``).

A GPU step on a 128³ patch takes tens of milliseconds; the recipe's augmentations of that
patch (an affine resampling, Gaussian smoothing and noise, contrast) take several hundred on
one CPU core, so the loader workers a machine has cannot keep the GPU busy. With
``augment_on_device`` the workers only cut the patch, and the rest of the random chain runs
here, on each item of the batch once it is on the training device.

Every training item carries the seed its ``(index, seed)`` pair gave it
(``unet3d.data.loaders.SeededSampler``). Seeding the whole chain with it, as the worker
does, gives each transform the random state it has in the worker, so an item is augmented
with the same draws on either side: only floating-point rounding differs. (With
``patches_per_case`` above 1, patch ``j`` of a case is seeded with ``seed + j``.)
"""

import torch
from monai.data import get_track_meta, set_track_meta
from monai.transforms import Compose


class DeviceAugmentation:
    """The steps of a ``sampling`` chain after its first (the patch or the whole volume), run per item.

    Args:
        chain: the whole random ``Compose`` (``unet3d.data.transforms.sampling``); its first
            step stays in the loader workers.
    """

    def __init__(self, chain):
        self.chain = chain
        self.steps = Compose(chain.transforms[1:])

    def __call__(self, image, label, seeds):
        """Augment a batch on its device: ``image`` (B, C, ...) float, ``label`` (B, 1 or channels, ...), ``seeds`` (B,).

        Returns the augmented image and the label's target channels (uint8, or what the chain makes).
        """
        tracking = get_track_meta()
        set_track_meta(False)  # plain tensors: no metadata to carry or to strip again
        try:
            items = []
            for index in range(len(image)):
                self.chain.set_random_state(int(seeds[index]))
                items.append(self.steps({"image": image[index], "label": label[index]}))
        finally:
            set_track_meta(tracking)
        return torch.stack([item["image"] for item in items]), torch.stack([item["label"] for item in items])
