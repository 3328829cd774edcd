"""The config's one declared schema: its sections, their keys (``unet3d.config.settings``) and case lists.

``parse_config`` checks a config before any file it names is read and turns every section
into a typed object; ``resolved`` is the view ``unet3d-train --check`` prints and
``unet3d.config.docs`` writes ``docs/configuration.md`` from the same declarations.
"""

import copy
import dataclasses
import difflib
import inspect
import re

from unet3d.config.keys import Key, unknown_key
from unet3d.config.resolve import Component
from unet3d.config.settings import (
    CrossValidationSettings,
    DatasetSettings,
    LabelSettings,
    PredictionSettings,
    SchedulerOptions,
    TrainingSettings,
    jsonable,
)
from unet3d.errors import UserError

FILENAMES_SUFFIX = "_filenames"
# Names close to these in a case entry are taken for misspellings; other keys are case
# metadata (``"subject"``, ``"grade"``) that cross_validation.group_by/stratify_by may name.
MISSPELLING_CUTOFF = 0.75
SEGMENTATION_DATASET = "SegmentationDataset"
# Scheduler lengths that "auto" fills from the run (see unet3d.train.schedulers).
AUTO_LENGTH = "auto"
AUTO_LENGTH_KEYS = ("total_iters", "total_steps", "T_max")


@dataclasses.dataclass(frozen=True)
class Section:
    """A top-level object of the config.

    ``kind`` sections are ``{"name": ..., **kwargs}`` built by the resolver, which checks
    the kwargs against the class's signature; their ``settings`` are the extra keys unet3d
    itself reads (for ``dataset``: those of ``SegmentationDataset``, when it is the class).
    """

    description: str
    settings: tuple = ()
    kind: str = None
    required: bool = False
    keys_for: str = None  # for a named section: the class name the keys belong to (None: any)

    @property
    def keys(self):
        """``{name: Key}`` of every key unet3d reads in this section."""
        return {name: key for cls in self.settings for name, key in cls.keys().items()}

    @property
    def aliases(self):
        return {alias: name for cls in self.settings for alias, name in cls.aliases.items()}


SECTIONS = {
    "model": Section("the network: a class from `unet3d.models` or `monai.networks.nets` and its keyword arguments",
                     kind="model", required=True),
    "optimizer": Section("a class from `torch.optim` and its keyword arguments (`params` is set by unet3d)",
                         kind="optimizer", required=True),
    "loss": Section("a class from `unet3d.losses`, `monai.losses` or `torch.nn` and its keyword arguments",
                    kind="loss", required=True),
    "scheduler": Section("optional: a class from `torch.optim.lr_scheduler` and its keyword arguments (`optimizer` "
                         "is set by unet3d)", (SchedulerOptions,), kind="scheduler"),
    "dataset": Section("the dataset class (`SegmentationDataset`) and its preprocessing, patch and augmentation "
                       "settings", (LabelSettings, DatasetSettings), kind="dataset", required=True,
                       keys_for=SEGMENTATION_DATASET),
    "training": Section(TrainingSettings.__doc__.rstrip("."), (TrainingSettings,)),
    "cross_validation": Section(CrossValidationSettings.__doc__.rstrip("."), (CrossValidationSettings,)),
    "prediction": Section(PredictionSettings.__doc__.rstrip("."), (PredictionSettings,)),
}
OTHER_KEYS = {
    "decathlon_datalist": Key(("string",), None, "a Medical Segmentation Decathlon `dataset.json` (relative to the config) "
                                                  "whose `training` and `test` lists become `training_filenames` and `test_filenames`"),
}
ENTRY_KEYS = {
    "image": Key(("string", "list"), description="the case's image file, or one file per modality (always in the same order)"),
    "label": Key(("string",), None, "the label map (needed for training and validation cases)"),
    "id": Key(("string",), None, "the case's name in outputs (default: the common prefix of its image file names)"),
}
# Arguments unet3d passes itself; they are not config settings.
UNET3D_ARGUMENTS = frozenset({"params", "optimizer", "schedulers", "data", "split", "cache_dir", "with_label", "keys",
                              "settings", "labels"})
