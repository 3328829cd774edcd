"""Apply trained models to cases and write one prediction per case on its input grid."""

import logging
from contextlib import nullcontext
from pathlib import Path

import torch
from monai.data import MetaTensor, decollate_batch
from monai.transforms import Invertd

from unet3d.config.experiment import require_writable
from unet3d.config.load import write_json
from unet3d.data.dataset import build_dataset
from unet3d.data.loaders import batches, make_loader
from unet3d.device import cpu_has_native_bf16
from unet3d.models.inferer import Inferer
from unet3d.models.weights import trained_model
from unet3d.predict.inputs import model_filenames, select_cases
from unet3d.predict.postprocess import (AUTO, clean_regions, clean_up_steps, cross_validation_steps,
                                        read_postprocessing)
from unet3d.predict.write import output_paths, write_prediction

log = logging.getLogger("unet3d")


def predict_on_input_grid(inferer, models, item, invert, device):
    """Probabilities (C, X, Y, Z) for one preprocessed ``item``, brought back to its input grid by ``invert``.

    ``invert`` is an ``Invertd("pred", transform=<the preprocessing>, orig_keys="image")``.
    """
    image = item["image"].as_tensor()[None].to(device)
    probabilities = MetaTensor(inferer.probabilities(models, image)[0].cpu())
    if not item["image"].applied_operations:  # nothing to undo (Invertd would warn)
        probabilities.affine = item["image"].affine
        return probabilities
    inverted = invert({**item, "pred": probabilities})["pred"]
    if inferer.activation == "softmax":
        # Voxels outside a crop come back as 0 in every channel: they are background.
        inverted[0] = (1 - inverted[1:].sum(dim=0)).clamp(0, 1)
    return inverted


def predict(experiment, model_patterns, output_dir, device, group=None, images=None, input_dir=None, ids=None,
            save_probabilities=False, keep_config=False, shard=(0, 1), postprocessing=AUTO, **options):
    """Predict a config group, image lists or a BraTS folder with one model or an ensemble; returns the paths.

    With ``keep_config`` (a config changed by ``--set``) the config as read is written to
    ``<output_dir>/predict_config.json``. ``shard`` is ``(rank, world size)`` when several
    processes share the cases: this one predicts every ``world size``-th case from its rank,
    and only rank 0 writes the config. ``postprocessing`` is a ``postprocessing.json``, None,
    or ``"auto"``: the one of the cross-validation run whose fold folders hold the models
    (unless ``keep_largest`` or ``prediction.min_component_size`` choose the clean-up). The
    other ``options`` are those of ``predict_cases``.
    """
    rank, world_size = shard
    check_before_loading(experiment, save_probabilities, output_dir)
    case_list = select_cases(experiment, group, images, input_dir, ids)
    # Outputs that exist or would replace an input stop the command before a model is loaded.
    output_paths(case_list, output_dir, options.get("overwrite", False),
                 (options.get("prediction") or experiment.prediction).output_format, experiment.input_files())
    model_files = model_filenames(model_patterns)
    if not save_probabilities:
        options["postprocessing"] = cross_validation_steps(postprocessing, model_files, experiment.labels,
                                                           own_clean_up(options.get("prediction") or
                                                                        experiment.prediction, options))
    models = [trained_model(experiment.model, filename, device) for filename in model_files]
    log.info("predicting %d case(s) with %d model(s)%s", len(case_list), len(models),
             f" in {world_size} processes" if world_size > 1 else "")
    if keep_config and rank == 0:
        write_json(experiment.source, Path(output_dir) / "predict_config.json")
    return predict_cases(experiment, models, case_list[rank::world_size], output_dir, device,
                         save_probabilities=save_probabilities, **options)


def own_clean_up(prediction, options):
    """The clean-up the user chose, in words (``--keep_largest``, ``prediction.min_component_size N``), or None."""
    if options.get("keep_largest"):
        return "--keep_largest"
    if prediction.min_component_size is not None:
        return f"prediction.min_component_size {prediction.min_component_size}"
    return None


def check_outputs(experiment, model_patterns, output_dir, group=None, images=None, input_dir=None, ids=None,
                  save_probabilities=False, overwrite=False, postprocessing=None):
    """Raise a UserError for what would stop ``predict`` on any case (before processes are started to share them)."""
    check_before_loading(experiment, save_probabilities, output_dir)
    if postprocessing not in (None, AUTO) and not save_probabilities:
        read_postprocessing(postprocessing, experiment.labels)
    for filename in model_filenames(model_patterns):  # missing files and weights of another model, as one line
        trained_model(experiment.model, filename, torch.device("cpu"))
    output_paths(select_cases(experiment, group, images, input_dir, ids), output_dir, overwrite)


def check_before_loading(experiment, save_probabilities, output_dir=None):
    """Raise on what cannot work before any model or image is loaded (``output_dir``: a folder that cannot be made
    or written)."""
    if not save_probabilities:
        experiment.labels.require("they are needed to write label maps")
    if output_dir is not None:
        require_writable(output_dir, "--output_dir", folder=True)


