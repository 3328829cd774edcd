"""The config's one declared schema: every section and key, its type, default, allowed values and meaning.

Validation (``validate``), the defaults the code uses (``settings``), the resolved view
that ``unet3d-train --check`` prints and ``docs/configuration.md`` (``markdown``) all come
from the tables below. ``python -m unet3d.config > docs/configuration.md``
regenerates the documentation.
"""

import copy
import difflib
import inspect
import json
import logging
import re
from dataclasses import dataclass, field

from unet3d.errors import UserError

log = logging.getLogger("unet3d")

REQUIRED = object()
FILENAMES_SUFFIX = "_filenames"
# Names close to these in a case entry are taken for misspellings; other keys are case
# metadata (``"subject"``, ``"grade"``) that cross_validation.group_by/stratify_by may name.
MISSPELLING_CUTOFF = 0.75


@dataclass(frozen=True)
class Key:
    """One config key: JSON types, default (``REQUIRED`` when none), allowed values and a description."""

    types: tuple
    default: object = REQUIRED
    description: str = ""
    choices: tuple = ()
    minimum: float = None
    maximum: float = None
    below: float = None  # exclusive upper bound
    above: float = None  # exclusive lower bound
    items: str = None  # JSON type of a list's items

    def expected(self):
        """What the key must hold, in words: ``a positive integer``, ``a number in [0, 1)``, ..."""
        if self.choices:
            return "one of " + ", ".join(json.dumps(c) for c in self.choices)
        words = []
        for kind in self.types:
            if kind == "integer" and self.minimum == 1:
                words.append("a positive integer")
            elif kind == "integer" and self.minimum is not None:
                words.append(f"an integer of at least {self.minimum}")
            elif kind == "number" and self.above == 0:
                words.append("a positive number")
            elif kind == "number" and self.minimum is not None and self.below is not None:
                words.append(f"a number in [{self.minimum}, {self.below})")
            elif kind == "number" and self.minimum is not None and self.maximum is not None:
                words.append(f"a number from {self.minimum} to {self.maximum}")
            elif kind == "list" and self.items:
                words.append(f"a list of {TYPE_NOUNS[self.items].split()[-1]}s")
            else:
                words.append(TYPE_NOUNS[kind])
        return " or ".join(words)

    def accepts(self, value):
        """Whether ``value`` has one of the types and lies in the allowed range or choices."""
        if value is None and self.default is not REQUIRED:
            return True  # null means the default
        if not any(TYPE_CHECKS[kind](value) for kind in self.types):
            return False
        if self.choices and not any(value == c and type(value) is type(c) for c in self.choices):
            return False
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if self.minimum is not None and value < self.minimum:
                return False
            if self.below is not None and value >= self.below:
                return False
            if self.above is not None and value <= self.above:
                return False
            if self.maximum is not None and value > self.maximum:
                return False
        if isinstance(value, list) and self.items:
            return all(TYPE_CHECKS[self.items](item) for item in value)
        return True


@dataclass(frozen=True)
class Section:
    """A top-level object of the config.

    ``named`` sections are ``{"name": ..., **kwargs}`` built by the resolver, which checks
    the kwargs against the class's signature; their ``keys`` are the extra keys unet3d
    itself reads (for ``dataset``: the keys of ``SegmentationDataset``).
    """

    description: str
    keys: dict = field(default_factory=dict)
    named: bool = False
    required: bool = False
    aliases: dict = field(default_factory=dict)
    keys_for: str = None  # for a named section: the class name the keys belong to (None: any)


TYPE_CHECKS = {
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "list": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}
TYPE_NOUNS = {"integer": "an integer", "number": "a number", "boolean": "true or false", "string": "a string",
              "list": "a list", "object": "an object", "null": "null"}

TRIPLE = "three positive integers (one integer is repeated)"

