"""Cross-validation: split ``training_filenames`` into folds and write one config per fold."""

import functools
import hashlib
import json
from pathlib import Path

from unet3d.config.load import write_json
from unet3d.errors import UserError


def _case_value(case, key, index, setting):
    if key == "labels_present":
        return labels_present(case.label)
    if key not in case.metadata:
        raise UserError(
            f"config key 'training_filenames'[{index}] has no '{key}', which "
            f"'cross_validation.{setting}' names (add \"{key}\": ... to every case)"
        )
    return str(case.metadata[key])


@functools.lru_cache(maxsize=None)
def labels_present(label_filename):
    """The label values present in a label file, as a string such as ``1,2,4``."""
    import numpy as np

    from unet3d.data.formats import read_array

    values = np.unique(np.asarray(read_array(label_filename)))
    return ",".join(str(int(v)) for v in values if v != 0)


def split_folds(cases, n_folds, seed, group_by=None, stratify_by=None):
    """Indices of the validation cases of each fold, from a list of ``Case`` objects.

    Units (single cases, or all cases sharing the metadata ``group_by``) are ordered by stratum
    (the metadata ``stratify_by``, or the label values present for ``"labels_present"``) and,
    within it, by a hash of ``seed`` and the unit's name; each unit then joins the fold
    with the fewest cases. So the split depends on nothing but the seed and the case list
    (not on the Python or NumPy version), every case is validated exactly once, strata
    spread evenly, and without groups fold sizes differ by at most one.
    """
    units = {}
    for index, case in enumerate(cases):
        name = _case_value(case, group_by, index, "group_by") if group_by else case.id
        units.setdefault(name, []).append(index)
    if n_folds > len(units):
        what = f"distinct '{group_by}' values" if group_by else "training cases"
        raise UserError(
            f"config key 'cross_validation.n_folds': {n_folds} folds need at least {n_folds} "
            f"{what}, but 'training_filenames' has {len(units)}"
        )

    def order(name):
        first = units[name][0]
        stratum = _case_value(cases[first], stratify_by, first, "stratify_by") if stratify_by else ""
        return stratum, hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()

    folds = [[] for _ in range(n_folds)]
    for name in sorted(units, key=order):
        smallest = min(range(n_folds), key=lambda fold: len(folds[fold]))
        folds[smallest].extend(units[name])
    return [sorted(fold) for fold in folds]


def fold_configs(experiment):
    """Self-contained configs, one per fold, with ``training_filenames`` and ``validation_filenames``."""
    if "validation" in experiment.groups:
        raise UserError(
            "config has both 'cross_validation' and 'validation_filenames': cross-validation "
            "takes its validation cases from 'training_filenames'; remove one of the two"
        )
    settings = experiment.cross_validation
    folds = split_folds(experiment.cases("training"), settings.n_folds, settings.random_seed, settings.group_by,
                        settings.stratify_by)
    return [experiment.split_config(validation) for validation in folds]


def write_fold_configs(experiment, work_dir, write=True):
    """Write ``fold<k>.json`` (k from 1) into ``work_dir``; returns their paths.

    A fold file is rewritten only when its content changes, so reruns leave it untouched.
    With ``write`` false (processes other than the main one) only the paths are returned.
    """
    paths = []
    for number, fold in enumerate(fold_configs(experiment), start=1):
        path = Path(work_dir) / f"fold{number}.json"
        if write:
            write_if_changed(fold, path)
        paths.append(path)
    return paths


def write_if_changed(config, path):
    """Write ``config`` as JSON to ``path`` unless the file already holds it, so reruns leave it untouched."""
    try:
        unchanged = json.loads(Path(path).read_text(encoding="utf-8")) == config
    except (OSError, ValueError):
        unchanged = False
    if not unchanged:
        write_json(config, path)