def predict_cases(experiment, models, case_list, output_dir, device, prediction=None, save_probabilities=False,
                  keep_largest=False, tta=False, amp=True, overwrite=False, num_workers=0, postprocessing=None):
    """Predict each case into ``output_dir/<case id>.nii.gz`` (or the input's format); returns the written paths.

    Args:
        experiment: the ``Experiment`` the models were trained with.
        models: one model or a list whose probabilities are averaged (fold ensemble).
        case_list: the ``Case`` objects to predict.
        prediction: the ``PredictionSettings`` to use (default: the experiment's; the
            command line's overrides come as ``experiment.prediction.override(...)``).
        save_probabilities: write float32 probabilities instead of label maps.
        keep_largest: keep only the largest component of each region.
        tta: average over the 8 mirrorings of the spatial axes.
        amp: autocast as ``prediction_autocast`` says: float16 on CUDA, bfloat16 on a CPU for bf16-trained models.
        overwrite: replace predictions that exist.
        num_workers: data loader worker processes.
        postprocessing: the ``ComponentStep`` of each region chosen by cross-validation, applied
            when neither ``keep_largest`` nor ``prediction.min_component_size`` is set.

    The preprocessing (reorientation, crop, resampling, padding, ...) is inverted with
    MONAI's ``Invertd`` so each output has its first image's shape and affine, and is
    written in its format (``prediction.output_format`` may choose another). Label maps
    are decoded by the experiment's label scheme (the BraTS hierarchy to 1, 2, 4), then
    cleaned per region (``unet3d.predict.postprocess.clean_up_steps``).
    """
    prediction = prediction or experiment.prediction
    check_before_loading(experiment, save_probabilities)
    targets = output_paths(case_list, output_dir, overwrite, prediction.output_format, experiment.input_files())
    steps = clean_up_steps(experiment.labels, prediction.min_component_size, keep_largest, postprocessing)
    written = []
    for case, probabilities in case_probabilities(experiment, models, case_list, device, prediction, tta, amp,
                                                  num_workers):
        written.append(write_case(experiment, prediction, case, probabilities, targets[case.id], save_probabilities,
                                  steps))
    return written


def inferer_for(experiment, prediction=None, tta=False, amp=True, device="cpu"):
    """The ``Inferer`` of ``experiment``'s prediction settings (``prediction``: the command line's copy), with
    the autocast of ``prediction_autocast`` when ``amp``; mirrored with ``tta`` or ``prediction.tta``."""
    tta = tta or (prediction or experiment.prediction).tta
    return Inferer.from_experiment(experiment, prediction, tta=tta,
                                   autocast=prediction_autocast(experiment, device) if amp else nullcontext)


def prediction_autocast(experiment, device):
    """float16 autocast on CUDA; on a CPU, bfloat16 autocast when the model was trained in it
    (``training.amp: "bf16"``, as its validation ran) and the CPU runs it natively (about half the
    CPU time of float32 there); else float32."""
    device_type = torch.device(device).type
    if device_type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.float16)
    if device_type == "cpu" and experiment.training.amp == "bf16" and cpu_has_native_bf16():
        return lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext


def case_probabilities(experiment, models, case_list, device, prediction=None, tta=False, amp=True, num_workers=0):
    """``(case, probabilities (C, X, Y, Z) on its input grid)`` for each of ``case_list``, in order: ``models``
    (one, or a list averaged) applied as ``predict_cases`` applies them."""
    models = list(models) if isinstance(models, (list, tuple)) else [models]
    inferer = inferer_for(experiment, prediction, tta, amp, device)
    cases = {case.id: case for case in case_list}
    data = build_dataset(experiment.dataset, experiment.labels, case_list, with_label=False)
    invert = Invertd("pred", transform=data.transform, orig_keys="image", nearest_interp=False)
    loader = make_loader(data, batch_size=1, shuffle=False, num_workers=num_workers)
    with batches(loader) as iterator:
        for batch in iterator:
            item = decollate_batch(batch)[0]
            yield cases[item["id"]], predict_on_input_grid(inferer, models, item, invert, device)


def write_case(experiment, prediction, case, probabilities, target, save_probabilities=False, steps=None):
    """Write one case's ``probabilities`` (on its input grid) to ``target``: as they are, or as the label map
    ``experiment``'s scheme decodes with ``prediction``'s threshold, cleaned by the clean-up ``steps`` of each
    region (``clean_up_steps``); returns ``target``."""
    if save_probabilities:
        array = probabilities.numpy().transpose(1, 2, 3, 0).astype("float32")
    else:
        label_map = inferer_for(experiment, prediction).decode(probabilities.as_tensor())
        steps = steps or clean_up_steps(experiment.labels, prediction.min_component_size, False, None)
        array = clean_regions(label_map, experiment.labels, steps).numpy()
    write_prediction(array, case.images[0], target, affine=probabilities.affine)
    log.info("wrote %s", target)
    return target
