"""The loss of networks that return several outputs (deep supervision), as nnU-Net weighs them."""

import torch
from monai.losses import DeepSupervisionLoss
from monai.networks.utils import one_hot


class DeepSupervisedLoss(torch.nn.Module):
    """``loss`` of each output, weights halving per level and summing to one; a single output passes through.

    A network may return a list of outputs, finest first, or stack them on dim 1 as MONAI's
    DynUNet does in training mode. MONAI's ``DeepSupervisionLoss`` resizes the labels to
    each output. With ``one_hot``, class-index labels (B, 1, ...) are expanded to that many
    one-hot channels first, for losses without ``to_onehot_y``.
    """

    def __init__(self, loss, one_hot=None):
        super().__init__()
        self.loss, self.one_hot = loss, one_hot

    def forward(self, output, label):
        """The (weighted) loss of ``output`` against ``label``."""
        if self.one_hot:
            label = one_hot(label.long(), self.one_hot, dim=1)
        if isinstance(output, torch.Tensor) and output.dim() == label.dim() + 1:
            output = list(torch.unbind(output, dim=1))
        if not isinstance(output, (list, tuple)):
            return self.loss(output.float(), label)
        weights = [0.5**level for level in range(len(output))]
        weights = [weight / sum(weights) for weight in weights]
        return DeepSupervisionLoss(self.loss, weights=weights)(list(output), label)
