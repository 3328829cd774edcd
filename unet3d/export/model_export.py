"""``unet3d-export``: a config and its trained weights -> TorchScript, ONNX, a MONAI bundle and a manifest.

Everything is made in a staging folder and checked first; only then are the files moved
into the output folder, one atomic write each, so a refused export leaves nothing behind.
"""

import json
import logging
import shutil
import tempfile
from pathlib import Path

import torch

from unet3d.atomic import atomic_path
from unet3d.config.experiment import require_writable
from unet3d.config.load import write_json
from unet3d.errors import UserError
from unet3d.export.bundle import inference_config, metadata
from unet3d.export.manifest import manifest, versions
from unet3d.export.networks import (
    TOLERANCE,
    check_agreement,
    example_input,
    max_abs_diffs,
    onnx,
    quiet_exporters,
    require_onnx_packages,
    torchscript,
)
from unet3d.models.weights import model_weights, save, trained_model

log = logging.getLogger("unet3d")

FORMATS = ("torchscript", "onnx", "bundle")
FILES = {"torchscript": "model.ts", "onnx": "model.onnx", "manifest": "manifest.json"}
BUNDLE_FILES = ("configs/inference.json", "configs/metadata.json", "models/model.pt")
BUNDLE_DIFFERENCE = ("unet3d-predict runs float16 autocast on CUDA (bfloat16 on a CPU for models trained in it) "
                     "unless --no_amp; the bundle runs float32")
# The check's input when the config has no window (whole volumes): divisible by the stride of 5-level U-Nets.
CHECK_WINDOW = (32, 32, 32)


def planned_files(formats):
    """The files an export of ``formats`` writes, relative to the output folder."""
    files = [FILES[name] for name in FORMATS[:2] if name in formats]
    if "bundle" in formats:
        files += [f"bundle/{name}" for name in BUNDLE_FILES]
    return [*files, FILES["manifest"]]


def check_output_dir(output_dir, files, overwrite):
    """Raise when ``output_dir`` is not a folder or, without ``overwrite``, already holds one of ``files``."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"{output_dir}: --output_dir is a file; expected a folder (it is made if missing)")
    require_writable(output_dir, "--output_dir", folder=True)
    existing = [name for name in files if (output_dir / name).exists()]
    if existing and not overwrite:
        raise UserError(f"{output_dir / existing[0]}: exists ({len(existing)} of the export's files do); pass "
                        "--overwrite to replace them")


def export_model(experiment, model_filename, output_dir, formats=FORMATS, prediction=None, overwrite=False):
    """Export the config's model with the weights in ``model_filename`` into ``output_dir``; returns the manifest.

    Args:
        experiment: the ``Experiment`` the weights were trained with.
        formats: any of ``FORMATS``; the manifest is always written.
        prediction: the ``PredictionSettings`` the bundle and manifest describe (default: the experiment's).
        overwrite: replace the files of an earlier export.

    TorchScript and ONNX are checked against PyTorch on a random input of the inference
    window's size; a difference above ``TOLERANCE`` (max abs) is a UserError and nothing is written.
    """
    unknown = [name for name in formats if name not in FORMATS]
    if unknown or not formats:
        raise UserError(f"--formats {' '.join(formats)}: expected some of {', '.join(FORMATS)}")
    prediction = prediction or experiment.prediction
    experiment.labels.require("they are needed to decode the network's outputs")
    files = planned_files(formats)
    check_output_dir(output_dir, files, overwrite)
    if "onnx" in formats:
        require_onnx_packages()
    if not isinstance(experiment.in_channels, int):
        raise UserError("config key 'model.in_channels' is missing; the export needs the number of input channels")
    window = experiment.window
    network = trained_model(experiment.model, model_filename, torch.device("cpu"))
    example = example_input(experiment.in_channels, window or CHECK_WINDOW)
    with tempfile.TemporaryDirectory(prefix="unet3d-export-") as folder, quiet_exporters():
        staging = Path(folder)
        exports = {}
        bundle = inference_config(experiment, prediction, window) if "bundle" in formats else None
        if "torchscript" in formats:
            torchscript(network, example, staging / FILES["torchscript"])
            exports["torchscript"] = {"file": FILES["torchscript"], "method": "torch.jit.trace"}
        if "onnx" in formats:
            dynamic = onnx(network, example, staging / FILES["onnx"])
            exports["onnx"] = {"file": FILES["onnx"], "exporter": "torch.onnx.export (torch.export)",
                               "input": "image", "output": "logits",
                               "dynamic_axes": ["batch", "x", "y", "z"] if dynamic else None,
                               "fixed_shape": None if dynamic else list(example.shape)}
        diffs = max_abs_diffs(network, example, *(staging / FILES[name] if name in exports else None
                                                  for name in ("torchscript", "onnx")))
        for name, diff in diffs.items():
            exports[name]["max_abs_diff"] = diff
            log.info("%s vs PyTorch: max abs difference %.3g on a random input %s", name, diff, tuple(example.shape))
        check_agreement(diffs)
        if bundle is not None:
            write_bundle(staging / "bundle", bundle, network, experiment)
            exports["bundle"] = {"folder": "bundle", "differences": [BUNDLE_DIFFERENCE]}
        check = {"input_shape": list(example.shape), "distribution": "standard normal", "seed": 0,
                 "tolerance": TOLERANCE, "compared": "max abs difference of the logits from PyTorch's (CPU)"}
        write_json(manifest(experiment, prediction, window, model_filename, exports, check),
                   staging / FILES["manifest"])
        for name in files:
            with atomic_path(Path(output_dir) / name) as tmp:
                shutil.copyfile(staging / name, tmp)
    log.info("exported %s to %s", ", ".join(formats), output_dir)
    return json.loads((Path(output_dir) / FILES["manifest"]).read_text(encoding="utf-8"))


def write_bundle(folder, inference, network, experiment):
    """Write the MONAI bundle: ``configs/inference.json``, ``configs/metadata.json``, ``models/model.pt``."""
    write_json(inference, folder / "configs" / "inference.json")
    write_json(metadata(experiment, versions()), folder / "configs" / "metadata.json")
    save(model_weights(network), folder / "models" / "model.pt")
