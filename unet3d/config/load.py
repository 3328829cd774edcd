"""Read a JSON config, check its shape and make its paths absolute."""

import copy
import json
import os
from pathlib import Path

from unet3d.atomic import write_text
from unet3d.errors import UserError

NAMED_SECTIONS = ("model", "optimizer", "loss", "dataset")
OPTIONAL_NAMED_SECTIONS = ("scheduler",)
FILENAMES_SUFFIX = "_filenames"
DECATHLON_KEY = "decathlon_datalist"


def load_config(path):
    """Load the config at ``path``; relative data paths resolve against its folder."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read config file ({error.__class__.__name__})") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{path}:{error.lineno}:{error.colno}: invalid JSON: {error.msg}") from None
    if isinstance(config, dict) and DECATHLON_KEY in config:
        config = expand_decathlon_datalist(config, path.resolve().parent)
    validate_config(config, path)
    return resolve_paths(config, path.resolve().parent)


def expand_decathlon_datalist(config, base_dir):
    """Replace ``decathlon_datalist`` (a Medical Segmentation Decathlon ``dataset.json``) by filename lists.

    Its ``training`` cases become ``training_filenames`` and its ``test`` cases
    ``test_filenames``; paths in it are relative to its own folder, its path to the config's.
    """
    from monai.data import load_decathlon_datalist

    config = dict(config)
    datalist = _absolute(str(config.pop(DECATHLON_KEY)), base_dir)
    for section, group in (("training", "training_filenames"), ("test", "test_filenames")):
        if group in config:
            raise UserError(f"config key '{group}': given twice, by the config and by '{DECATHLON_KEY}'; remove one")
        try:
            entries = load_decathlon_datalist(datalist, is_segmentation=True, data_list_key=section)
        except ValueError as error:
            if section == "test":
                continue
            raise UserError(f"config key '{DECATHLON_KEY}': {datalist}: {error}") from None
        except (OSError, KeyError, TypeError) as error:
            raise UserError(f"config key '{DECATHLON_KEY}': {datalist}: cannot read ({error})") from None
        config[group] = [{k: v for k, v in entry.items() if k in ("image", "label")} for entry in entries]
    return config


def validate_config(config, path="config"):
    """Check the sections and filename groups that every run needs."""
    if not isinstance(config, dict):
        raise UserError(f"{path}: expected a JSON object at the top level")
    for section in NAMED_SECTIONS + OPTIONAL_NAMED_SECTIONS:
        if section not in config:
            if section in OPTIONAL_NAMED_SECTIONS:
                continue
            raise UserError(f"{path}: config key '{section}' is missing (expected an object with a 'name')")
        spec = config[section]
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise UserError(f"{path}: config key '{section}' must be an object with a string 'name'")
    if not isinstance(config.get("training", {}), dict):
        raise UserError(f"{path}: config key 'training' must be an object")
    for group in filename_groups(config):
        validate_filenames(config[group], f"{path}: config key '{group}'")
    if "training_filenames" not in config:
        raise UserError(f"{path}: config key 'training_filenames' is missing (expected a list of cases)")


def validate_filenames(cases, where):
    """Check one ``<group>_filenames`` list: each case has an image (path or list) and maybe a label."""
    if not isinstance(cases, list) or not cases:
        raise UserError(f"{where} must be a non-empty list of {{\"image\": ..., \"label\": ...}} objects")
    for index, case in enumerate(cases):
        if not isinstance(case, dict) or "image" not in case:
            raise UserError(f"{where}[{index}] must be an object with an 'image' path or list of paths")
        images = case["image"]
        if isinstance(images, str):
            images = [images]
        if not images or not all(isinstance(p, str) and p for p in images):
            raise UserError(f"{where}[{index}].image must be a path or a non-empty list of paths")
        if "label" in case and not isinstance(case["label"], str):
            raise UserError(f"{where}[{index}].label must be a path")


def filename_groups(config):
    """Names of the ``<group>_filenames`` keys, in config order."""
    return [key for key in config if key.endswith(FILENAMES_SUFFIX)]


def group_name(key):
    """``bratsvalidation_filenames`` -> ``bratsvalidation``."""
    return key[: -len(FILENAMES_SUFFIX)]


def resolve_paths(config, base_dir):
    """Return a copy of ``config`` whose data paths are absolute, relative ones taken from ``base_dir``."""
    config = copy.deepcopy(config)
    for group in filename_groups(config):
        for case in config[group]:
            if isinstance(case["image"], str):
                case["image"] = [case["image"]]
            case["image"] = [_absolute(p, base_dir) for p in case["image"]]
            if "label" in case:
                case["label"] = _absolute(case["label"], base_dir)
    return config


def _absolute(path, base_dir):
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(path)))


def write_json(config, path):
    """Write ``config`` to ``path`` as indented JSON, atomically."""
    write_text(path, json.dumps(config, indent=2) + "\n")
