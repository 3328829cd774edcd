"""A MONAI bundle of a trained model: ``configs/inference.json``, ``configs/metadata.json``, ``models/model.pt``.

The bundle needs MONAI and PyTorch only: ``network_def`` is the config's network (a MONAI
network by its ``monai.networks.nets`` name), the preprocessing is the MONAI transforms unet3d
runs for prediction (``unet3d.data.transforms.preprocessing``), inference MONAI's
``SlidingWindowInferer`` with Gaussian blending, and the probabilities are brought back to
each scan's grid with ``Invertd`` before they are decoded to label values, as
``unet3d-predict`` does. The decoding of the label scheme is one small expression.
"""

import importlib
import os
import re

from unet3d.config.resolve import lookup
from unet3d.data.transforms import AXIS_LABELS, ORIENTATION
from unet3d.errors import UserError
from unet3d.models.inferer import model_divisor

MONAI_NETWORKS, MONAI_TRANSFORMS = "monai.networks.nets", "monai.transforms"
# The schema ``python -m monai.bundle verify_metadata`` checks ``metadata.json`` against (MONAI's current one).
METADATA_SCHEMA = ("https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
                   "meta_schema_20240725.json")
# Channel names (lower case, letters and digits only) that say MR: BraTS', nnU-Net's and the usual sequences.
MR_CHANNELS = {"mr", "mri", "flair", "t1", "t1w", "t1ce", "t1c", "t1gd", "t1n", "t2", "t2w", "t2f", "pd", "pdw", "adc",
               "dwi", "swi", "bold", "dti", "fa", "perfusion", "t2star"}
# Used instead of the config's window when it has none (the whole volume): -1 is MONAI's "the image's size".
WHOLE_VOLUME = (-1, -1, -1)


def class_path(cls, public_module):
    """``monai.transforms.NormalizeIntensityd`` for a class ``public_module`` exports, else its own dotted path."""
    if getattr(importlib.import_module(public_module), cls.__name__, None) is cls:
        return f"{public_module}.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def network_def(model):
    """The ``network_def`` of the config's ``model`` component: its class and constructor arguments."""
    return {"_target_": class_path(model.lookup(), MONAI_NETWORKS), **model.options}


def transform(name, **kwargs):
    """One MONAI transform of the bundle."""
    return {"_target_": f"{MONAI_TRANSFORMS}.{name}", **kwargs}


def preprocessing(settings):
    """The transforms of ``unet3d.data.transforms.preprocessing`` for prediction (image only), as bundle configs.

    ``settings`` are the ``DatasetSettings`` of prediction (no split).
    """
    steps = [
        transform("LoadImaged", keys="image", ensure_channel_first=True, image_only=True),
        transform("EnsureTyped", keys="image", dtype="float32", track_meta=True),
        transform("Orientationd", keys="image", axcodes=ORIENTATION, labels=[list(pair) for pair in AXIS_LABELS]),
    ]
    if settings.spacing is not None:
        steps.append(transform("Spacingd", keys="image", pixdim=list(settings.spacing), mode="bilinear"))
    if settings.crop_foreground:
        steps.append(transform("CropForegroundd", keys="image", source_key="image", allow_smaller=True))
    steps.extend(normalizations(settings.normalization, settings.normalization_kwargs))
    if settings.patch_size is not None:
        steps.append(transform("SpatialPadd", keys="image", spatial_size=list(settings.patch_size)))
    elif settings.resample:
        steps.append(transform("Resized", keys="image", spatial_size=list(settings.desired_shape), mode="trilinear"))
    if settings.divisible_by is not None:
        steps.append(transform("DivisiblePadd", keys="image", k=list(settings.divisible_by)))
    return steps


def normalizations(names, kwargs):
    """``dataset.normalization`` (a name or a list, with one kwargs object or one per name) as bundle configs."""
    if names is None:
        return []
    names = [names] if isinstance(names, str) else list(names)
    if not isinstance(kwargs, list):
        kwargs = [kwargs or {} for _ in names]
    return [{"_target_": class_path(lookup("transform", name, "dataset.normalization"), MONAI_TRANSFORMS),
             **extra, "keys": "image"} for name, extra in zip(names, kwargs)]


def label_dtype(labels):
    """The data type of label maps, as ``LabelScheme`` makes them: uint8 where the values fit."""
    return "uint8" if max(labels.values) < 256 else "int32"


