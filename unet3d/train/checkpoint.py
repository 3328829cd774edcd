"""Checkpoints: the resumable training state and the plain model weights."""

from pathlib import Path

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
    """The model's state dict, without the ``module.`` prefix that DDP/DataParallel add."""
    model = getattr(model, "module", model)
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    return model.state_dict()


def load_model_weights(model, path):
    """Load plain weights (or a training checkpoint's ``model`` entry) into ``model``, strictly."""
    state = load(path)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    state = {key.removeprefix("module."): value for key, value in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise UserError(f"{path}: weights do not fit the config's model ({first})") from None
    return model


def latest_exists(work_dir):
    """Whether ``work_dir`` holds a resumable training checkpoint."""
    return (Path(work_dir) / "checkpoint.pth").is_file()
