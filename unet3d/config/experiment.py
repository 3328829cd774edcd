"""The experiment: one object built once from a config, which every stage asks instead of the JSON.

It holds the components to build (model, loss, optimizer, scheduler, dataset), the typed
settings of each section, the label scheme and the case groups.
"""

import copy
import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path

from unet3d.config.labels import LabelScheme, label_scheme
from unet3d.config.load import config_folder, read_config, resolve_paths
from unet3d.config.overrides import apply_overrides
from unet3d.config.resolve import Component
from unet3d.config.schema import FILENAMES_SUFFIX, DatasetSpec, SchedulerSpec, parse_config
from unet3d.config.settings import CrossValidationSettings, PredictionSettings, TrainingSettings
from unet3d.errors import UserError, listing
from unet3d.image_suffixes import image_stem

# Training keys that change when or what is saved, not what is learned: a checkpoint
# made under other values of these still resumes.
BOOKKEEPING_KEYS = frozenset({
    "n_epochs", "save_best", "save_every_n_epochs", "save_last_n_models", "early_stopping_patience", "compile",
    "pretrained", "trackers", "tracker_image_interval",
})
HASHED_SECTIONS = ("model", "loss", "optimizer", "scheduler", "dataset", "training")


@dataclasses.dataclass(frozen=True)
class Case:
    """One case: its name in outputs, its image files (one per modality), its label file if any, and metadata."""

    id: str
    images: tuple
    label: str = None
    metadata: dict = dataclasses.field(default_factory=dict, compare=False)

    @property
    def files(self):
        """Its input files: the modalities, then the label when it has one."""
        return list(self.images) + ([self.label] if self.label else [])

    def as_dict(self):
        """``{"id", "image", "label"?}``, as data transforms take a case."""
        item = {"id": self.id, "image": list(self.images)}
        if self.label:
            item["label"] = self.label
        return item


def case_id(images):
    """A case's name from its image files: the shared prefix of the modality names.

    ``BraTS20_Training_001_flair.nii`` + ``..._t1.nii`` -> ``BraTS20_Training_001``;
    a single modality gives its file name without extension.
    """
    stems = [image_stem(p) or os.path.basename(p) for p in images]
    prefix = os.path.commonprefix(stems) if len(stems) > 1 else stems[0]
    prefix = prefix.rstrip("_-. ")
    return prefix or os.path.basename(os.path.dirname(images[0])) or stems[0]


def make_case(entry):
    """A ``Case`` from a config entry ``{"image": path or list, "label"?, "id"?, **metadata}``."""
    images = [entry["image"]] if isinstance(entry["image"], str) else list(entry["image"])
    metadata = {k: v for k, v in entry.items() if k not in ("image", "label", "id")}
    return Case(entry.get("id") or case_id(images), tuple(images), entry.get("label"), metadata)


def unique_cases(case_list, where):
    """``case_list`` as a tuple, or a UserError naming ``where`` when an id cannot name an output file
    (``<id>.nii.gz`` in an output folder) or two cases share one."""
    seen = {}
    for case in case_list:
        if any(separator in case.id for separator in ("/", "\\", "\0")) or case.id.startswith("."):
            raise UserError(f"{where}: case id {case.id!r} cannot name an output file; ids may not hold path "
                            "separators or start with '.'")
        if case.id in seen:
            raise UserError(f"{where}: two cases are both named '{case.id}' (from {seen[case.id]} and "
                            f"{case.images[0]}); give each an 'id'")
        seen[case.id] = case.images[0]
    return tuple(case_list)


def check_new_output(path, inputs, flag, suffix=None):
    """Raise a UserError naming ``flag`` when the output ``path`` is one of ``inputs`` (through any link)
    or lacks ``suffix``: no command writes over a file it reads."""
    path = Path(path)
    if (suffix and path.suffix != suffix) or path.resolve() in {Path(p).resolve() for p in inputs}:
        expected = f"a new {suffix} file" if suffix else "a new file"
        raise UserError(f"{flag} {path}: expected {expected}, not one of the command's inputs")


