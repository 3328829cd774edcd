"""Typed settings, one class per config section: each field's type, default, bounds and meaning.

These classes are the one source of truth for the config's own keys. ``Settings.parse``
checks a section and fills in its defaults (null means the default); every stage below
receives the resulting objects and trusts them.
"""

import dataclasses
import shlex
from typing import ClassVar

from unet3d.config.batch_augmentation import parse_batch_augmentation
from unet3d.config.keys import REQUIRED, keys_of, setting, unknown_key
from unet3d.config.labels import check_region_keys
from unet3d.config.resolve import Component
from unet3d.errors import UserError

SPLITS = ("training", "validation")
TRACKERS = ("tensorboard", "mlflow")
# torch.manual_seed takes 64-bit seeds; a larger one fails on the first batch.
SEED_MAX = 2**63 - 1


class Settings:
    """Parsing and defaults shared by the settings classes (which are frozen dataclasses)."""

    aliases: ClassVar[dict] = {}

    @classmethod
    def keys(cls):
        """``{name: Key}`` of the section's keys."""
        return keys_of(cls)

    @classmethod
    def defaults(cls):
        """``{name: default}`` of the keys that have one."""
        return {name: key.default for name, key in cls.keys().items() if key.default is not REQUIRED}

    @classmethod
    def parse(cls, given, where, allow_unknown_keys=False, extra_ok=False, skip=()):
        """The section ``given`` (a JSON object) checked, with defaults filled in; errors name ``where``.

        Unknown keys are errors; with ``allow_unknown_keys`` they are warnings and are
        removed from ``given``. With ``extra_ok`` they are left alone (the keyword arguments
        of a named section's class), as are the names in ``skip`` (read by another class).
        """
        given = {} if given is None else given
        if not isinstance(given, dict):
            raise UserError(f"config key '{where}' must be an object")
        keys = cls.keys()
        values = {}
        for name, value in canonical(given, cls.aliases, where).items():
            if name in keys:
                values[name] = keys[name].parse(value, f"{where}.{name}")
            elif not extra_ok and name not in skip:
                unknown_key(f"{where}.{name}", name, [*keys, *cls.aliases], allow_unknown_keys)
                del given[name]
        missing = [name for name, key in keys.items() if key.default is REQUIRED and name not in values]
        if missing:
            raise UserError(f"config key '{where}.{missing[0]}' is missing (expected {keys[missing[0]].expected()})")
        return cls(**values)

    def as_dict(self):
        """The settings as JSON-able values (tuples as lists)."""
        return {name: jsonable(getattr(self, name)) for name in self.keys()}


def canonical(given, aliases, where):
    """``given`` with aliases (3DUnetCNN's spellings) renamed; both spellings at once is an error."""
    result = {}
    for name, value in given.items():
        name_to_use = aliases.get(name, name)
        if name_to_use != name and name_to_use in given:
            raise UserError(f"config key '{where}' has both '{name}' and '{name_to_use}'; keep one")
        result[name_to_use] = value
    return result


def jsonable(value):
    """A setting's value as the config writes it: tuples as lists, typed entries as their JSON objects."""
    if isinstance(value, tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, Component):
        return value.spec
    return value


