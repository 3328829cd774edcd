"""Read a JSON config file, expand a Decathlon datalist, make data paths absolute, write configs."""

import copy
import json
import os
from pathlib import Path

from unet3d.atomic import write_text
from unet3d.config.labels import safe_label_names
from unet3d.config.schema import FILENAMES_SUFFIX
from unet3d.errors import UserError

DECATHLON_KEY = "decathlon_datalist"
# Far deeper than any config; a few hundred levels would exhaust Python's stack in the recursive checks.
MAX_NESTING = 100


def config_folder(path):
    """The folder a config's relative paths and default outputs are relative to: the config file's own, or the
    working folder for a config read from a pipe (``/dev/stdin``), whose folder is the process's descriptors."""
    path = Path(path)
    return path.resolve().parent if path.is_file() else Path.cwd()


def read_config(path):
    """The JSON object in the config file at ``path``, with a ``decathlon_datalist`` expanded; not yet checked."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read config file ({error.__class__.__name__})") from None
    config = parse_json(text, path)
    check_nesting(config, path)
    if isinstance(config, dict) and DECATHLON_KEY in config:
        config = expand_decathlon_datalist(config, config_folder(path))
    return config


def parse_json(text, path):
    """Strict JSON: ``NaN``/``Infinity`` and a key given twice in one object are errors naming it (Python's
    reader accepts the first and keeps the last duplicate silently); nesting deeper than Python's stack is too."""
    def unique_keys(pairs):
        seen = {}
        for key, value in pairs:
            if key in seen:
                raise UserError(f"{path}: key '{key}' is given twice in one object; keep one")
            seen[key] = value
        return seen

    def no_constant(name):
        raise UserError(f"{path}: {name} is not a JSON number; write a finite number (or null)")

    try:
        return json.loads(text, object_pairs_hook=unique_keys, parse_constant=no_constant)
    except json.JSONDecodeError as error:
        raise UserError(f"{path}:{error.lineno}:{error.colno}: invalid JSON: {error.msg}") from None
    except RecursionError:
        raise UserError(f"{path}: the JSON is nested too deeply to read") from None


def check_nesting(config, path):
    """Raise a UserError naming the first key nested deeper than ``MAX_NESTING`` levels (walked without recursion:
    the checks after this one, and ``copy.deepcopy``, recurse and would exhaust Python's stack)."""
    stack = [((), config)]
    while stack:
        keys, value = stack.pop()
        if len(keys) > MAX_NESTING:
            raise UserError(f"{path}: config key '{'.'.join(map(str, keys[:3]))}...': nested too deeply (over "
                            f"{MAX_NESTING} levels)")
        inner = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        stack.extend((keys + (key,), item) for key, item in inner)


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
        except (ValueError, IndexError) as error:  # MONAI reads an empty "test" list's first entry
            if section == "test":
                continue
            raise UserError(f"config key '{DECATHLON_KEY}': {datalist}: {error}") from None
        except (OSError, KeyError, TypeError) as error:
            raise UserError(f"config key '{DECATHLON_KEY}': {datalist}: cannot read ({error})") from None
        config[group] = [{k: v for k, v in entry.items() if k in ("image", "label")} for entry in entries]
    return with_datalist_labels(config, datalist)


def with_datalist_labels(config, datalist):
    """``config`` whose ``dataset`` takes its ``labels`` and ``label_names`` from the datalist's ``labels``
    (``{"0": "background", "1": "edema", ...}``) when it names neither."""
    dataset = config.get("dataset")
    if not isinstance(dataset, dict) or "labels" in dataset or "label_names" in dataset:
        return config
    try:
        names = json.loads(Path(datalist).read_text(encoding="utf-8")).get("labels")
        values = sorted(int(value) for value in names if int(value) != 0)
    except (AttributeError, TypeError, ValueError):
        return config  # no usable label table: the config must give its labels
    if not values:
        return config
    unique = safe_label_names([names[str(value)] for value in values], values)
    return {**config, "dataset": {**dataset, "labels": values, **({"label_names": unique} if unique else {})}}


def resolve_paths(config, base_dir):
    """Return a copy of ``config`` whose data paths (and ``training.pretrained``) are absolute, relative ones
    taken from ``base_dir``."""
    config = copy.deepcopy(config)
    training = config.get("training")
    if isinstance(training, dict) and isinstance(training.get("pretrained"), str):
        training["pretrained"] = _absolute(training["pretrained"], base_dir)
    for group in [key for key in config if key.endswith(FILENAMES_SUFFIX)]:
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


MACHINE_KEYS = {"n_workers": int, "n_gpus": int, "pin_memory": bool}
MACHINE_KEYS_IGNORED = ("directory", "use_multiprocessing")


def read_machine_config(path):
    """3DUnetCNN's machine config (``--machine_config_filename``): ``{"n_workers", "n_gpus", "pin_memory"}``,
    checked; the original's ``directory`` and ``use_multiprocessing`` are accepted and not used."""
    try:
        machine = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: machine config file not found") from None
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: cannot read the machine config as JSON ({error})") from None
    if not isinstance(machine, dict):
        raise UserError(f"{path}: expected a JSON object with n_workers, n_gpus, pin_memory")
    result = {}
    for key, value in machine.items():
        if key in MACHINE_KEYS_IGNORED:
            continue
        kind = MACHINE_KEYS.get(key)
        if kind is None:
            raise UserError(f"{path}: unknown machine config key '{key}'; expected {', '.join(MACHINE_KEYS)}")
        # n_gpus 0 is how 3DUnetCNN was told to run on the CPU.
        if type(value) is not kind or (kind is int and value < 0):
            expected = "true or false" if kind is bool else "a whole number, 0 or more"
            raise UserError(f"{path}: '{key}' must be {expected}, got {json.dumps(value)}")
        result[key] = value
    return result