SECTIONS = {
    "model": Section("the network: a class from `unet3d.models` or `monai.networks.nets` and its keyword arguments",
                     named=True, required=True),
    "optimizer": Section("a class from `torch.optim` and its keyword arguments (`params` is set by unet3d)",
                         named=True, required=True),
    "loss": Section("a class from `unet3d.losses`, `monai.losses` or `torch.nn` and its keyword arguments",
                    named=True, required=True),
    "scheduler": Section(
        "optional: a class from `torch.optim.lr_scheduler` and its keyword arguments (`optimizer` is set by unet3d)",
        named=True,
        keys={
            "step_per_batch": Key(("boolean",), False, "step after every batch (OneCycleLR and the like) instead of every epoch"),
            "schedulers": Key(("list",), None, "for SequentialLR and ChainedScheduler: the inner schedulers, built the same way"),
        },
    ),
    "dataset": Section(
        "the dataset class (`SegmentationDataset`) and its preprocessing, patch and augmentation settings",
        named=True, required=True, keys_for="SegmentationDataset",
        keys={
            "labels": Key(("list", "null"), None, "the label values, e.g. [2, 1, 4]; needed to train", items="integer"),
            "setup_label_hierarchy": Key(("boolean",), False, "labels are nested regions, outermost first (BraTS WT, TC, ET)"),
            "normalization": Key(("string", "list", "null"), None, "a MONAI intensity transform name, or a list of names"),
            "normalization_kwargs": Key(("object", "list", "null"), None, "its keyword arguments: one object, or one per name"),
            "crop_foreground": Key(("boolean",), False, "crop every case to the bounding box of its non-zero image voxels"),
            "resample": Key(("boolean",), False, "resize every case to `desired_shape`"),
            "desired_shape": Key(("integer", "list", "null"), None, f"with `resample`: {TRIPLE}"),
            "spacing": Key(("number", "list", "null"), None, "resample to this voxel spacing in mm (three positive numbers)"),
            "patch_size": Key(("integer", "list", "null"), None, f"train on random patches of this size: {TRIPLE}"),
            "divisible_by": Key(("integer", "list", "null"), None, "pad volumes to a multiple of this (the network's total stride)"),
            "foreground_oversampling": Key(("number",), 0.33, "share of patches centred on the label", minimum=0, maximum=1),
            "patches_per_case": Key(("integer",), 1, "patches drawn from each case per epoch", minimum=1),
            "spatial_augmentations": Key(("list", "null"), None,
                                         "MONAI dictionary transforms `{\"name\": ..., **kwargs}` for image and label, training only"),
            "intensity_augmentations": Key(("list", "null"), None, "MONAI dictionary transforms for the image only, training only"),
            "training": Key(("object", "null"), None, "dataset settings that replace the ones above for the training split"),
            "validation": Key(("object", "null"), None, "dataset settings that replace the ones above for the validation split"),
        },
    ),
    "training": Section(
        "how the model is trained, saved and stopped; `null` means the default",
        keys={
            "n_epochs": Key(("integer",), 1, "epochs to train; raising it continues a finished run", minimum=1),
            "batch_size": Key(("integer",), 1, "training batch size", minimum=1),
            "validation_batch_size": Key(("integer",), 1, "validation batch size", minimum=1),
            "samples_per_epoch": Key(("integer",), None, "training samples per epoch, by repeating the shuffled cases (default: all cases)", minimum=1),
            "amp": Key(("boolean", "string"), False, "false; true or \"fp16\": float16 autocast on CUDA; \"bf16\": bfloat16 autocast",
                       choices=(False, True, "fp32", "fp16", "bf16")),
            "compile": Key(("boolean",), False, "`torch.compile` the model (also `UNET3D_COMPILE=1`)"),
            "clip_grad_norm": Key(("number",), None, "clip the gradients' total norm to this", above=0),
            "metric_to_monitor": Key(("string",), "val_loss", "CSV column that picks `model_best.pth`, feeds ReduceLROnPlateau and early stopping"),
            "metric_mode": Key(("string",), None, "\"min\" or \"max\" (default: losses are minimized, `val_dice_*` maximized)",
                               choices=("min", "max")),
            "save_best": Key(("boolean",), True, "write `model_best.pth` when the monitored metric improves"),
            "save_every_n_epochs": Key(("integer",), None, "write `model_epoch<k>.pth` every k epochs", minimum=1),
            "save_last_n_models": Key(("integer",), None, "keep only the last n `model_epoch<k>.pth`", minimum=1),
            "early_stopping_patience": Key(("integer",), None, "stop after this many epochs in a row without improvement", minimum=1),
            "seed": Key(("integer",), 0, "seeds Python, NumPy and torch, and every epoch's batches"),
            "deterministic": Key(("boolean",), False, "also ask torch for deterministic algorithms"),
        },
    ),
    "cross_validation": Section(
        "optional: split `training_filenames` into folds, one model per fold (3DUnetCNN's `folds` and `seed` are accepted)",
        aliases={"folds": "n_folds", "seed": "random_seed"},
        keys={
            "n_folds": Key(("integer",), REQUIRED, "number of folds", minimum=2),
            "random_seed": Key(("integer",), 0, "seed of the split (folds depend only on it and the case ids)"),
            "group_by": Key(("string",), None, "a key of each case (e.g. \"subject\"): cases sharing it stay in one fold"),
            "stratify_by": Key(("string",), None, "a key of each case to balance over folds, or \"labels_present\""),
        },
    ),
    "prediction": Section(
        "optional: the sliding-window inference after training and in `unet3d-predict`",
        keys={
            "window": Key(("list",), None, "window size, three positive integers (default: `dataset.patch_size`, else "
                                           "`dataset.desired_shape`, else the whole volume)", items="integer"),
            "overlap": Key(("number",), 0.5, "overlap of neighbouring windows", minimum=0, below=1),
            "sw_batch_size": Key(("integer",), 4, "windows per forward pass", minimum=1),
            "min_component_size": Key(("integer",), 0, "remove connected components under this many voxels from each "
                                                       "region of the written label maps (BraTS: a few voxels of "
                                                       "enhancing tumour in a case without any score ET Dice 0)",
                                      minimum=0),
        },
    ),
}
OTHER_KEYS = {
    "decathlon_datalist": Key(("string",), None, "a Medical Segmentation Decathlon `dataset.json` (relative to the config) "
                                                  "whose `training` and `test` lists become `training_filenames` and `test_filenames`"),
}
ENTRY_KEYS = {
    "image": Key(("string", "list"), REQUIRED, "the case's image file, or one file per modality (always in the same order)"),
    "label": Key(("string",), None, "the label map (needed for training and validation cases)"),
    "id": Key(("string",), None, "the case's name in outputs (default: the common prefix of its image file names)"),
}
# Arguments unet3d passes itself; they are not config settings.
UNET3D_ARGUMENTS = frozenset({"params", "optimizer", "schedulers", "data", "split", "cache_dir", "with_label", "keys"})
GROUPS = {
    "training_filenames": "cases to train on (required; with `cross_validation` also validated on, fold by fold)",
    "validation_filenames": "cases to validate on after every epoch (without `cross_validation`)",
    "<group>_filenames": "any other group (e.g. `test`) is predicted after training into `predictions/<group>/`",
}