def require_writable(path, flag, folder=False, hint=""):
    """Raise a UserError naming ``flag`` (and ending in ``hint``) when ``path`` (a file, or with ``folder`` a folder)
    cannot be written: a file stands where a folder must, or the nearest existing folder refuses a new entry.

    Checked before any work: the nearest existing folder gets an empty folder made and removed at once,
    which finds what permissions alone do not (a read-only file system, a pseudo file system, root's access).
    """
    path = Path(path)
    if not folder and path.is_dir():
        raise UserError(f"{flag} {path}: is a folder; expected a file name{hint}")
    existing, missing = path if folder else path.parent, None
    while not existing.exists() and existing != existing.parent:
        existing, missing = existing.parent, existing
    if not existing.is_dir():
        where = "" if existing == path else f"{existing} "
        raise UserError(f"{flag} {path}: {where}is a file, not a folder{hint}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: {existing} is not writable{hint}")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".unet3d-write-check-", dir=existing))
    except OSError as error:
        what = f"cannot create {missing}" if missing else f"{existing} is not writable"
        raise UserError(f"{flag} {path}: {what} ({error.strerror or error}){hint}") from None


@dataclasses.dataclass(frozen=True)
class Experiment:
    """Everything a config says, checked and typed.

    Args:
        source: the checked config (data paths absolute), kept to write fold configs and
            to hash what shapes training (``config_hashes``).
        filename: the config file (None for a config given as a dict).
        model, loss, optimizer: the components to build.
        scheduler: the learning-rate schedule, or None.
        dataset: the dataset class and its settings.
        training, prediction: the sections' settings.
        cross_validation: the folds' settings, or None.
        labels: the label scheme.
        groups: ``{group name: cases}`` from the ``<group>_filenames`` lists, in config order.
    """

    source: dict
    filename: Path
    model: Component
    loss: Component
    optimizer: Component
    scheduler: SchedulerSpec
    dataset: DatasetSpec
    training: TrainingSettings
    prediction: PredictionSettings
    cross_validation: CrossValidationSettings
    labels: LabelScheme
    groups: dict

    def cases(self, group):
        """The cases of ``<group>_filenames``, or a UserError listing the groups there are."""
        if group not in self.groups:
            available = ", ".join(self.groups) or "none"
            raise UserError(f"config has no '{group}{FILENAMES_SUFFIX}' (groups in this config: {available})")
        return list(self.groups[group])

    def labelled_cases(self, group):
        """The cases of a group used for training or validation, which all need a label."""
        if group not in self.groups:
            return []
        unlabeled = [case.id for case in self.groups[group] if not case.label]
        if unlabeled:
            raise UserError(f"config key '{group}{FILENAMES_SUFFIX}': {len(unlabeled)} case(s) have no 'label' "
                            f"but the group is used for training or validation: {listing(unlabeled)}")
        return list(self.groups[group])

    def input_files(self):
        """The config file and every file its cases name: no command's output may replace one."""
        files = [path for group in self.groups.values() for case in group for path in case.files]
        return files + ([str(self.filename)] if self.filename else [])

    @property
    def window(self):
        """The sliding window of validation and prediction: ``prediction.window``, else the dataset's, else None
        (the whole volume)."""
        settings = self.dataset.settings
        return self.prediction.window or (settings.inference_window if settings else None)

    def split_config(self, validation):
        """A self-contained config (JSON-able) whose training cases at the indices ``validation`` become its
        ``validation_filenames`` and the rest its ``training_filenames``; without ``cross_validation``."""
        config = copy.deepcopy({k: v for k, v in self.source.items() if k != "cross_validation"})
        entries, chosen = config["training_filenames"], set(validation)
        config["training_filenames"] = [entry for index, entry in enumerate(entries) if index not in chosen]
        config["validation_filenames"] = [entries[index] for index in sorted(chosen)]
        return config

    @property
    def one_hot_classes(self):
        """For classes whose loss takes one-hot targets (no ``to_onehot_y``): how many channels to expand the
        class indices to; None otherwise."""
        if self.labels.mode == "classes" and not self.loss.options.get("to_onehot_y"):
            return self.labels.n_channels
        return None

    @property
    def in_channels(self):
        """The input channels the model takes (``model.in_channels``), or None when its class names them otherwise."""
        return self.model.options.get("in_channels")

    def config_hashes(self):
        """Short hashes of each part of the config that shapes training, by config key (a checkpoint keeps them)."""
        parts = {section: self.source.get(section) for section in HASHED_SECTIONS}
        parts["training"] = {k: v for k, v in (parts["training"] or {}).items() if k not in BOOKKEEPING_KEYS}
        # Case ids rather than paths, so a data folder that moves as a whole still resumes.
        for group in ("training", "validation"):
            parts[f"{group}{FILENAMES_SUFFIX}"] = [case.id for case in self.groups.get(group, ())]
        return {key: hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
                for key, value in parts.items()}


