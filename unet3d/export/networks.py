"""The network alone as TorchScript and ONNX, each checked against PyTorch on a random input.

Both are exported from the network in eval mode, as prediction runs it: MONAI's DynUNet
then returns its main output only, whatever ``deep_supervision`` says.
"""

import contextlib
import importlib.util
import logging
import warnings

import numpy as np
import torch

from unet3d.errors import UserError, install_hint

TOLERANCE = 1e-4  # max abs difference of the logits allowed between PyTorch and an export
ONNX_PACKAGES = ("onnx", "onnxruntime", "onnxscript")  # torch's default (dynamo) exporter needs onnxscript
INPUT_NAME, OUTPUT_NAME = "image", "logits"
SPATIAL_NAMES = ("x", "y", "z")
# The exporters log each graph pass (and torchvision's absence) at INFO and WARNING; the check reports what matters.
EXPORTER_LOGGERS = ("torch.onnx", "onnx_ir", "onnxscript")


@contextlib.contextmanager
def quiet_exporters():
    """Silence the exporters' progress logs and deprecation warnings (``torch.jit`` is deprecated in torch 2.13)."""
    loggers = [logging.getLogger(name) for name in EXPORTER_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks in MONAI's blocks, not data flow
            # DynUNet fills a list of deep supervision outputs in forward; eval mode returns none of them.
            warnings.filterwarnings("ignore", message="The tensor attributes .* were assigned during export")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def require_onnx_packages():
    """Raise a one-line UserError with the pip command when the ``export`` extra is missing."""
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"ONNX export needs {', '.join(missing)}: {install_hint('export')} (or leave onnx out of --formats)")


def example_input(in_channels, window, batch=1, seed=0):
    """A random float32 input (batch, in_channels, *window), the same on every run."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, in_channels, *window, generator=generator)


def torchscript(network, example, path):
    """Trace ``network`` on ``example`` and save it at ``path`` (shapes other than the example's work for
    networks without shape-dependent Python branches, such as MONAI's U-Nets)."""
    try:
        with torch.no_grad():
            traced = torch.jit.trace(network, example, check_trace=False)
    except Exception as error:  # tracing raises whatever the network's forward raises
        raise UserError(f"torch.jit.trace cannot trace the config's model ({failure(error)}); leave torchscript out "
                        "of --formats") from error
    torch.jit.save(traced, str(path))


def onnx(network, example, path, opset=None):
    """Export ``network`` to ONNX at ``path`` with torch's default exporter; returns whether the batch and
    spatial axes are dynamic.

    Dynamic axes are tried first (any window, any ``sw_batch_size``); a network that torch.export cannot
    trace with free sizes is exported for ``example``'s shape only.
    """
    # torch.export specialises axes whose example size is 1, so the batch axis is traced at 2.
    batch = example.expand(2, *example.shape[1:]).contiguous()
    dims = {0: torch.export.Dim("batch")}
    dims.update({axis: torch.export.Dim(name, min=2) for axis, name in zip((2, 3, 4), SPATIAL_NAMES)})
    options = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME], "opset_version": opset, "verbose": False}
    try:
        program = torch.onnx.export(network, (batch,), dynamic_shapes=(dims,), **options)
        dynamic = True
    except Exception:  # torch raises many types when free sizes do not trace; fixed sizes may still do
        try:
            program = torch.onnx.export(network, (example,), **options)
        except Exception as error:
            raise UserError(f"torch.onnx.export cannot export the config's model ({failure(error)}); leave onnx "
                            "out of --formats") from error
        dynamic = False
    program.save(str(path), external_data=False)
    return dynamic


def failure(error):
    """``TypeName: first line of the message`` of an exception, for a one-line error."""
    return f"{error.__class__.__name__}: {(str(error).strip().splitlines() or [''])[0]}"


def max_abs_diffs(network, example, torchscript_path=None, onnx_path=None):
    """``{"torchscript": d, "onnx": d}``: the max abs difference of each export's logits from PyTorch's on
    ``example`` (run by torch.jit and onnxruntime)."""
    with torch.no_grad():
        reference = network(example).float()
    result = {}
    if torchscript_path is not None:
        loaded = torch.jit.load(str(torchscript_path), map_location="cpu")
        with torch.no_grad():
            result["torchscript"] = float((loaded(example).float() - reference).abs().max())
    if onnx_path is not None:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        [logits] = session.run([OUTPUT_NAME], {INPUT_NAME: example.numpy()})
        result["onnx"] = float(np.abs(logits - reference.numpy()).max())
    return result


def check_agreement(diffs, tolerance=TOLERANCE):
    """Raise a UserError naming the first export whose logits differ from PyTorch's by more than ``tolerance``."""
    for name, diff in diffs.items():
        if not diff <= tolerance:  # NaN fails too
            raise UserError(f"the {name} export's logits differ from PyTorch's by {diff:.3g} (max abs) on a random "
                            f"input, more than {tolerance:g}; nothing was written")
