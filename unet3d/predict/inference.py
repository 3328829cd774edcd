"""Apply a trained model to cases and write one prediction per case on its input grid."""

import logging
from pathlib import Path

import torch
from monai.data import decollate_batch
from monai.inferers import sliding_window_inference
from monai.transforms import Invertd

from unet3d.config.load import load_config
from unet3d.config.resolve import resolve
from unet3d.data.files import cases, preflight
from unet3d.data.labels import decode_regions
from unet3d.data.loaders import batches, make_loader
from unet3d.data.transforms import inference_window
from unet3d.errors import UserError
from unet3d.predict.write import write_prediction
from unet3d.train.checkpoint import load_model_weights

log = logging.getLogger("unet3d")

ACTIVATIONS = {
    "sigmoid": torch.sigmoid,
    "softmax": lambda logits: torch.softmax(logits, dim=1),
    "none": lambda logits: logits,
}


def build_model(config, model_filename, device):
    """The config's model with the weights of ``model_filename``, in eval mode on ``device``."""
    model = resolve("model", config["model"], "model")
    load_model_weights(model, model_filename)
    return model.to(device).eval()


def predict_group(config_filename, model_filename, group, output_dir, device, **options):
    """Predict the cases of ``<group>_filenames`` in a config file with one trained model."""
    config = load_config(config_filename)
    preflight(config, [group])
    model = build_model(config, model_filename, device)
    return predict_cases(config, model, cases(config, group), output_dir, device, **options)


def predict_cases(config, model, case_list, output_dir, device, activation="sigmoid",
                  save_probabilities=False, threshold=0.5, overwrite=False, num_workers=0):
    """Predict each case into ``output_dir/<case id>.nii.gz``; returns the written paths.

    The preprocessing (crop, resize, ...) is inverted with MONAI's ``Invertd`` so each
    output has its first modality's shape and affine. Label maps by default (the BraTS
    hierarchy decoded to 1, 2, 4); float32 probabilities with ``save_probabilities``.
    """
    if activation not in ACTIVATIONS:
        raise UserError(f"--activation {activation!r}: expected one of {', '.join(ACTIVATIONS)}")
    dataset_spec = config["dataset"]
    labels = dataset_spec.get("labels")
    hierarchy = dataset_spec.get("setup_label_hierarchy", False)
    if not save_probabilities and not labels:
        raise UserError("config key 'dataset.labels' is missing; it is needed to write label maps")
    output_dir = Path(output_dir)
    targets = {case["id"]: output_dir / f"{case['id']}.nii.gz" for case in case_list}
    first_modality = {case["id"]: case["image"][0] for case in case_list}
    inputs = {Path(p).resolve() for case in case_list for p in case["image"] + [case.get("label", "")] if p}
    for target in targets.values():
        if target.resolve() in inputs:
            raise UserError(f"{target}: output would overwrite an input file; choose another output directory")
    if not overwrite:
        existing = [str(t) for t in targets.values() if t.exists()]
        if existing:
            raise UserError(f"{existing[0]}: output exists ({len(existing)} in all); pass --overwrite to replace")

    data = resolve("dataset", dataset_spec, "dataset", data=case_list, with_label=False)
    invert = Invertd("pred", transform=data.transform, orig_keys="image", nearest_interp=False)
    roi_size = inference_window(dataset_spec)
    to_probabilities = ACTIVATIONS[activation]
    loader = make_loader(data, batch_size=1, shuffle=False, num_workers=num_workers)
    model.eval()
    written = []
    with batches(loader) as iterator:
        for batch in iterator:
            # no_grad rather than inference_mode: Invertd updates tensors in place, which
            # inference tensors forbid outside inference mode.
            with torch.no_grad():
                image = batch["image"].to(device)
                logits = sliding_window_inference(image, roi_size, 1, model) if roi_size else model(image)
                batch["pred"] = to_probabilities(logits.float()).cpu()
            for item in decollate_batch(batch):
                probabilities = invert(item)["pred"].detach().cpu().numpy()
                if save_probabilities:
                    array = probabilities.transpose(1, 2, 3, 0).astype("float32")
                else:
                    array = decode_regions(probabilities, labels, hierarchy, threshold)
                target = targets[item["id"]]
                write_prediction(array, first_modality[item["id"]], target)
                written.append(target)
                log.info("wrote %s", target)
    return written
