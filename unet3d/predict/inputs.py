"""What to predict and with which models: config groups, image lists, BraTS folders, globs."""

import glob
from pathlib import Path

from unet3d.config.experiment import make_case, unique_cases
from unet3d.data.brats import brats_cases
from unet3d.data.files import check_channels, preflight
from unet3d.errors import UserError

GLOB_CHARACTERS = set("*?[")


def model_filenames(patterns):
    """Model files from paths and glob patterns (``exp/fold*/model_best.pth``), in order, each once."""
    result = []
    for pattern in patterns:
        if GLOB_CHARACTERS & set(str(pattern)):
            matches = sorted(glob.glob(str(pattern)))
            if not matches:
                raise UserError(f"--model_filename {pattern}: no files match")
        else:
            matches = [str(pattern)]  # a missing plain path is reported when it is loaded
        result.extend(m for m in matches if m not in result)
    return result


def select_cases(experiment, group=None, images=None, input_dir=None, ids=None):
    """The cases to predict: a config group, image lists (one list per case, named by ``ids`` when given)
    or a BraTS folder; checked."""
    if sum(source is not None for source in (group, images, input_dir)) != 1:
        raise UserError("give exactly one of --group, --images or --input_dir")
    if ids is not None and (images is None or len(ids) != len(images)):
        raise UserError(f"--ids names the cases of --images, one id per --images: got {len(ids)} id(s) for "
                        f"{len(images or [])} case(s)")
    if group is not None:
        case_list = experiment.cases(group)
        preflight(case_list, experiment.labels.values)
    else:
        # brats_cases names each case after its folder where the file names alone cannot (BraTS 2023).
        if images is not None:
            found = [{"image": paths, **({"id": ids[index]} if ids else {})} for index, paths in enumerate(images)]
        else:
            found = brats_cases(input_dir, with_label=False)
        entries = [{**entry, "image": [str(Path(p).resolve()) for p in entry["image"]]} for entry in found]
        case_list = list(unique_cases([make_case(entry) for entry in entries],
                                      "the cases to predict (outputs are named by case id)"))
        preflight(case_list, source="given with --images" if images is not None else "found in --input_dir")
    check_modalities(experiment, case_list)
    return case_list


def check_modalities(experiment, case_list):
    """Raise when a case has a different number of channels (images, or a 4D image's volumes) than the model takes."""
    check_channels(case_list, experiment.in_channels, "; give one file per modality, in training order")