@dataclasses.dataclass(frozen=True)
class TrainingSettings(Settings):
    """How the model is trained, saved and stopped; `null` means the default."""

    n_epochs: int = setting(["integer"], 1, "epochs to train; raising it continues a finished run", minimum=1)
    batch_size: int = setting(["integer"], 1, "training batch size", minimum=1)
    validation_batch_size: int = setting(["integer"], 1, "validation batch size", minimum=1)
    validation_interval: int = setting(["integer"], 1, "validate every k epochs, and after the last; the best model "
                                                       "and early stopping count validated epochs", minimum=1)
    validation_cases: int = setting(["integer"], None, "validate during training on the first n of the validation "
                                                       "cases (default: all); the predictions and evaluation after "
                                                       "training cover all of them", minimum=1)
    samples_per_epoch: int = setting(["integer"], None, "training samples per epoch, by repeating the shuffled cases "
                                                        "(default: all cases)", minimum=1)
    amp: object = setting(["boolean", "string"], False, "false; true or \"fp16\": float16 autocast on CUDA; "
                                                        "\"bf16\": bfloat16 autocast",
                          choices=(False, True, "fp32", "fp16", "bf16"))
    compile: bool = setting(["boolean"], False, "`torch.compile` the model (also `UNET3D_COMPILE=1`)")
    channels_last: bool = setting(["boolean"], False, "model weights channels-last (NDHWC): faster steps for some "
                                                      "networks, slower for others (docs/performance.md)")
    clip_grad_norm: float = setting(["number"], None, "clip the gradients' total norm to this", above=0)
    metric_to_monitor: str = setting(["string"], "val_loss", "CSV column that picks `model_best.pth`, feeds "
                                                             "ReduceLROnPlateau and early stopping")
    metric_mode: str = setting(["string"], None, "\"min\" or \"max\" (default: losses are minimized, `val_dice_*` "
                                                 "maximized)", choices=("min", "max"))
    save_best: bool = setting(["boolean"], True, "write `model_best.pth` when the monitored metric improves")
    save_every_n_epochs: int = setting(["integer"], None, "write `model_epoch<k>.pth` every k epochs", minimum=1)
    save_last_n_models: int = setting(["integer"], None, "keep only the last n `model_epoch<k>.pth`", minimum=1)
    early_stopping_patience: int = setting(["integer"], None, "stop after this many epochs in a row without "
                                                              "improvement", minimum=1)
    pretrained: str = setting(["string"], None, "weights a fresh run starts from (relative to the config): parameters "
                                                "whose names and shapes match are loaded, the others keep their "
                                                "initialisation (3DUnetCNN's `--pretrained_model_filename`)")
    freeze: list = setting(["list"], None, "parameter-name prefixes kept frozen, e.g. [\"input_block\", "
                                           "\"downsamples\"]: not trained and left out of the optimizer",
                           items="string")
    seed: int = setting(["integer"], 0, "seeds Python, NumPy and torch, and every epoch's batches", minimum=0,
                       maximum=SEED_MAX)
    deterministic: bool = setting(["boolean"], False, "also ask torch for deterministic algorithms")
    trackers: list = setting(["list", "null"], None, "experiment trackers that also get the training log's figures: "
                                                     "\"tensorboard\", \"mlflow\" (default: none; also `--trackers`)",
                             items="string")
    tracker_image_interval: int = setting(["integer"], 10, "TensorBoard: the middle slice of a validation case with its "
                                                           "prediction, every k epochs (when validated)", minimum=1)

    def __post_init__(self):
        unknown = [name for name in self.trackers or () if name not in TRACKERS]
        if unknown:
            raise UserError(f"config key 'training.trackers' holds {unknown[0]!r}; expected names among "
                            + ", ".join(f'"{name}"' for name in TRACKERS))
        if self.monitor_mode is None:
            raise UserError(f"config key 'training.metric_mode' is needed: is {self.metric_to_monitor!r} "
                            "to be minimized or maximized?")

    @property
    def monitor_mode(self):
        """``metric_mode``, else "max" for a Dice column and "min" for a loss (None when neither)."""
        return self.metric_mode or column_mode(self.metric_to_monitor)


def column_mode(column):
    """"max" for Dice columns, "min" for losses, None for anything else."""
    return "max" if "dice" in column else "min" if "loss" in column else None