GROUPS = {
    "training_filenames": "cases to train on (required; with `cross_validation` also validated on, fold by fold)",
    "validation_filenames": "cases to validate on after every epoch (without `cross_validation`)",
    "<group>_filenames": "any other group (e.g. `test`) is predicted after training into `predictions/<group>/`",
}


@dataclasses.dataclass(frozen=True)
class SchedulerSpec:
    """The ``scheduler`` section: the class, whether it steps per batch, and a SequentialLR's inner schedulers.

    Args:
        component: the class and its keyword arguments, less the lengths given as "auto".
        step_per_batch: step after every batch instead of every epoch.
        schedulers: the inner ``SchedulerSpec`` of a SequentialLR or ChainedScheduler.
        auto_lengths: the length keywords (``AUTO_LENGTH_KEYS``) given as "auto", which the run's length fills.
        milestones: a SequentialLR's milestones, which split the run's length between its schedulers.
        plateau_mode: ReduceLROnPlateau's ``mode`` as the config gives it (None: the monitored metric's).
    """

    component: Component
    step_per_batch: bool = False
    schedulers: tuple = ()
    auto_lengths: tuple = ()
    milestones: tuple = ()
    plateau_mode: str = None


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """The ``dataset`` section: the class, and its settings when it is ``SegmentationDataset``."""

    component: Component
    settings: DatasetSettings = None
    labels: LabelSettings = LabelSettings()


def parse_config(config, allow_unknown_keys=False, cases_required=True):
    """Check ``config`` against the schema, before any file it names is read (``training_filenames`` is required
    unless ``cases_required`` is false).

    Returns ``(checked, sections)``: a copy of ``config`` (without unknown keys, which are
    errors naming the closest known key, or with ``allow_unknown_keys`` warnings) and
    ``{section: settings object, Component or spec}`` for every section.
    """
    if not isinstance(config, dict):
        raise UserError("expected a JSON object at the top level")
    config = copy.deepcopy(config)
    known = [*SECTIONS, *OTHER_KEYS, *(k for k in GROUPS if not k.startswith("<"))]
    for name in list(config):
        if name.endswith(FILENAMES_SUFFIX) and name != FILENAMES_SUFFIX:
            validate_filenames(config[name], name, config, allow_unknown_keys)
        elif name in OTHER_KEYS:
            OTHER_KEYS[name].parse(config[name], name)
        elif name not in SECTIONS:
            # A misspelled group (``test_filename``) is suggested as its ``<group>_filenames``.
            group = re.sub(r"_?file_?names?$", "", name, flags=re.IGNORECASE) if "file" in name.lower() else None
            unknown_key(name, name, [f"{group}_filenames"] if group else known, allow_unknown_keys)
            del config[name]
    sections = {}
    for name, spec in SECTIONS.items():
        if name not in config:
            if spec.required:
                expected = "an object with a 'name'" if spec.kind else "an object"
                raise UserError(f"config key '{name}' is missing (expected {expected})")
        if spec.kind:
            sections[name] = _named_section(name, config.get(name), allow_unknown_keys)
        elif config.get(name) is not None or name != "cross_validation":
            sections[name] = spec.settings[0].parse(config.get(name), name, allow_unknown_keys)
        else:
            sections[name] = None  # no cross-validation (null, as for any key, means the default)
    if cases_required and "training_filenames" not in config:
        raise UserError("config key 'training_filenames' is missing (expected a list of cases)")
    _check_scheduler_mode(sections["scheduler"], sections["training"])
    return config, sections


def _named_section(name, value, allow_unknown_keys):
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise UserError(f"config key '{name}' must be an object with a string 'name'")
    if name == "scheduler":
        return parse_scheduler(value, name, allow_unknown_keys)
    settings = labels = None
    if name == "dataset":
        # The label keys say what the labels are, whichever class loads them.
        labels = LabelSettings.parse(value, name, extra_ok=True)
        if value["name"] == SEGMENTATION_DATASET:  # (parsing drops unknown keys that are allowed)
            settings = DatasetSettings.parse(value, name, allow_unknown_keys)
    component = Component(SECTIONS[name].kind, name, value["name"], {k: v for k, v in value.items() if k != "name"})
    return DatasetSpec(component, settings, labels) if name == "dataset" else component


