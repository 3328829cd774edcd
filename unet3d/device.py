"""Choosing the torch device from ``--device``."""

import torch

from unet3d.errors import UserError


def choose_device(name="auto"):
    """``auto`` -> CUDA when available, else CPU; otherwise the named device, checked."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r}: expected auto, cpu, cuda or cuda:<index>") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return device


def check_process_devices(device, n_processes, flag="--ngpus"):
    """Refuse ``n_processes`` CUDA processes on a machine with fewer GPUs: each process takes the GPU of its rank."""
    if device.type == "cuda" and n_processes > torch.cuda.device_count():
        raise UserError(f"{flag} {n_processes}: this machine has {torch.cuda.device_count()} CUDA device(s), one per "
                        f"process is needed (lower {flag}, or use --device cpu for CPU processes)")


def cpu_has_native_bf16():
    """Whether oneDNN runs bfloat16 natively on this CPU (True when torch cannot tell)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True