@dataclasses.dataclass(frozen=True)
class PredictionSettings(Settings):
    """Optional: the sliding-window inference of validation, of the predictions after training and of `unet3d-predict`."""

    window: tuple = setting(["list", "null"], None, "window size, at most the volume's (default: `dataset.patch_size`, "
                                                    "else `dataset.desired_shape`, else the whole volume)", triple=int)
    overlap: float = setting(["number"], 0.5, "overlap of neighbouring windows", minimum=0, below=1)
    sw_batch_size: int = setting(["integer"], 4, "windows per forward pass", minimum=1)
    activation: str = setting(["string"], None, "\"sigmoid\", \"softmax\" or \"none\" (default: \"sigmoid\", one "
                                                "channel per label or region)", choices=("sigmoid", "softmax", "none"))
    threshold: float = setting(["number"], 0.5, "probability a voxel needs to be labelled", above=0, below=1)
    tta: bool = setting(["boolean"], False, "average 8 mirrorings (8x the time) after training and in "
                                            "`unet3d-predict` (also `--tta`); not in validation")
    mask_to_nonzero: bool = setting(["boolean"], False, "no foreground where every channel of the network's input "
                                                        "is 0 (outside a skull-stripped brain; with a normalization "
                                                        "that keeps zeros, e.g. `\"nonzero\": true`)")
    min_component_size: int = setting(["integer"], None, "remove connected components under this many voxels from "
                                                         "each region of the written label maps, instead of the "
                                                         "post-processing a cross-validation run chooses (0: no "
                                                         "clean-up at all; default: the run's choice, else none)",
                                      minimum=0)
    output_format: str = setting(["string"], None, "format of the written predictions: \"nifti\" (`.nii.gz`), "
                                                   "\"nrrd\" or \"mha\" (default: the input's; NIfTI for DICOM "
                                                   "series)", choices=("nifti", "nrrd", "mha"))

    def override(self, **values):
        """A copy with the command line's values (``--overlap`` ...; None: keep), checked as the config's are."""
        keys, changes = self.keys(), {}
        for name, value in values.items():
            if value is not None and not keys[name].accepts(value):
                raise UserError(f"--{name} {value}: must be {keys[name].expected()} (like config key 'prediction.{name}')")
            if value is not None:
                changes[name] = keys[name].parse(value, f"prediction.{name}")
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class CrossValidationSettings(Settings):
    """Optional: split `training_filenames` into folds, one model per fold (3DUnetCNN's `folds` and `seed` are accepted)."""

    aliases: ClassVar[dict] = {"folds": "n_folds", "seed": "random_seed"}

    n_folds: int = setting(["integer"], REQUIRED, "number of folds", minimum=2)
    random_seed: int = setting(["integer"], 0, "seed of the split (folds depend only on it and the case ids)",
                              minimum=0, maximum=SEED_MAX)
    group_by: str = setting(["string"], None, "a key of each case (e.g. \"subject\"): cases sharing it stay in one fold")
    stratify_by: str = setting(["string"], None, "a key of each case to balance over folds, or \"labels_present\"")


@dataclasses.dataclass(frozen=True)
class SchedulerOptions(Settings):
    """The keys of the `scheduler` section that unet3d reads itself."""

    step_per_batch: bool = setting(["boolean"], False, "step after every batch (OneCycleLR and the like) instead "
                                                       "of every epoch")
    schedulers: list = setting(["list"], None, "for SequentialLR and ChainedScheduler: the inner schedulers, built "
                                               "the same way")


