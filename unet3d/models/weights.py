"""Weight files: saving and loading state dicts, and building a config's model with trained weights.

Training (``model.pth``, ``model_best.pth``, the checkpoint) and prediction both use these,
so a file one writes is a file the other reads.
"""

import torch

from unet3d.atomic import atomic_path
from unet3d.errors import UserError


def save(obj, path):
    """``torch.save`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load(path, map_location="cpu"):
    """``torch.load`` with ``weights_only=True``; an unreadable file is a UserError naming it."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: model file not found") from None
    except Exception as error:  # torch raises several types for truncated or foreign files
        reason = (str(error).strip().splitlines() or [""])[0]
        raise UserError(f"{path}: cannot read as a unet3d checkpoint ({error.__class__.__name__}: {reason})") from None


def model_weights(model):
    """The model's state dict, without the wrappers' prefixes (DDP/DataParallel ``module.``, torch.compile)."""
    model = getattr(model, "module", model)
    model = getattr(model, "_orig_mod", model)
    return model.state_dict()


def load_weights(model, state, path):
    """Load the state dict ``state`` (read from ``path``) into ``model`` strictly, wrappers' prefixes stripped."""
    state = {key.removeprefix("module.").removeprefix("_orig_mod."): value for key, value in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise UserError(f"{path}: weights do not fit the config's model ({first})") from None
    return model


def load_model_weights(model, path):
    """Load plain weights (or a training checkpoint's ``model`` entry) from ``path`` into ``model``, strictly."""
    state = load(path)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    return load_weights(model, state, path)


def trained_model(component, path, device):
    """The model ``component`` (the config's ``model``) with the weights of ``path``, in eval mode on ``device``."""
    model = component.build()
    load_model_weights(model, path)
    return model.to(device).eval()