def defaults(section):
    """``{key: default}`` of a section's keys that have one."""
    return {name: key.default for name, key in SECTIONS[section].keys.items() if key.default is not REQUIRED}


def settings(config, section):
    """The section's keys with aliases renamed, defaults filled in and values checked."""
    spec = SECTIONS[section]
    given = config.get(section) or {}
    if not isinstance(given, dict):
        raise UserError(f"config key '{section}' must be an object")
    result = defaults(section)
    for name, value in _canonical(given, spec, section).items():
        if name not in spec.keys:
            unknown_key(f"{section}.{name}", name, [*spec.keys, *spec.aliases], allow_unknown_keys=False)
        _check_value(f"{section}.{name}", spec.keys[name], value)
        if value is not None:
            result[name] = value
    missing = [name for name in spec.keys if name not in result]
    if missing:
        raise UserError(f"config key '{section}.{missing[0]}' is missing (expected {spec.keys[missing[0]].expected()})")
    return result


def _canonical(given, spec, section):
    result = {}
    for name, value in given.items():
        canonical = spec.aliases.get(name, name)
        if canonical != name and canonical in given:
            raise UserError(f"config key '{section}' has both '{name}' and '{canonical}'; keep one")
        result[canonical] = value
    return result


def _check_value(where, key, value):
    if not key.accepts(value):
        raise UserError(f"config key '{where}' must be {key.expected()}, got {json.dumps(value)}")


