"""Opt-in ``torch.compile`` (``training.compile`` or ``UNET3D_COMPILE=1``) with a quiet console."""

import logging
import os
import warnings

import torch

log = logging.getLogger("unet3d")

NOISY_LOGGERS = ("torch._dynamo", "torch._inductor", "torch.fx.experimental.symbolic_shapes")


def compile_requested(setting):
    """Whether ``training.compile`` or the ``UNET3D_COMPILE`` environment variable asks for compiling."""
    return bool(setting) or os.environ.get("UNET3D_COMPILE", "0").lower() not in ("", "0", "false", "no")


def compiled(model):
    """``torch.compile(model)``, with dynamo's symbolic-shape chatter kept out of the console."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"torch\._dynamo.*|torch\._inductor.*|torch\.fx\.experimental.*")
    log.info("compiling the model with torch.compile (first steps are slow)")
    return torch.compile(model)


def compile_seconds():
    """Seconds spent compiling in this process so far (forward and backward graphs); 0 if unknown."""
    try:
        from torch._dynamo.utils import calculate_time_spent
    except ImportError:
        return 0.0
    return calculate_time_spent().get("total_wall_time", 0.0)
