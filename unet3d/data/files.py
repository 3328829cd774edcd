"""Case lists from a config's ``<group>_filenames``: ids, and the pre-flight checks of their files."""

import os
import re

from unet3d.config.load import filename_groups, group_name
from unet3d.data.checks import check_cases
from unet3d.errors import UserError

NIFTI_SUFFIX = re.compile(r"\.nii(\.gz)?$|\.gz$", re.IGNORECASE)
MAX_LISTED = 5


def case_id(images):
    """A case's name from its image files: the shared prefix of the modality names.

    ``BraTS20_Training_001_flair.nii`` + ``..._t1.nii`` -> ``BraTS20_Training_001``;
    a single modality gives its file name without extension.
    """
    stems = [NIFTI_SUFFIX.sub("", os.path.basename(p)) for p in images]
    prefix = os.path.commonprefix(stems) if len(stems) > 1 else stems[0]
    prefix = prefix.rstrip("_-. ")
    return prefix or os.path.basename(os.path.dirname(images[0])) or stems[0]


def cases(config, group):
    """The cases of ``<group>_filenames`` as dicts with ``id``, ``image`` (list) and maybe ``label``."""
    key = f"{group}_filenames"
    if key not in config:
        available = ", ".join(group_name(k) for k in filename_groups(config)) or "none"
        raise UserError(f"config has no '{key}' (groups in this config: {available})")
    result = []
    for entry in config[key]:
        images = [entry["image"]] if isinstance(entry["image"], str) else list(entry["image"])
        case = {"id": entry.get("id") or case_id(images), "image": images}
        if "label" in entry:
            case["label"] = entry["label"]
        result.append(case)
    seen = {}
    for case in result:
        if case["id"] in seen:
            raise UserError(
                f"config key '{key}': two cases are both named '{case['id']}' "
                f"(from {seen[case['id']]} and {case['image'][0]}); give each an 'id'"
            )
        seen[case["id"]] = case["image"][0]
    return result


def require_labels(case_list, group):
    """Raise when a case of ``group`` (used for training or validation) has no label."""
    unlabeled = [c["id"] for c in case_list if "label" not in c]
    if unlabeled:
        raise UserError(
            f"config key '{group}_filenames': {len(unlabeled)} case(s) have no 'label' "
            f"but the group is used for training or validation: {_listing(unlabeled)}"
        )


def check_files_exist(case_list):
    """Raise one error listing the first few missing data files, and how many."""
    missing = [
        path
        for case in case_list
        for path in case["image"] + ([case["label"]] if "label" in case else [])
        if not os.path.isfile(path)
    ]
    if missing:
        raise UserError(f"{len(missing)} data file(s) named in the config do not exist: {_listing(missing)}")


def preflight(config, groups=None, cache_dir=None):
    """Check the cases of ``groups`` (default: all) before any work, with one UserError for the first problem.

    Files exist; per case, all files are readable 3D volumes of one shape and affine,
    images hold no NaN or Inf and label values are among ``dataset.labels`` (or 0). Cases
    that passed are remembered under ``cache_dir`` so a rerun reads headers only.
    """
    groups = groups or [group_name(key) for key in filename_groups(config)]
    case_lists = [cases(config, group) for group in groups]
    all_cases = [case for case_list in case_lists for case in case_list]
    check_files_exist(all_cases)
    check_cases(all_cases, labels=config.get("dataset", {}).get("labels"), cache_dir=cache_dir)


def _listing(items):
    shown = ", ".join(str(i) for i in items[:MAX_LISTED])
    more = f" (and {len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
    return shown + more
