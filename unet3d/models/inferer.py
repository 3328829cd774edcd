"""How a trained model is applied to a volume, for validation and prediction alike.

Validation Dice is computed from the label maps this inferer decodes, so it is the Dice
of what ``model_best.pth`` writes (in the preprocessed space): same window, overlap,
Gaussian blending, activation, threshold and decoding.
"""

import itertools
import math
from contextlib import nullcontext

import torch
from monai.inferers import SlidingWindowInferer

ACTIVATIONS = {
    "sigmoid": torch.sigmoid,
    "softmax": lambda logits: torch.softmax(logits, dim=1),
    "none": lambda logits: logits,
}
SPATIAL_AXES = (2, 3, 4)  # of a (batch, channel, x, y, z) tensor


def model_divisor(model, window):
    """What each window axis must be a multiple of for ``model`` (a ``Component``): the product of its
    ``strides`` (DynUNet's per axis, UNet's one per level), else the largest power of two dividing each axis
    of ``window`` (a window the network takes is a multiple of what its halvings need); None without a window."""
    strides = model.options.get("strides") if model is not None else None
    if strides and all(isinstance(level, (int, list, tuple)) for level in strides):
        levels = [[level] * 3 if isinstance(level, int) else list(level) for level in strides]
        if all(len(level) == 3 for level in levels):
            return tuple(math.prod(level[axis] for level in levels) for axis in range(3))
    if window is None:
        return None
    return tuple(size & -size for size in window)


def capped_window(window, shape, divisor=None):
    """``window`` no larger than it needs to be for a volume of ``shape``: an axis longer than the volume becomes
    the smallest multiple of ``divisor`` (1 if None) that covers it, so the volume is one window along that axis,
    padded with zeros by fewer voxels than ``divisor``.

    A window far over the volume's edge is mostly padding, and a network with instance normalisation then
    normalises over it: a window of 112³ over an 80³ brain lost most of its Dice. The largest multiple that fits
    instead would need two overlapping windows along the axis, up to four times the voxels for one volume.
    """
    divisor = divisor or (1,) * len(window)
    return tuple(size if size <= length else min(size, max(step, -(-length // step) * step))
                 for size, length, step in zip(window, shape, divisor))


def mirrorings(tta):
    """Spatial axes to flip: none, or with ``tta`` all 8 combinations of the three axes."""
    if not tta:
        return [()]
    return [axes for count in range(4) for axes in itertools.combinations(SPATIAL_AXES, count)]


class Inferer:
    """Sliding-window logits, probabilities (averaged over models and mirrorings) and label maps.

    Args:
        labels: the ``LabelScheme`` that decodes probabilities into label values.
        window: the window size (None: the whole volume in one window), capped at each volume's shape
            (``capped_window``).
        divisor: what each window axis must be a multiple of for the network (``model_divisor``).
        overlap, sw_batch_size: of the sliding windows, blended with Gaussian weights.
        activation: "sigmoid", "softmax" or "none" (None: the label scheme's).
        threshold: the probability a voxel needs to be labelled.
        tta: also average over the 8 mirrorings of the spatial axes.
        mask_to_nonzero: no foreground where every input channel is 0 (outside a skull-stripped brain).
        autocast: a callable giving the context forward passes run in (mixed precision).
    """

    def __init__(self, labels, window=None, overlap=0.5, sw_batch_size=4, activation=None, threshold=0.5, tta=False,
                 mask_to_nonzero=False, autocast=nullcontext, divisor=None):
        self.labels = labels
        self.window, self.overlap, self.sw_batch_size, self.divisor = window, overlap, sw_batch_size, divisor
        self.activation = activation or labels.activation
        self.threshold, self.tta, self.mask_to_nonzero, self.autocast = threshold, tta, mask_to_nonzero, autocast

    @classmethod
    def from_experiment(cls, experiment, prediction=None, **options):
        """The inferer of an ``Experiment``'s prediction settings (or ``prediction``, the command line's copy)."""
        prediction = prediction or experiment.prediction
        window = prediction.window or experiment.window
        return cls(experiment.labels, window, prediction.overlap, prediction.sw_batch_size, prediction.activation,
                   prediction.threshold, mask_to_nonzero=prediction.mask_to_nonzero,
                   divisor=model_divisor(experiment.model, window), **options)

    def logits(self, model, image):
        """Blended float32 logits (B, C, ...) of one model for ``image`` (B, channels, ...)."""
        shape = tuple(image.shape[2:])
        window = capped_window(self.window, shape, self.divisor) if self.window else shape
        inferer = SlidingWindowInferer(window, self.sw_batch_size, self.overlap, mode="gaussian")
        with self.autocast():
            return inferer(image, model).float()

    def to_probabilities(self, logits, image):
        """Logits (B, C, ...) of ``image`` -> probabilities, by the activation and, with ``mask_to_nonzero``,
        without foreground where the image is 0 in every channel."""
        probabilities = ACTIVATIONS[self.activation](logits)
        if not self.mask_to_nonzero:
            return probabilities
        signal = (image != 0).any(dim=1, keepdim=True)
        if self.activation == "softmax":  # the background channel takes what the others lose
            return torch.cat([torch.where(signal, probabilities[:, :1], 1.0), probabilities[:, 1:] * signal], dim=1)
        return probabilities * signal

    def probabilities(self, models, image):
        """Probabilities (B, C, ...) for ``image``, averaged over ``models`` and, with ``tta``, over mirrorings.

        Runs under ``torch.no_grad`` and adds out of place: tensors made in inference
        mode cannot be updated in place outside it, which broke fold ensembles elsewhere.
        """
        flips = mirrorings(self.tta)
        total = None
        with torch.no_grad():
            for model, axes in itertools.product(models, flips):
                flipped = image.flip(axes) if axes else image
                probabilities = self.to_probabilities(self.logits(model, flipped), flipped)
                probabilities = probabilities.flip(axes) if axes else probabilities
                total = probabilities if total is None else total + probabilities
        return total / (len(models) * len(flips))

    def decode(self, probabilities):
        """Probabilities (C, ...) of one case -> its integer label map (...)."""
        return self.labels.decode(probabilities, self.threshold)
