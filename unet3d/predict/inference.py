"""Apply trained models to cases and write one prediction per case on its input grid."""

import itertools
import logging
from contextlib import nullcontext

import torch
from monai.data import MetaTensor, decollate_batch
from monai.inferers import SlidingWindowInferer
from monai.transforms import Invertd

from unet3d.config.load import load_config
from unet3d.config.resolve import resolve
from unet3d.config.schema import defaults
from unet3d.data.labels import decode_regions
from unet3d.data.loaders import batches, make_loader
from unet3d.data.transforms import inference_window
from unet3d.errors import UserError
from unet3d.predict.inputs import model_filenames, select_cases
from unet3d.predict.postprocess import clean_label_map
from unet3d.predict.write import output_paths, write_prediction
from unet3d.train.checkpoint import load_model_weights

log = logging.getLogger("unet3d")

ACTIVATIONS = {
    "sigmoid": torch.sigmoid,
    "softmax": lambda logits: torch.softmax(logits, dim=1),
    "none": lambda logits: logits,
}
DEFAULT_OVERLAP = defaults("prediction")["overlap"]
DEFAULT_SW_BATCH_SIZE = defaults("prediction")["sw_batch_size"]
SPATIAL_AXES = (2, 3, 4)  # of a (batch, channel, x, y, z) tensor


def build_model(config, model_filename, device):
    """The config's model with the weights of ``model_filename``, in eval mode on ``device``."""
    model = resolve("model", config["model"], "model")
    load_model_weights(model, model_filename)
    return model.to(device).eval()


def prediction_section(config):
    """The config's ``prediction`` section over the schema's defaults; a null value means the default."""
    section = config.get("prediction") or {}
    if not isinstance(section, dict):
        raise UserError("config key 'prediction' must be an object (window, overlap, sw_batch_size, min_component_size)")
    return {**defaults("prediction"), **{key: value for key, value in section.items() if value is not None}}


def inference_settings(config, overlap=None, sw_batch_size=None):
    """``(window, overlap, sw_batch_size)`` for the sliding window; arguments override the config.

    The window is ``prediction.window``, else ``dataset.patch_size``, else
    ``dataset.desired_shape``, else (None) the whole volume in one window. ``overlap`` and
    ``sw_batch_size`` come from the ``prediction`` section, defaulting to 0.5 and 4.
    """
    section = prediction_section(config)
    window = section["window"] or inference_window(config["dataset"])
    overlap = section["overlap"] if overlap is None else overlap
    sw_batch_size = section["sw_batch_size"] if sw_batch_size is None else sw_batch_size
    if window is not None and (len(window) != 3 or not all(isinstance(s, int) and s > 0 for s in window)):
        raise UserError(f"sliding window {window!r} (config key 'prediction.window' or 'dataset.patch_size') "
                        "must be three positive integers")
    if not 0 <= overlap < 1:
        raise UserError(f"overlap {overlap!r} (--overlap or config key 'prediction.overlap') must be in [0, 1)")
    if not isinstance(sw_batch_size, int) or sw_batch_size < 1:
        raise UserError(f"sw_batch_size {sw_batch_size!r} (--sw_batch_size or config key 'prediction.sw_batch_size') "
                        "must be a positive integer")
    return window, overlap, sw_batch_size


def mirrorings(tta):
    """Spatial axes to flip: none, or with ``tta`` all 8 combinations of the three axes."""
    if not tta:
        return [()]
    return [axes for count in range(4) for axes in itertools.combinations(SPATIAL_AXES, count)]


def predict_probabilities(models, image, window=None, overlap=DEFAULT_OVERLAP, sw_batch_size=DEFAULT_SW_BATCH_SIZE,
                          activation="sigmoid", tta=False, amp=True):
    """Probabilities (B, C, ...) for ``image``, averaged over ``models`` and, with ``tta``, over mirrorings.

    Sliding windows are blended with Gaussian weights. AMP (float16) applies on CUDA
    only. Runs under ``torch.no_grad`` and adds out of place: tensors made in inference
    mode cannot be updated in place outside it, which broke fold ensembles elsewhere.
    """
    inferer = SlidingWindowInferer(window or tuple(image.shape[2:]), sw_batch_size, overlap, mode="gaussian")
    to_probabilities = ACTIVATIONS[activation]
    flips = mirrorings(tta)
    autocast = torch.autocast("cuda", dtype=torch.float16) if amp and image.device.type == "cuda" else nullcontext()
    total = None
    with torch.no_grad():
        for model, axes in itertools.product(models, flips):
            with autocast:
                logits = inferer(image.flip(axes) if axes else image, model)
            probabilities = to_probabilities(logits.float())
            probabilities = probabilities.flip(axes) if axes else probabilities
            total = probabilities if total is None else total + probabilities
    return total / (len(models) * len(flips))


