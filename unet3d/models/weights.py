"""Weight files: saving and loading state dicts, and building a config's model with trained weights.

Training (``model.pth``, ``model_best.pth``, the checkpoint) and prediction both use these,
so a file one writes is a file the other reads.
"""

import errno
import os
import shutil

import torch

from unet3d.atomic import atomic_path
from unet3d.errors import UserError

# Less free space than this after a failed write: the disk filled during it.
FULL_BELOW_BYTES = 16 * 2**20


def save(obj, path):
    """``torch.save`` to ``path`` atomically; a disk that fills meanwhile is an OSError (ENOSPC) naming ``path``."""
    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as error:
            # torch's zip writer reports a full disk as "[enforce fail at inline_container.cc] unexpected pos".
            if shutil.disk_usage(os.path.dirname(os.path.abspath(tmp))).free >= FULL_BELOW_BYTES:
                raise
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from error


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


def plain_state(state):
    """A state dict without the wrappers' key prefixes (DDP/DataParallel ``module.``, torch.compile)."""
    return {key.removeprefix("module.").removeprefix("_orig_mod."): value for key, value in state.items()}


def read_weights(path):
    """The weights in ``path``: a plain state dict or a training checkpoint's ``model`` entry, prefixes stripped."""
    state = load(path)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise UserError(f"{path}: not a state dict of weights")
    return plain_state(state)


def load_weights(model, state, path):
    """Load the state dict ``state`` (read from ``path``) into ``model`` strictly, wrappers' prefixes stripped."""
    try:
        model.load_state_dict(plain_state(state), strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise UserError(f"{path}: weights do not fit the config's model ({first})") from None
    return model


def load_model_weights(model, path):
    """Load plain weights (or a training checkpoint's ``model`` entry) from ``path`` into ``model``, strictly."""
    return load_weights(model, read_weights(path), path)


def trained_model(component, path, device):
    """The model ``component`` (the config's ``model``) with the weights of ``path``, in eval mode on ``device``."""
    model = component.build()
    load_model_weights(model, path)
    return model.to(device).eval()


def load_matching_weights(model, path):
    """Load the parameters of ``path`` whose names and shapes match ``model``'s; the others keep theirs.

    Returns ``(loaded, absent, differing)``: how many of the model's tensors were loaded,
    had no counterpart in the file, or had one of another shape. A file that matches
    nothing is a UserError naming it.
    """
    state = read_weights(path)
    own = model.state_dict()
    matching = {key: value for key, value in state.items()
                if key in own and getattr(value, "shape", None) == own[key].shape}
    if not matching:
        raise UserError(f"{path}: no parameter matches the config's model by name and shape; is it a model of "
                        "another architecture?")
    model.load_state_dict(matching, strict=False)
    differing = sum(key in state and key not in matching for key in own)
    return len(matching), len(own) - len(matching) - differing, differing