@dataclasses.dataclass(frozen=True)
class LabelSettings(Settings):
    """The keys of the `dataset` section that say what the labels are (see ``unet3d.config.labels``)."""

    labels: tuple = setting(["list", "null"], None, "the label values, e.g. [2, 1, 4]; needed to train", items="integer")
    label_mode: str = setting(["string"], None, "\"regions\": nested regions, outermost first, one sigmoid channel each "
                                                "(BraTS WT, TC, ET), or the general `regions`; \"labels\": one "
                                                "sigmoid channel per label; \"classes\": mutually exclusive classes, "
                                                "softmax over background + labels (default: \"regions\" with "
                                                "`setup_label_hierarchy` or `regions`, else \"labels\")",
                              choices=("regions", "labels", "classes"))
    label_names: tuple = setting(["list", "null"], None, "a name per label (region, class), in `labels`' order "
                                                         "(in `regions`' order with `regions`), for "
                                                         "`val_dice_<name>` columns, plots and evaluation (default: "
                                                         "WT/TC/ET for BraTS regions, `region<value>` for other "
                                                         "nested regions, `region<v1>_<v2>` for `regions`, else "
                                                         "`label<value>`)",
                                 items="string")
    setup_label_hierarchy: bool = setting(["boolean"], False, "3DUnetCNN's spelling of `\"label_mode\": \"regions\"`")
    regions: tuple = setting(["list", "null"], None, "regions that overlap without nesting, as nnU-Net's dataset.json "
                                                     "gives them: a list of label values per region, one sigmoid "
                                                     "channel each, e.g. [[1, 2], [2, 3], [3]] (label_mode "
                                                     "\"regions\"; `labels` defaults to their values); needs "
                                                     "`regions_class_order`", items="list")
    regions_class_order: tuple = setting(["list", "null"], None, "with `regions`: the label value each region "
                                                                 "paints where its probability passes "
                                                                 "`prediction.threshold`, in order, later regions "
                                                                 "over earlier ones (nnU-Net's decoding)",
                                         items="integer")

    def __post_init__(self):
        values = list(self.labels or ())
        if any(value <= 0 for value in values) or len(set(values)) != len(values):
            raise UserError(f"config key 'dataset.labels' must be distinct positive label values (0 is the "
                            f"background), got {values}")
        if self.setup_label_hierarchy and self.label_mode not in (None, "regions"):
            raise UserError(f"config key 'dataset.label_mode' is \"{self.label_mode}\" but "
                            "'dataset.setup_label_hierarchy' asks for nested regions; keep one")
        check_region_keys(self.regions, self.regions_class_order, self.labels, self.label_mode)
        if self.label_names is None:
            return
        counted, key = ((self.regions, "region of 'dataset.regions'") if self.regions
                        else (self.labels, "label of 'dataset.labels'"))
        if counted is None or len(self.label_names) != len(counted):
            raise UserError(f"config key 'dataset.label_names' must have one name per {key} "
                            f"({len(counted or [])}), got {len(self.label_names)}")
        if len(set(self.label_names)) != len(self.label_names) or not all(
                name and name.replace("_", "").replace("-", "").isalnum() for name in self.label_names):
            raise UserError(f"config key 'dataset.label_names' must be distinct names of letters, digits, '_' and "
                            f"'-' (they become CSV columns), got {list(self.label_names)}")

    @classmethod
    def from_flags(cls, labels, label_mode=None, label_names=None):
        """The settings of ``--labels``, ``--label_mode`` and ``--label_names``, checked as the config's keys are;
        an error names the flags given and the config key's rule."""
        given = {"labels": labels, "label_mode": label_mode, "label_names": label_names}
        given = {name: list(value) if isinstance(value, tuple) else value
                 for name, value in given.items() if value is not None}
        try:
            return cls.parse(given, "dataset")
        except UserError as error:
            flags = shlex.join(word for name, value in given.items()
                               for word in (f"--{name}", *map(str, value if isinstance(value, list) else [value])))
            raise UserError(f"{flags}: {error}") from None

    @property
    def mode(self):
        """The label mode, with 3DUnetCNN's ``setup_label_hierarchy`` and general ``regions`` as ``regions``."""
        return self.label_mode or ("regions" if self.setup_label_hierarchy or self.regions else "labels")


@dataclasses.dataclass(frozen=True)
class Augmentation(Component):
    """One entry of `dataset.spatial_augmentations` or `intensity_augmentations`: a MONAI dictionary transform
    ``{"name": ..., **kwargs}``, whose ``keys`` unet3d fills in."""

    @classmethod
    def parse(cls, entry, where):
        """The entry ``entry`` of a list of augmentations, checked; errors name ``where``."""
        if not isinstance(entry, dict) or "name" not in entry:
            raise UserError(f"config key '{where}' must be an object with a 'name'")
        return cls("transform", where, entry["name"], {k: v for k, v in entry.items() if k != "name"})

    @property
    def sets_mode(self):
        """Whether the entry names its interpolation ``mode``; else unet3d gives the label nearest neighbour."""
        return "mode" in self.options

    @property
    def keeps_label_values(self):
        """Whether the label is resampled by nearest neighbour (unet3d's choice, or the entry's label mode): then
        moving label values and moving target channels give the same targets."""
        if not self.sets_mode:
            return True
        mode = self.options["mode"]
        label_mode = mode[-1] if isinstance(mode, (list, tuple)) and mode else mode
        return label_mode in ("nearest", 0)


def parse_augmentations(entries, key):
    """The ``Augmentation`` of each ``{"name": ..., **kwargs}`` of the list at config key ``key``."""
    return tuple(Augmentation.parse(entry, f"{key}[{index}]") for index, entry in enumerate(entries))