def predict_on_input_grid(models, item, invert, device, **inference):
    """Probabilities (C, X, Y, Z) for one preprocessed ``item``, brought back to its input grid by ``invert``.

    ``invert`` is an ``Invertd("pred", transform=<the preprocessing>, orig_keys="image")``;
    ``inference`` holds the keyword arguments of ``predict_probabilities``.
    """
    image = item["image"].as_tensor()[None].to(device)
    probabilities = MetaTensor(predict_probabilities(models, image, **inference)[0].cpu())
    if not item["image"].applied_operations:  # nothing to undo (Invertd would warn)
        probabilities.affine = item["image"].affine
        return probabilities
    return invert({**item, "pred": probabilities})["pred"]


def predict(config_filename, model_patterns, output_dir, device, group=None, images=None, input_dir=None,
            allow_unknown_keys=False, **options):
    """Predict a config group, image lists or a BraTS folder with one model or an ensemble; returns the paths."""
    config = load_config(config_filename, allow_unknown_keys)
    check_options(config, **{k: v for k, v in options.items() if k in CHECKED_OPTIONS})
    case_list = select_cases(config, group, images, input_dir)
    models = [build_model(config, filename, device) for filename in model_filenames(model_patterns)]
    log.info("predicting %d case(s) with %d model(s)", len(case_list), len(models))
    return predict_cases(config, models, case_list, output_dir, device, **options)


CHECKED_OPTIONS = ("activation", "save_probabilities", "min_component_size", "overlap", "sw_batch_size")


def check_options(config, activation="sigmoid", save_probabilities=False, min_component_size=None, overlap=None,
                  sw_batch_size=None):
    """Raise on a prediction option that cannot work, before any model is loaded; returns ``inference_settings``."""
    if activation not in ACTIVATIONS:
        raise UserError(f"--activation {activation!r}: expected one of {', '.join(ACTIVATIONS)}")
    if not save_probabilities and not config["dataset"].get("labels"):
        raise UserError("config key 'dataset.labels' is missing; it is needed to write label maps")
    if min_component_size is not None and min_component_size < 0:
        raise UserError(f"--min_component_size must be 0 or more, got {min_component_size}")
    return inference_settings(config, overlap, sw_batch_size)


def predict_cases(config, models, case_list, output_dir, device, activation="sigmoid", threshold=0.5,
                  save_probabilities=False, min_component_size=None, keep_largest=False, tta=False,
                  overlap=None, sw_batch_size=None, amp=True, overwrite=False, num_workers=0):
    """Predict each case into ``output_dir/<case id>.nii.gz``; returns the written paths.

    ``models`` is one model or a list whose probabilities are averaged (fold ensemble).
    The preprocessing (reorientation, crop, resampling, padding, ...) is inverted with
    MONAI's ``Invertd`` so each output has its first image's shape and affine. Label maps
    by default (the BraTS hierarchy decoded to 1, 2, 4), optionally cleaned of small or
    all but the largest components per region (``min_component_size`` defaults to the
    config's ``prediction.min_component_size``); float32 probabilities with
    ``save_probabilities``.
    """
    window, overlap, sw_batch_size = check_options(config, activation, save_probabilities, min_component_size,
                                                   overlap, sw_batch_size)
    if min_component_size is None:
        min_component_size = prediction_section(config)["min_component_size"]
    models = list(models) if isinstance(models, (list, tuple)) else [models]
    dataset_spec = config["dataset"]
    labels = dataset_spec.get("labels")
    hierarchy = dataset_spec.get("setup_label_hierarchy", False)
    targets = output_paths(case_list, output_dir, overwrite)
    first_image = {case["id"]: case["image"][0] for case in case_list}

    data = resolve("dataset", dataset_spec, "dataset", data=case_list, with_label=False)
    invert = Invertd("pred", transform=data.transform, orig_keys="image", nearest_interp=False)
    loader = make_loader(data, batch_size=1, shuffle=False, num_workers=num_workers)
    inference = dict(window=window, overlap=overlap, sw_batch_size=sw_batch_size, activation=activation, tta=tta, amp=amp)
    written = []
    with batches(loader) as iterator:
        for batch in iterator:
            item = decollate_batch(batch)[0]
            inverted = predict_on_input_grid(models, item, invert, device, **inference)
            probabilities = inverted.numpy()
            if save_probabilities:
                array = probabilities.transpose(1, 2, 3, 0).astype("float32")
            else:
                array = decode_regions(probabilities, labels, hierarchy, threshold)
                array = clean_label_map(array, labels, hierarchy, min_component_size, keep_largest)
            target = targets[item["id"]]
            write_prediction(array, first_image[item["id"]], target, affine=inverted.affine)
            written.append(target)
            log.info("wrote %s", target)
    return written
