"""The manifest of an export: what a deployment must do around the network to predict as unet3d does."""

import hashlib
import importlib.metadata
import platform
from pathlib import Path

from unet3d import __version__
from unet3d.export.bundle import image_suffixes, label_dtype, network_def, preprocessing

DECODING = {
    "regions": "channel i is the nested region of labels[i:] (sigmoid); a voxel takes labels[i] of the innermost "
               "region i whose probability, and that of every region outside it, exceeds the threshold; else 0",
    "labels": "the label of the most probable channel (sigmoid), where its probability exceeds the threshold; else 0",
    "classes": "the most probable channel (softmax): channel 0 is the background (0), channel i is labels[i-1]",
    "general regions": "channel i is the region of the label values regions[i] (sigmoid); each region in turn paints "
                       "regions_class_order[i] where its probability exceeds the threshold, later regions over "
                       "earlier ones; else 0 (nnU-Net's decoding)",
}
PACKAGES = ("torch", "monai", "numpy", "nibabel", "onnx", "onnxruntime", "onnxscript")


def versions():
    """The versions of Python, unet3d and the packages an export depends on (those installed)."""
    found = {"python": platform.python_version(), "unet3d": __version__}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def channel_order(experiment):
    """A name per input channel, from how the config's first case names its images (``flair``, ``t1``, ...)."""
    suffixes = image_suffixes(experiment)
    if suffixes is None:
        return ["image"]
    return [suffix.split(".nii")[0].lstrip("_-.") or f"channel{index}" for index, suffix in enumerate(suffixes)]


def manifest(experiment, prediction, window, weights, exports, check):
    """The manifest (JSON-able) of an export of the model in ``weights`` trained with ``experiment``.

    Args:
        prediction: the ``PredictionSettings`` exported.
        window: the sliding window (None: the whole volume).
        exports: ``{format: {"file": ..., ...}}`` of what was written, with each check's figures.
        check: the input of the checks: its shape, seed and tolerance.
    """
    settings = experiment.dataset.settings
    labels = experiment.labels
    result = {
        "config": str(experiment.filename.resolve()) if experiment.filename else None,
        "weights": str(Path(weights).resolve()),
        "weights_sha256": hashlib.sha256(Path(weights).read_bytes()).hexdigest(),
        "network": network_def(experiment.model),
        "input": {"channels": experiment.in_channels, "channel_order": channel_order(experiment),
                  "layout": "(batch, channel, x, y, z) float32, voxel axes as after preprocessing (RAS)"},
        "output": {"channels": labels.n_channels, "layout": "(batch, channel, x, y, z) float32 logits"},
        "preprocessing": None,
        "inference": {
            "window": list(window) if window else None, "window_note": None if window else "the whole volume",
            "overlap": prediction.overlap, "sw_batch_size": prediction.sw_batch_size, "blending": "gaussian",
            "activation": prediction.activation or labels.activation, "threshold": prediction.threshold,
            "mask_to_nonzero": prediction.mask_to_nonzero, "min_component_size": prediction.min_component_size,
            "to_input_grid": "probabilities are brought back to each scan's grid (every preprocessing step "
                             "inverted, linear interpolation) before decoding",
        },
        "labels": {"mode": labels.mode, "values": list(labels.values), "names": labels.names,
                   **labels.config_keys(),
                   "decoding": DECODING[labels.mode if labels.regions is None else "general regions"],
                   "dtype": label_dtype(labels)},
        "exports": exports,
        "check": check,
        "versions": versions(),
    }
    if settings is not None:
        prediction_settings = settings.for_split(None)
        result["preprocessing"] = {
            "orientation": "RAS",
            "spacing": list(prediction_settings.spacing) if prediction_settings.spacing else None,
            "crop_foreground": prediction_settings.crop_foreground,
            "normalization": prediction_settings.normalization,
            "normalization_kwargs": prediction_settings.normalization_kwargs,
            "resize_to": (list(prediction_settings.desired_shape) if prediction_settings.resample
                          and prediction_settings.patch_size is None else None),
            "pad_to": list(prediction_settings.patch_size) if prediction_settings.patch_size else None,
            "divisible_by": list(prediction_settings.divisible_by) if prediction_settings.divisible_by else None,
            "monai_transforms": preprocessing(prediction_settings),
        }
    return result