def decoding(labels, threshold):
    """A ``$`` expression of a function: per-channel probabilities (C, ...) -> a label map (1, ...), as
    ``LabelScheme.decode`` does it."""
    dtype = f"torch.{label_dtype(labels)}"
    if labels.mode == "labels":
        return (f"$lambda p: (lambda best: torch.where(best.values > {threshold!r}, torch.as_tensor("
                f"{list(labels.values)}, dtype={dtype})[best.indices], 0).to({dtype}))(p.max(0))[None]")
    if labels.mode == "classes":
        index = "p.argmax(0)"
    else:
        index = painted(labels, f"(p > {threshold!r})")
    return f"$lambda p: torch.as_tensor({[0, *labels.paint_values]}, dtype={dtype})[{index}][None]"


def painted(labels, masks):
    """An expression of the channel (1-based, 0 for none) whose value ``LabelScheme.paint`` leaves at each voxel of
    the region or label ``masks`` (an expression of booleans (C, ...))."""
    if labels.nested:  # the innermost region whose outer ones all pass too
        return f"{masks}.int().cumprod(0).sum(0)"
    # Later channels paint over earlier ones: the last channel that fires.
    return f"({masks}.int() * torch.arange(1, {len(labels.region_sets) + 1})[:, None, None, None]).amax(0)"


def component_clean_up(labels):
    """``unet3d.predict.postprocess.clean_label_map`` on a label map (1, ...): split into region (or label)
    masks, remove small components from each mask on its own, paint the masks back."""
    dtype = f"torch.{label_dtype(labels)}"
    members = [list(region) for region in labels.region_sets]
    return [
        transform("Lambdad", keys="pred", func=f"$lambda p: torch.stack([torch.isin(p[0], torch.as_tensor(v)) "
                                                f"for v in {members}])"),
        # One mask at a time: given all at once, scikit-image would join components across masks.
        transform("Lambdad", keys="pred", func="$lambda m: torch.stack([@remove_small_objects(mask) for mask in m])"),
        transform("Lambdad", keys="pred", func=f"$lambda m: torch.as_tensor({[0, *labels.paint_values]}, "
                                                f"dtype={dtype})[{painted(labels, 'm')}][None]"),
    ]


def postprocessing(experiment, prediction):
    """Activation, the mask outside a skull-stripped brain, inversion to the scan's grid, decoding, saving."""
    activation = prediction.activation or experiment.labels.activation
    steps = []
    if activation != "none":
        steps.append(transform("Activationsd", keys="pred", **{activation: True}))
    if prediction.mask_to_nonzero:
        signal = "(d['image'].as_tensor() != 0).any(0, keepdim=True)"
        masked = (f"torch.cat([torch.where({signal}, d['pred'][:1], 1.0), d['pred'][1:] * {signal}])"
                  if activation == "softmax" else f"d['pred'] * {signal}")
        steps.append(transform("Lambda", func=f"$lambda d: {{**d, 'pred': {masked}}}"))
    steps.append(transform("Invertd", keys="pred", transform="@preprocessing", orig_keys="image",
                           nearest_interp=False))
    if activation == "softmax":
        # Voxels outside a crop come back as 0 in every channel: they are background.
        steps.append(transform("Lambdad", keys="pred", func="$lambda p: torch.cat([(1 - p[1:].sum(0, keepdim=True))"
                                                            ".clamp(0, 1), p[1:]])"))
    steps.append(transform("Lambdad", keys="pred", func=decoding(experiment.labels, prediction.threshold)))
    if prediction.min_component_size:
        steps.extend(component_clean_up(experiment.labels))
    steps.append(transform("SaveImaged", keys="pred", output_dir="@output_dir", output_postfix="",
                           separate_folder=False, resample=False, output_dtype=label_dtype(experiment.labels),
                           print_log=False,
                           output_name_formatter="@output_name", savepath_in_metadict=True))
    return steps


def image_suffixes(experiment):
    """How a case's image files are named after its id (``["_flair.nii.gz", "_t1.nii.gz", ...]``), from the
    config's first case; None for cases of one image."""
    cases = [case for group in experiment.groups.values() for case in group]
    if not cases or len(cases[0].images) == 1:
        return None
    names = [os.path.basename(path) for path in cases[0].images]
    if all(name.startswith(cases[0].id) for name in names):
        return [name[len(cases[0].id):] for name in names]
    return [f"_{index:04d}.nii.gz" for index in range(len(names))]  # nnU-Net's naming