def unknown_key(where, name, known, allow_unknown_keys):
    """Raise (or with ``allow_unknown_keys`` log) that ``name`` at ``where`` is not a known key."""
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    message = f"config key '{where}' is not known{hint}; expected one of {', '.join(known)}"
    if not allow_unknown_keys:
        raise UserError(message)
    log.warning("%s (ignored: --allow_unknown_keys)", message)


def validate(config, allow_unknown_keys=False):
    """Check ``config`` against the schema, before any file it names is read; returns a checked copy.

    Unknown keys are errors naming the closest known key; with ``allow_unknown_keys``
    (for plug-ins) they are warnings, and the copy is without them.
    """
    if not isinstance(config, dict):
        raise UserError("expected a JSON object at the top level")
    config = copy.deepcopy(config)
    known = [*SECTIONS, *OTHER_KEYS, *(k for k in GROUPS if not k.startswith("<"))]
    for name in list(config):
        if name.endswith(FILENAMES_SUFFIX) and name != FILENAMES_SUFFIX:
            validate_filenames(config[name], name, config, allow_unknown_keys)
        elif name in OTHER_KEYS:
            _check_value(name, OTHER_KEYS[name], config[name])
        elif name not in SECTIONS:
            # A misspelled group (``test_filename``) is suggested as its ``<group>_filenames``.
            group = re.sub(r"_?file_?names?$", "", name, flags=re.IGNORECASE) if "file" in name.lower() else None
            unknown_key(name, name, [f"{group}_filenames"] if group else known, allow_unknown_keys)
            del config[name]
    for name, spec in SECTIONS.items():
        if name not in config:
            if spec.required:
                expected = "an object with a 'name'" if spec.named else "an object"
                raise UserError(f"config key '{name}' is missing (expected {expected})")
            continue
        value = config[name]
        if spec.named:
            if not isinstance(value, dict) or not isinstance(value.get("name"), str):
                raise UserError(f"config key '{name}' must be an object with a string 'name'")
            # Other keys of a named section are the class's arguments, checked by the resolver.
            if spec.keys_for in (None, value["name"]):
                _validate_keys(value, spec, name, allow_unknown_keys, extra_ok=spec.keys_for is None, skip=("name",))
            continue
        if not isinstance(value, dict):
            raise UserError(f"config key '{name}' must be an object")
        _validate_keys(value, spec, name, allow_unknown_keys)
        settings(config, name)
    if "training_filenames" not in config:
        raise UserError("config key 'training_filenames' is missing (expected a list of cases)")
    dataset = config["dataset"]
    if dataset["name"] == SECTIONS["dataset"].keys_for:
        split_keys = {k: v for k, v in SECTIONS["dataset"].keys.items() if k not in ("training", "validation")}
        for split in ("training", "validation"):
            if isinstance(dataset.get(split), dict):
                _validate_keys(dataset[split], Section("", keys=split_keys), f"dataset.{split}", allow_unknown_keys)
    return config


def _validate_keys(value, spec, where, allow_unknown_keys, extra_ok=False, skip=()):
    """Check the keys of one object in place; unknown ones are removed when allowed."""
    known = [*spec.keys, *spec.aliases]
    for name, item in list(_canonical(value, spec, where).items()):
        if name in skip:
            continue
        if name in spec.keys:
            _check_value(f"{where}.{name}", spec.keys[name], item)
        elif not extra_ok:
            unknown_key(f"{where}.{name}", name, known, allow_unknown_keys)
            del value[name]


