"""The label scheme: what the label values are, what the output channels mean, and the way between them.

With ``setup_label_hierarchy`` (BraTS: ``labels = [2, 1, 4]``) channel ``i`` is the union
of ``labels[i:]``: whole tumour {1, 2, 4}, tumour core {1, 4}, enhancing tumour {4}.
Without it, channel ``i`` is ``label == labels[i]``. Training targets, validation Dice,
prediction decoding, evaluation and summaries all ask this one object.
"""

import dataclasses

import numpy as np
import torch

from unet3d.errors import UserError

BRATS_LABELS = (2, 1, 4)
BRATS_REGIONS = ("WT", "TC", "ET")


@dataclasses.dataclass(frozen=True)
class LabelScheme:
    """Label values and how they map to output channels and back.

    Args:
        values: the label values, outermost first for a hierarchy (empty: none configured).
        hierarchy: nested regions (BraTS) instead of one channel per label.
    """

    values: tuple = ()
    hierarchy: bool = False

    @classmethod
    def brats(cls):
        """The BraTS 2020 regions: WT {1, 2, 4}, TC {1, 4}, ET {4}."""
        return cls(BRATS_LABELS, True)

    @property
    def names(self):
        """Names of the output channels: WT/TC/ET for the BraTS hierarchy, else ``label<value>``/``region<value>``."""
        if self.hierarchy and self.values == BRATS_LABELS:
            return list(BRATS_REGIONS)
        prefix = "region" if self.hierarchy else "label"
        return [f"{prefix}{value}" for value in self.values]

    @property
    def n_channels(self):
        """Output channels of a network trained on this scheme."""
        return len(self.values)

    @property
    def activation(self):
        """How logits become probabilities: each channel is a sigmoid of its own."""
        return "sigmoid"

    def require(self, why):
        """Raise a UserError when no labels are configured; ``why`` says what needs them."""
        if not self.values:
            raise UserError(f"config key 'dataset.labels' is missing (expected the label values, e.g. [2, 1, 4]); {why}")
        return self

    def masks(self, label):
        """One boolean mask per channel, stacked first, from an integer ``label`` array (NumPy or torch)."""
        module = torch if isinstance(label, torch.Tensor) else np
        masks = []
        for index in range(len(self.values)):
            members = self.values[index:] if self.hierarchy else self.values[index: index + 1]
            mask = module.zeros_like(label, dtype=module.bool)
            for value in members:
                mask = mask | (label == value)
            masks.append(mask)
        return module.stack(masks)

    def decode(self, probabilities, threshold=0.5):
        """Per-channel probabilities (C, ...) -> integer label map (...), on the tensor's device.

        Hierarchical channels are painted outer to inner, each only inside the ones before
        it (BraTS: edema 2 in the whole tumour, core 1 inside it, enhancing 4 inside the
        core): regions are nested by definition, so an inner channel firing outside its
        outer one is dropped rather than allowed to spill a label over the scan. Plain
        channels take the most probable label where it passes ``threshold``.
        """
        probabilities = torch.as_tensor(probabilities)
        dtype = torch.uint8 if max(self.values) < 256 else torch.int32
        label_map = torch.zeros(probabilities.shape[1:], dtype=dtype, device=probabilities.device)
        if self.hierarchy:
            inside = torch.ones(label_map.shape, dtype=torch.bool, device=probabilities.device)
            for index, value in enumerate(self.values):
                inside &= probabilities[index] > threshold
                label_map[inside] = value
            return label_map
        best, index = probabilities.max(dim=0)
        values = torch.as_tensor(self.values, dtype=dtype, device=probabilities.device)
        confident = best > threshold
        label_map[confident] = values[index[confident]]
        return label_map


def label_scheme(settings):
    """The scheme of a config's ``dataset`` label keys (``LabelSettings``)."""
    return LabelScheme(tuple(settings.labels or ()), settings.setup_label_hierarchy)