@dataclasses.dataclass(frozen=True)
class DatasetSettings(Settings):
    """The preprocessing, patch and augmentation settings of `SegmentationDataset`.

    ``training`` and ``validation`` hold settings that replace the others for that split
    (see ``for_split``); ``split`` is the split these settings are for (None: all).
    """

    normalization: object = setting(["string", "list", "null"], None, "a MONAI intensity transform name, or a list "
                                                                      "of names")
    normalization_kwargs: object = setting(["object", "list", "null"], None, "its keyword arguments: one object, or "
                                                                             "one per name")
    crop_foreground: bool = setting(["boolean"], False, "crop every case to the bounding box of its non-zero image voxels")
    resample: bool = setting(["boolean"], False, "resize every case to `desired_shape`")
    desired_shape: tuple = setting(["list", "null"], None, "with `resample`: the shape", triple=int)
    spacing: tuple = setting(["list", "null"], None, "resample to this voxel spacing in mm", triple=float)
    patch_size: tuple = setting(["list", "null"], None, "train on random patches of this size", triple=int)
    divisible_by: tuple = setting(["list", "null"], None, "pad volumes to a multiple of this (the network's total "
                                                          "stride)", triple=int)
    foreground_oversampling: float = setting(["number"], 0.33, "share of patches centred on the label",
                                             minimum=0, maximum=1)
    foreground_sampling: str = setting(["string"], "voxels", "how a foreground centre is drawn: \"voxels\" (a "
                                       "foreground voxel uniformly, so every label value in proportion to its size) or "
                                       "\"classes\" (a label value present in the case uniformly, then one of its "
                                       "voxels, as nnU-Net: small structures are centred as often as large ones)",
                                       choices=("voxels", "classes"))
    patches_per_case: int = setting(["integer"], 1, "patches drawn from each case per epoch", minimum=1)
    spatial_augmentations: tuple = setting(["list", "null"], None, "MONAI dictionary transforms `{\"name\": ..., "
                                                                   "**kwargs}` for image and label, training only",
                                           entries=parse_augmentations)
    intensity_augmentations: tuple = setting(["list", "null"], None, "MONAI dictionary transforms for the image only, "
                                                                     "training only",
                                             entries=parse_augmentations)
    batch_augmentation: dict = setting(["string", "object", "null"], None, "augmentation of whole batches on the "
                                       "training device, after the MONAI lists: a preset, \"default\" (long plans' "
                                       "MONAI augmentation) or \"nnunet\" (nnU-Net v2's), or `{\"preset\": "
                                       "..., <augmentation>: {<field>: value}}` (see below); training only",
                                       entries=parse_batch_augmentation)
    training: dict = setting(["object", "null"], None, "dataset settings that replace the ones above for the "
                                                       "training split")
    validation: dict = setting(["object", "null"], None, "dataset settings that replace the ones above for the "
                                                         "validation split")

    RANDOM: ClassVar[tuple] = ("foreground_oversampling", "foreground_sampling", "patches_per_case",
                               "spatial_augmentations", "intensity_augmentations", "batch_augmentation")

    def __post_init__(self):
        if self.resample and self.patch_size is None and self.desired_shape is None:
            raise UserError("config key 'dataset.desired_shape' is missing: 'dataset.resample' resizes every case to it")

    @classmethod
    def parse(cls, given, where, allow_unknown_keys=False, extra_ok=False, skip=()):
        """As ``Settings.parse``; each split's replacements are checked against the same keys."""
        settings = super().parse(given, where, allow_unknown_keys, extra_ok, skip=("name", *LabelSettings.keys()))
        split_keys = [name for name in cls.keys() if name not in SPLITS]
        replacements = {}
        for split in SPLITS:
            override = getattr(settings, split) or {}
            values = {}
            for name, value in list(override.items()):
                if name in split_keys:
                    values[name] = cls.keys()[name].parse(value, f"{where}.{split}.{name}")
                else:
                    unknown_key(f"{where}.{split}.{name}", name, split_keys, allow_unknown_keys)
                    del override[name]
            replacements[split] = values or None
        return dataclasses.replace(settings, **replacements)

    def for_split(self, split):
        """The settings of one split: augmentation for training only, then ``dataset.<split>`` on top."""
        changes = {} if split == "training" else {"spatial_augmentations": None, "intensity_augmentations": None,
                                                  "batch_augmentation": None}
        changes.update((split in SPLITS and getattr(self, split)) or {})
        return dataclasses.replace(self, **changes, training=None, validation=None)

    @property
    def inference_window(self):
        """The window validation and prediction use unless ``prediction.window`` says otherwise."""
        return self.patch_size or self.desired_shape

    def preprocessing_settings(self):
        """The settings of the cacheable preprocessing (everything but patches and augmentation), JSON-able."""
        return {name: value for name, value in self.as_dict().items() if name not in (*self.RANDOM, *SPLITS)}