def check_fit_to_labels(model, loss, prediction, labels):
    """Raise when the network's outputs, the loss or the activation do not fit the label mode, naming the keys."""
    if not labels.values:
        return
    mode, expected = labels.mode, labels.n_channels
    out_channels = model.options.get("out_channels")
    if isinstance(out_channels, int) and out_channels != expected:
        why = ("background + one per label" if mode == "classes" else f"one per {'region' if mode == 'regions' else 'label'}")
        hint = "; the background channel is missing" if mode == "classes" and out_channels == expected - 1 else ""
        count = f"{len(labels.regions)} regions" if labels.regions else f"{len(labels.values)} labels"
        raise UserError(f"config key 'model.out_channels' is {out_channels} but label_mode \"{mode}\" with "
                        f"{count} needs {expected} ({why}){hint}")
    wrong = ("sigmoid",) if mode == "classes" else ("softmax", "to_onehot_y")
    for option in wrong:
        if loss.options.get(option):
            needs = ("a softmax (\"softmax\": true, \"to_onehot_y\": true for MONAI's losses)" if mode == "classes"
                     else "a sigmoid per channel (\"sigmoid\": true)")
            raise UserError(f"config key 'loss.{option}' is true but label_mode \"{mode}\" takes {needs}")
    if prediction.activation and (prediction.activation == "sigmoid") == (mode == "classes"):
        raise UserError(f"config key 'prediction.activation' is \"{prediction.activation}\" but label_mode "
                        f"\"{mode}\" decodes {labels.activation} probabilities")


def experiment_from_dict(config, filename=None, allow_unknown_keys=False, cases_required=True):
    """The ``Experiment`` of a config object; relative data paths resolve against the folder of ``filename``
    (the working folder without one). Errors name ``filename`` when given. Without ``cases_required`` a config may
    name no cases: the experiment of its components alone, whose step the planner and the benchmarks time."""
    try:
        checked, sections = parse_config(config, allow_unknown_keys, cases_required)
        labels = label_scheme(sections["dataset"].labels)
        check_fit_to_labels(sections["model"], sections["loss"], sections["prediction"], labels)
    except UserError as error:
        raise UserError(f"{filename or 'config'}: {error}") from None
    checked = resolve_paths(checked, config_folder(filename) if filename else Path.cwd())
    groups = {}
    for key in checked:
        if key.endswith(FILENAMES_SUFFIX):
            group = key[: -len(FILENAMES_SUFFIX)]
            groups[group] = unique_cases([make_case(entry) for entry in checked[key]], f"config key '{key}'")
    return Experiment(source=checked, filename=Path(filename) if filename else None, labels=labels, groups=groups,
                      **sections)


def load_experiment(path, allow_unknown_keys=False, overrides=()):
    """The ``Experiment`` of the config file at ``path``, with ``--set`` ``overrides`` (``"key.path=value"``)
    applied; relative data paths resolve against its folder."""
    return experiment_from_dict(apply_overrides(read_config(path), overrides), path, allow_unknown_keys)
