"""Writing predictions on the grid of the scan they came from, in its format or the one asked for.

NRRD and MetaImage inputs give ``.nrrd`` and ``.mha`` predictions, NIfTI inputs and DICOM
series ``.nii.gz`` (see ``unet3d.data.formats``); ``prediction.output_format`` chooses one
for all. Probability maps are written as float32: NIfTI-1 has no float16 data type and
nibabel refuses to write one.
"""

from pathlib import Path

import numpy as np

from unet3d.data.checks import AFFINE_TOLERANCE_MM
from unet3d.data.formats import output_suffix, read_header, write_image
from unet3d.errors import UserError


def prediction_path(case, output_dir, output_format=None):
    """``output_dir/<case id>.nii.gz`` (or ``.nrrd``, ``.mha``: ``output_format``'s, else the first image's format)."""
    return Path(output_dir) / f"{case.id}{output_suffix(case.images[0], output_format)}"


def output_paths(case_list, output_dir, overwrite=False, output_format=None, protected=()):
    """``{case id: prediction_path}``, refusing inputs (and ``protected``: the config's files) always and existing
    files without ``overwrite``."""
    targets = {case.id: prediction_path(case, output_dir, output_format) for case in case_list}
    inputs = {Path(p).resolve() for p in [*protected, *(p for case in case_list for p in case.files)]}
    for target in targets.values():
        if target.resolve() in inputs:
            raise UserError(f"{target}: output would overwrite an input file; choose another output directory")
    if not overwrite:
        existing = [str(t) for t in targets.values() if t.exists()]
        if existing:
            raise UserError(f"{existing[0]}: output exists ({len(existing)} in all); pass --overwrite to replace")
    return targets


def write_prediction(array, reference_filename, filename, affine=None):
    """Write ``array`` (X, Y, Z) or (X, Y, Z, C) on the reference scan's grid, atomically, in ``filename``'s format.

    ``affine``, when given, is the one MONAI tracked through preprocessing and its
    inversion; it must match the reference's, so a step that was not undone cannot pass
    unnoticed.
    """
    reference = read_header(reference_filename)
    if tuple(array.shape[:3]) != tuple(reference.shape[:3]):
        raise ValueError(f"prediction shape {array.shape[:3]} differs from {reference_filename} {reference.shape[:3]}")
    if affine is not None and not np.allclose(np.asarray(affine), reference.affine, atol=AFFINE_TOLERANCE_MM):
        raise ValueError(f"prediction affine differs from {reference_filename}'s:\n{np.asarray(affine)}\n{reference.affine}")
    write_image(np.asarray(array), reference, filename)
