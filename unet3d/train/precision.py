"""Mixed precision from ``training.amp``: the autocast context and the gradient scaler."""

import warnings
from contextlib import nullcontext

import torch

from unet3d.device import cpu_has_native_bf16

# training.amp's values (checked by the config's schema) -> the autocast dtype (None: float32).
DTYPES = {False: None, "fp32": None, True: torch.float16, "fp16": torch.float16, "bf16": torch.bfloat16}


class Precision:
    """float16 autocast with a GradScaler on CUDA, bfloat16 autocast on CUDA or CPU, else float32.

    Args:
        amp: ``training.amp``: false, true or "fp16", "bf16".
        device: the training device; float16 on CPU is reported once and trains in float32.
    """

    def __init__(self, amp, device):
        self.device_type = device.type
        self.dtype = DTYPES[amp]
        if self.dtype is torch.float16 and device.type != "cuda":
            warnings.warn("training.amp asks for float16 but the device is CPU: training in float32", stacklevel=2)
            self.dtype = None
        if self.dtype is torch.bfloat16 and device.type == "cpu" and not cpu_has_native_bf16():
            warnings.warn("training.amp is \"bf16\" but this CPU has no native bfloat16 (AVX512-BF16 or AMX): "
                          "it is emulated and may be slower than float32 (training.amp: false)", stacklevel=2)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype is torch.float16)

    def autocast(self):
        """The autocast context for forward passes (a no-op in float32)."""
        return torch.autocast(self.device_type, dtype=self.dtype) if self.dtype else nullcontext()
