"""Pre-flight checks of a list of cases: their files exist and hold what training and prediction expect."""

import os

from unet3d.data.checks import check_cases
from unet3d.data.formats import image_channels
from unet3d.errors import UserError, listing


def check_files_exist(case_list, source="named in the config"):
    """Raise one error listing the first few missing data files (or DICOM series folders), and how many;
    ``source`` says where they were named."""
    missing = [path for case in case_list for path in case.files if not os.path.exists(path)]
    if missing:
        raise UserError(f"{len(missing)} data file(s) {source} do not exist: {listing(missing)}")


def preflight(case_list, labels=(), cache_dir=None, source="named in the config"):
    """Check ``case_list`` before any work, with one UserError for the first problem.

    Files exist; per case, all files are readable 3D volumes (NIfTI, NRRD, MetaImage or
    DICOM series folders) of one shape and affine,
    images hold no NaN or Inf and label values are among ``labels`` (the label scheme's
    values, or 0). Cases that passed are remembered under ``cache_dir`` so a rerun reads
    headers only. ``source`` says where the files were named, for the message of missing ones.
    """
    check_files_exist(case_list, source)
    check_cases(case_list, labels=list(labels), cache_dir=cache_dir)


def check_channels(case_list, in_channels, hint=""):
    """Raise when a case has another number of input channels (its images, or a 4D image's volumes) than the
    model takes (``in_channels``, ``model.in_channels``; None: not checked), reading headers only."""
    if in_channels is None:
        return
    for case in case_list:
        channels = image_channels(case.images)
        if channels != in_channels:
            raise UserError(f"case '{case.id}' has {channels} image(s) but the model takes {in_channels} "
                            f"(config key 'model.in_channels'){hint}")
