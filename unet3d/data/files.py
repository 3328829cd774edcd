"""Pre-flight checks of a list of cases: their files exist and hold what training and prediction expect."""

import os

from unet3d.data.checks import check_cases
from unet3d.errors import UserError, listing

def check_files_exist(case_list):
    """Raise one error listing the first few missing data files (or DICOM series folders), and how many."""
    missing = [path for case in case_list for path in case.files if not os.path.exists(path)]
    if missing:
        raise UserError(f"{len(missing)} data file(s) named in the config do not exist: {listing(missing)}")


def preflight(case_list, labels=(), cache_dir=None):
    """Check ``case_list`` before any work, with one UserError for the first problem.

    Files exist; per case, all files are readable 3D volumes (NIfTI, NRRD, MetaImage or
    DICOM series folders) of one shape and affine,
    images hold no NaN or Inf and label values are among ``labels`` (the label scheme's
    values, or 0). Cases that passed are remembered under ``cache_dir`` so a rerun reads
    headers only.
    """
    check_files_exist(case_list)
    check_cases(case_list, labels=list(labels), cache_dir=cache_dir)
