"""Cross-validation: split ``training_filenames`` into folds and write one config per fold."""

import copy
import hashlib
import json
from pathlib import Path

from unet3d.config.load import write_json
from unet3d.data.files import case_id
from unet3d.errors import UserError


def cross_validation_settings(config):
    """``(n_folds, random_seed)`` from ``cross_validation``."""
    section = config["cross_validation"]
    if not isinstance(section, dict):
        raise UserError("config key 'cross_validation' must be an object with 'n_folds' and 'random_seed'")
    n_folds = section.get("n_folds")
    seed = section.get("random_seed", 0)
    if not isinstance(n_folds, int) or n_folds < 2:
        raise UserError(f"config key 'cross_validation.n_folds' must be an integer of at least 2, got {n_folds!r}")
    if not isinstance(seed, int):
        raise UserError(f"config key 'cross_validation.random_seed' must be an integer, got {seed!r}")
    return n_folds, seed


def split_folds(entries, n_folds, seed):
    """Indices of the validation cases of each fold.

    Cases are ordered by a hash of ``seed`` and their id, then dealt round-robin, so the
    split depends on nothing but the seed and the case list (not on the Python or NumPy
    version), every case is validated exactly once and fold sizes differ by at most one.
    """
    if n_folds > len(entries):
        raise UserError(
            f"config key 'cross_validation.n_folds': {n_folds} folds need at least {n_folds} "
            f"training cases, but 'training_filenames' has {len(entries)}"
        )

    def order(index):
        images = entries[index]["image"]
        name = entries[index].get("id") or case_id([images] if isinstance(images, str) else images)
        return hashlib.sha256(f"{seed}:{name}".encode()).hexdigest(), index

    shuffled = sorted(range(len(entries)), key=order)
    return [sorted(shuffled[fold::n_folds]) for fold in range(n_folds)]


def fold_configs(config):
    """Self-contained configs, one per fold, with ``training_filenames`` and ``validation_filenames``."""
    if "validation_filenames" in config:
        raise UserError(
            "config has both 'cross_validation' and 'validation_filenames': cross-validation "
            "takes its validation cases from 'training_filenames'; remove one of the two"
        )
    n_folds, seed = cross_validation_settings(config)
    entries = config["training_filenames"]
    configs = []
    for validation in split_folds(entries, n_folds, seed):
        fold = copy.deepcopy({k: v for k, v in config.items() if k != "cross_validation"})
        chosen = set(validation)
        fold["training_filenames"] = [entries[i] for i in range(len(entries)) if i not in chosen]
        fold["validation_filenames"] = [entries[i] for i in validation]
        configs.append(fold)
    return configs


def write_fold_configs(config, work_dir):
    """Write ``fold<k>.json`` (k from 1) into ``work_dir``; returns their paths.

    A fold file is rewritten only when its content changes, so reruns leave it untouched.
    """
    paths = []
    for number, fold in enumerate(fold_configs(config), start=1):
        path = Path(work_dir) / f"fold{number}.json"
        if not path.is_file() or _read_json(path) != fold:
            write_json(fold, path)
        paths.append(path)
    return paths


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