def channel_order(experiment):
    """A name per input channel, from how the config's first case names its images (``flair``, ``t1``, ...;
    ``channel0``, ... for nnU-Net's numbers)."""
    suffixes = image_suffixes(experiment)
    names = ["image"] if suffixes is None else [suffix.split(".nii")[0].lstrip("_-.") for suffix in suffixes]
    if isinstance(experiment.in_channels, int) and len(names) != experiment.in_channels:
        names = [""] * experiment.in_channels  # the channels of one 4D image file
    return [name if name and not name.isdigit() else f"channel{index}" for index, name in enumerate(names)]


def modality(channel_names):
    """``"CT"`` or ``"MR"`` when every input channel's name says so (``CT``; ``flair``, ``t1``, ``adc``, ...), else
    the bundle specification's ``"n/a"``."""
    kinds = {"CT" if key == "ct" else "MR" if key in MR_CHANNELS else "n/a"
             for key in (re.sub(r"[^a-z0-9]", "", name.lower()) for name in channel_names)}
    return kinds.pop() if len(kinds) == 1 else "n/a"


def tensor(form, kind, names, dtype, shape, patch, value_range=()):
    """One tensor of ``network_data_format`` (the bundle specification's keys); ``names``: channel -> name (label
    value -> name for a "segmentation", which has one channel)."""
    return {"type": "image", "format": form, "modality": kind,
            "num_channels": 1 if form == "segmentation" else len(names), "spatial_shape": shape, "dtype": dtype,
            "value_range": list(value_range), "is_patch_data": patch,
            "channel_def": {str(key): name for key, name in names.items()}}


def network_data_format(experiment):
    """``metadata.json``'s ``network_data_format``: the network's input (its channels by name), its output (a
    channel per label, region or class, by name) and the label map a run writes (``post_processed_outputs``)."""
    labels, window = experiment.labels, experiment.window
    channels = channel_order(experiment)
    kind = modality(channels)
    shape = list(window) if window else ["*", "*", "*"]
    outputs = ["background", *labels.names] if labels.mode == "classes" else labels.names
    label_map = {0: "background", **dict(zip(labels.values, labels.names))}
    return {
        "inputs": {"image": tensor("hounsfield" if kind == "CT" else "magnitude", kind, dict(enumerate(channels)),
                                   "float32", shape, window is not None)},
        # The specification's "labels": one-hot channels read by their largest; "classes": need not be one-hot.
        "outputs": {"pred": tensor("labels" if labels.mode == "classes" else "classes", "n/a",
                                   dict(enumerate(outputs)), "float32", shape, window is not None)},
        # What the bundle's run writes: each case's label map on its scan's grid.
        "post_processed_outputs": {"pred": tensor("segmentation", "n/a", label_map, label_dtype(labels),
                                                  ["*", "*", "*"], False, (0, max(labels.values)))},
    }


def metadata(experiment, versions):
    """``configs/metadata.json``, valid under ``METADATA_SCHEMA``; ``versions`` of the packages installed."""
    labels, channels = experiment.labels, channel_order(experiment)
    return {
        "schema": METADATA_SCHEMA,
        "version": "0.1.0",
        "changelog": {"0.1.0": "exported by unet3d-export"},
        "monai_version": versions["monai"],
        "pytorch_version": versions["torch"].split("+")[0],
        "numpy_version": versions["numpy"],
        "required_packages_version": {"nibabel": versions["nibabel"]},
        "name": experiment.filename.stem if experiment.filename else "unet3d model",
        "task": "3D segmentation",
        "description": f"{experiment.model.name} trained with unet3d; label mode {labels.mode}, labels "
                       f"{list(labels.values)}",
        "authors": "unet3d",
        "copyright": "",
        "data_type": "nibabel",
        "image_classes": f"{len(channels)} channel(s) ({', '.join(channels)}; {modality(channels)}), preprocessed "
                         "by the transforms of inference.json",
        "pred_classes": f"{labels.n_channels} channel(s) of logits ({labels.mode}); the run writes a label map of "
                        f"the values {[0, *labels.values]}",
        "network_data_format": network_data_format(experiment),
    }