def validate_filenames(cases, group, config=None, allow_unknown_keys=False):
    """Check one ``<group>_filenames`` list: each case has an image (path or list), maybe a label and an id."""
    if not isinstance(cases, list) or not cases:
        raise UserError(f"config key '{group}' must be a non-empty list of {{\"image\": ..., \"label\": ...}} objects")
    section = (config or {}).get("cross_validation")
    metadata = {section.get(k) for k in ("group_by", "stratify_by")} if isinstance(section, dict) else set()
    for index, case in enumerate(cases):
        where = f"{group}'[{index}]"
        if not isinstance(case, dict) or "image" not in case:
            raise UserError(f"config key '{where} must be an object with an 'image' path or list of paths")
        images = [case["image"]] if isinstance(case["image"], str) else case["image"]
        if not isinstance(images, list) or not images or not all(isinstance(p, str) and p for p in images):
            raise UserError(f"config key '{where}.image must be a path or a non-empty list of paths")
        if "label" in case and not (isinstance(case["label"], str) and case["label"]):
            raise UserError(f"config key '{where}.label must be a path")
        if "id" in case and not (isinstance(case["id"], str) and case["id"]):
            raise UserError(f"config key '{where}.id must be a non-empty string")
        for name in list(case):
            if name in ENTRY_KEYS or name in metadata:
                continue
            if difflib.get_close_matches(name.lower(), list(ENTRY_KEYS), n=1, cutoff=MISSPELLING_CUTOFF):
                unknown_key(f"{group}[{index}].{name}", name, list(ENTRY_KEYS), allow_unknown_keys)
                del case[name]


def resolved(config, lookup_class=None):
    """``config`` with every default filled in and each filename group shown as its case count (``--check``).

    ``lookup_class(kind, name)`` gives a named section's class, whose signature defaults are shown too.
    """
    result = {}
    for name, spec in SECTIONS.items():
        if name not in config:
            if name in ("training", "prediction"):
                result[name] = settings(config, name)
            continue
        if not spec.named:
            result[name] = settings(config, name)
            continue
        section = dict(config[name])
        if lookup_class is not None:
            try:
                parameters = inspect.signature(lookup_class(name, section["name"])).parameters.values()
            except (TypeError, ValueError):
                parameters = ()
            filled = {p.name: p.default for p in parameters
                      if p.default is not p.empty and p.name not in UNET3D_ARGUMENTS and p.kind is not p.VAR_KEYWORD}
            section = {"name": section["name"], **filled, **{k: v for k, v in section.items() if k != "name"}}
        if spec.keys_for in (None, section["name"]):
            section = {**{k: v for k, v in defaults(name).items() if k not in section}, **section}
        result[name] = section
    for key, value in config.items():
        if key.endswith(FILENAMES_SUFFIX):
            result[key] = f"{len(value)} cases"
    return result



def markdown():
    """``docs/configuration.md``: every section and key with its type, default and description."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from unet3d/config/schema.py by `python -m unet3d.config > docs/configuration.md`; do not edit. -->",
        "",
        "A config is one JSON object. Unknown keys are errors that name the closest known key",
        "(`--allow_unknown_keys` turns them into warnings, for plug-ins that read keys of their own).",
        "`unet3d-train --config_filename C --check` validates a config and its data and prints",
        "the resolved settings, defaults filled in, without training.",
        "",
        "Sections `{\"name\": ..., **kwargs}` are built by the resolver: the other keys are the",
        "class's keyword arguments, checked against its signature (see the README for where names",
        "are looked up, and `--plugin` for classes of your own).",
        "",
    ]
    for name, spec in SECTIONS.items():
        lines += [f"## `{name}`", "", spec.description[0].upper() + spec.description[1:] + ".", ""]
        if spec.named:
            lines += ["`name` (string, required): the class." + (
                f" With `{spec.keys_for}`, its keys are:" if spec.keys_for else
                (" unet3d also reads:" if spec.keys else "")), ""]
        if spec.aliases:
            lines += ["Also accepted: " + ", ".join(f"`{a}` for `{c}`" for a, c in spec.aliases.items()) + ".", ""]
        if spec.keys:
            lines += _key_table(spec.keys)
    lines += ["## `<group>_filenames`", "", "Lists of cases, one object per case:", ""]
    lines += [f"- `{group}`: {text}" for group, text in GROUPS.items()]
    lines += [""] + _key_table(ENTRY_KEYS)
    lines += ["Other keys of a case are case metadata (e.g. `\"subject\"` for `cross_validation.group_by`);",
              "a key close to `image`, `label` or `id` (`lable`, `images`) is taken for a misspelling.", ""]
    lines += ["## Other keys", ""] + _key_table(OTHER_KEYS)
    return "\n".join(lines)


def _key_table(keys):
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, key in keys.items():
        default = "required" if key.default is REQUIRED else json.dumps(key.default)
        rows.append(f"| `{name}` | {key.expected()} | {default} | {key.description} |")
    return rows + [""]
