"""Read a JSON config, check its shape and make its paths absolute."""

import copy
import json
import os
from pathlib import Path

from unet3d.atomic import write_text
from unet3d.config.schema import FILENAMES_SUFFIX, validate
from unet3d.errors import UserError

DECATHLON_KEY = "decathlon_datalist"


def load_config(path, allow_unknown_keys=False):
    """Load the config at ``path``, validated; relative data paths resolve against its folder.

    ``allow_unknown_keys`` reports keys the schema does not know as warnings, not errors.
    """
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
    config = validate_config(config, path, allow_unknown_keys)
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


def validate_config(config, path="config", allow_unknown_keys=False):
    """``config`` checked against the schema (``unet3d.config.schema``); errors name ``path``."""
    try:
        return validate(config, allow_unknown_keys)
    except UserError as error:
        raise UserError(f"{path}: {error}") from None


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