def case_finding(suffixes):
    """The bundle's ``datalist`` and ``output_name``: one case per file of ``dataset_dir`` (one image per
    case), or per sub-folder ``<id>/<id><suffix>`` (several), each written as ``<id>.nii.gz``."""
    if suffixes is None:
        return {
            "datalist": "$[{'image': [f]} for f in sorted(glob.glob(os.path.join(@dataset_dir, '*.nii*')))]",
            "output_name": "$lambda meta, saver: {'subject': os.path.basename(str(meta['filename_or_obj']))"
                           ".split('.nii')[0]}",
        }
    return {
        "image_suffixes": suffixes,
        "datalist": "$[{'image': [os.path.join(d, os.path.basename(d) + s) for s in @image_suffixes]} "
                    "for d in sorted(glob.glob(os.path.join(@dataset_dir, '*'))) if os.path.isdir(d)]",
        "output_name": "$lambda meta, saver: {'subject': os.path.basename(os.path.dirname(str("
                       "meta['filename_or_obj'])))}",
    }


def bundle_inferer(window, divisor, prediction):
    """The bundle's sliding-window inference of ``(image, network)``: MONAI's ``SlidingWindowInferer`` with the
    window capped at each image as ``unet3d.models.inferer.capped_window`` does (a window far over the image's
    edge is mostly zero padding, which instance normalisation averages over); the image's own size without a
    window."""
    options = {"sw_batch_size": prediction.sw_batch_size, "overlap": prediction.overlap, "mode": "gaussian"}
    if window is None:
        return {"_target_": "monai.inferers.SlidingWindowInferer", "roi_size": list(WHOLE_VOLUME), **options}
    arguments = ", ".join(f"{key}={value!r}" for key, value in options.items())
    return (f"$lambda image, network: monai.inferers.SlidingWindowInferer([size if size <= length else "
            f"min(size, max(step, -(-length // step) * step)) for size, length, step in zip({list(window)}, "
            f"image.shape[2:], {list(divisor)})], {arguments})(image, network)")


def inference_config(experiment, prediction, window):
    """``configs/inference.json``: run with ``python -m monai.bundle run --config_file configs/inference.json
    --bundle_root <bundle> --dataset_dir <cases> --output_dir <predictions>``."""
    settings = experiment.dataset.settings
    if settings is None:
        raise UserError(f"config key 'dataset.name': a bundle can be written for SegmentationDataset's "
                        f"preprocessing only, not {experiment.dataset.component.name}'s; use --formats "
                        "torchscript onnx")
    return {
        "imports": ["$import glob", "$import os", "$import numpy",
                    "$from skimage.measure import label as component_labels", "$import torch", "$import monai"],
        "bundle_root": ".",
        "dataset_dir": "$@bundle_root + '/cases'",
        "output_dir": "$@bundle_root + '/predictions'",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        **case_finding(image_suffixes(experiment)),
        "network_def": network_def(experiment.model),
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": f"{MONAI_TRANSFORMS}.Compose", "transforms": preprocessing(settings.for_split(None))},
        "dataset": {"_target_": "monai.data.Dataset", "data": "@datalist", "transform": "@preprocessing"},
        "inferer": bundle_inferer(window, model_divisor(experiment.model, window), prediction),
        # unet3d-predict's rule, components of under N voxels touching by a face, whatever scikit-image's version
        # (MONAI's RemoveSmallObjects removes "at most N" with scikit-image 0.26 and later, "under N" before).
        # ``mask &`` keeps the mask's metadata, which saving the label map needs.
        "remove_small_objects": "$lambda mask: mask & (lambda labels: torch.as_tensor((numpy.bincount("
                                f"labels.ravel()) >= {max(prediction.min_component_size or 0, 1)})[labels] & "
                                "(labels > 0)))(component_labels(numpy.asarray(mask), connectivity=1))",
        "postprocessing": {"_target_": f"{MONAI_TRANSFORMS}.Compose",
                           "transforms": postprocessing(experiment, prediction)},
        # One case: its logits, then the postprocessing, which writes the label map; returns the file written.
        "predict": "$torch.no_grad()(lambda item: @postprocessing({**item, 'pred': monai.data.MetaTensor("
                   "@inferer(item['image'].as_tensor()[None].to(@device), @network)[0].float().cpu())})"
                   "['pred'].meta['saved_to'])",
        "initialize": ["$@network.load_state_dict(torch.load(@bundle_root + '/models/model.pt', map_location=@device, "
                       "weights_only=True))", "$@network.eval()"],
        "run": ["$[@predict(item) for item in @dataset]"],
    }
