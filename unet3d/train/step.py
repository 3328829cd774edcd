"""The training step: one batch through the network, the loss, the backward pass and the optimizer."""

import torch
from monai.utils import convert_to_tensor


def train_step(parts, image, label):
    """One optimizer step of ``parts`` (``RunParts``) on a batch; returns the loss, a tensor.

    Forward and loss under the precision's autocast (the loss weighs deep-supervision
    outputs), backward with the precision's gradient scaling, gradient clipping, the
    optimizer's step, then the scheduler's where it steps per batch.
    """
    parts.optimizer.zero_grad(set_to_none=True)
    with parts.precision.autocast():
        loss = parts.loss_function(parts.network(image), label)
    scaler = parts.precision.scaler
    scaler.scale(loss).backward()
    if parts.clip_grad_norm:
        scaler.unscale_(parts.optimizer)
        torch.nn.utils.clip_grad_norm_(parts.model.parameters(), parts.clip_grad_norm)
    scaler.step(parts.optimizer)
    scaler.update()
    if parts.step_per_batch:
        parts.scheduler.step()
    return loss


def on_device(batch, device, label_values=False):
    """A loader batch's image and float targets on ``device``, without MONAI's metadata (which torch.compile cannot
    trace and every op pays for). With ``label_values`` (``dataset.batch_augmentation``, which makes the targets
    itself) the label keeps the loader's type: uint8 values cross to the device and back at a quarter of float32's
    bytes."""
    image = convert_to_tensor(batch["image"], device=device, track_meta=False)
    label = convert_to_tensor(batch["label"], device=device, track_meta=False)
    return image, label if label_values else label.float()