def parse_scheduler(value, key, allow_unknown_keys=False):
    """The ``SchedulerSpec`` of a ``scheduler`` section (or one of its ``schedulers``), checked; errors name ``key``."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise UserError(f"config key '{key}' must be an object with a string 'name'")
    options = SchedulerOptions.parse(value, key, allow_unknown_keys, extra_ok=True)
    inner = ()
    if options.schedulers is not None:
        if not options.schedulers:
            raise UserError(f"config key '{key}.schedulers' must be a non-empty list of schedulers")
        inner = tuple(parse_scheduler(spec, f"{key}.schedulers[{index}]", allow_unknown_keys)
                      for index, spec in enumerate(options.schedulers))
    kwargs = {k: v for k, v in value.items() if k not in ("name", *SchedulerOptions.keys())}
    for name, option in kwargs.items():
        if option == AUTO_LENGTH and name not in AUTO_LENGTH_KEYS:
            raise UserError(f"config key '{key}.{name}' is \"auto\", which only {', '.join(AUTO_LENGTH_KEYS)} take")
    if key != "scheduler" and "step_per_batch" in value:
        raise UserError(f"config key '{key}.step_per_batch': set it on the outer 'scheduler', which steps them all")
    auto = tuple(name for name in AUTO_LENGTH_KEYS if kwargs.get(name) == AUTO_LENGTH)
    milestones = kwargs.get("milestones")
    component = Component("scheduler", key, value["name"], {k: v for k, v in kwargs.items() if k not in auto})
    return SchedulerSpec(component, options.step_per_batch, inner, auto,
                         tuple(milestones) if isinstance(milestones, list) else (),
                         kwargs.get("mode") if value["name"] == "ReduceLROnPlateau" else None)


def _check_scheduler_mode(spec, training):
    """ReduceLROnPlateau follows the monitored metric; it cannot step per batch or against the metric's mode."""
    if spec is None or spec.component.name != "ReduceLROnPlateau":
        return
    key, mode = spec.component.key, spec.component.options.get("mode", training.monitor_mode)
    if mode != training.monitor_mode:
        raise UserError(
            f"config key '{key}.mode' is {mode!r} but the monitored metric is to be "
            f"{'maximized' if training.monitor_mode == 'max' else 'minimized'}; remove it or set training.metric_mode")
    if spec.step_per_batch:
        raise UserError(f"config key '{key}.step_per_batch': ReduceLROnPlateau steps once per epoch")


def validate(config, allow_unknown_keys=False):
    """``config`` checked against the schema; returns the checked copy (see ``parse_config``)."""
    return parse_config(config, allow_unknown_keys)[0]


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


def resolved(config, sections):
    """The config as unet3d reads it, for ``--check``: every default filled in, the named classes' too,
    and each filename group shown as its case count."""
    result = {}
    for name, spec in SECTIONS.items():
        section = sections[name]
        if section is None:
            continue
        if not spec.kind:
            result[name] = section.as_dict()
            continue
        component = section.component if hasattr(section, "component") else section
        try:
            parameters = inspect.signature(component.lookup()).parameters.values()
        except (TypeError, ValueError):
            parameters = ()
        filled = {p.name: p.default for p in parameters
                  if p.default is not p.empty and p.name not in UNET3D_ARGUMENTS and p.kind is not p.VAR_KEYWORD}
        keys = spec.keys
        given = {k: (jsonable(keys[k].parse(v, f"{name}.{k}")) if k in keys else v)
                 for k, v in config[name].items() if k != "name" and not (k in keys and v is None)}
        for settings in spec.settings if spec.keys_for in (None, component.name) else ():
            given = {**settings.defaults(), **given}
        result[name] = {"name": component.name, **filled, **given}
    for key, value in config.items():
        if key.endswith(FILENAMES_SUFFIX):
            result[key] = f"{len(value)} cases"
    return result
