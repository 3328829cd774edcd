"""The loss of networks that return several outputs (deep supervision), as nnU-Net weighs them."""

import torch
from monai.losses import DeepSupervisionLoss


class DeepSupervisedLoss(torch.nn.Module):
    """``loss`` of each output, weights halving per level and summing to one; a single output passes through.

    A network may return a list of outputs, finest first, or stack them on dim 1 as MONAI's
    DynUNet does in training mode. MONAI's ``DeepSupervisionLoss`` resizes the labels to
    each output.
    """

    def __init__(self, loss):
        super().__init__()
        self.loss = loss

    def forward(self, output, label):
        """The (weighted) loss of ``output`` against ``label``."""
        if isinstance(output, torch.Tensor) and output.dim() == label.dim() + 1:
            output = list(torch.unbind(output, dim=1))
        if not isinstance(output, (list, tuple)):
            return self.loss(output.float(), label)
        weights = [0.5**level for level in range(len(output))]
        weights = [weight / sum(weights) for weight in weights]
        return DeepSupervisionLoss(self.loss, weights=weights)(list(output), label)
