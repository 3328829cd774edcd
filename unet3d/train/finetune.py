"""Fine-tuning: starting from pretrained weights, and keeping some parameters frozen."""

import logging

from unet3d.errors import UserError
from unet3d.models.weights import load_matching_weights

log = logging.getLogger("unet3d")


def load_pretrained(model, path):
    """Load what fits of the weights at ``path`` into ``model`` and say in one line what was loaded."""
    loaded, absent, differing = load_matching_weights(model, path)
    log.info("pretrained weights %s: %d tensors loaded, %d skipped (not in the file), %d skipped (shape differs)",
             path, loaded, absent, differing)


def freeze(model, prefixes):
    """Stop training every parameter whose name starts with one of ``prefixes``; returns the trainable ones.

    A prefix that names no parameter is a UserError listing the model's top-level names.
    """
    prefixes = list(prefixes or ())
    names = [name for name, _ in model.named_parameters()]
    for prefix in prefixes:
        if not any(name.startswith(prefix) for name in names):
            tops = sorted({name.split(".")[0] for name in names})
            raise UserError(f"config key 'training.freeze': {prefix!r} starts no parameter name of the model; "
                            f"its parameters start with {', '.join(tops)}")
    for name, parameter in model.named_parameters():
        if any(name.startswith(prefix) for prefix in prefixes):
            parameter.requires_grad_(False)
    return [parameter for parameter in model.parameters() if parameter.requires_grad]
