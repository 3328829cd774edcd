"""Writing predictions as NIfTI on the grid of the scan they came from.

Probability maps are written as float32: NIfTI-1 has no float16 data type and nibabel
refuses to write one.
"""

from pathlib import Path

import nibabel
import numpy as np

from unet3d.atomic import atomic_path
from unet3d.data.checks import AFFINE_TOLERANCE_MM
from unet3d.errors import UserError



def output_paths(case_list, output_dir, overwrite=False, protected=()):
    """``{case id: output_dir/<case id>.nii.gz}``, refusing inputs (and ``protected``: the config's files) always
    and existing files without ``overwrite``."""
    output_dir = Path(output_dir)
    targets = {case.id: output_dir / f"{case.id}.nii.gz" for case in case_list}
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
    """Write ``array`` (X, Y, Z) or (X, Y, Z, C) with the reference scan's affine and header, atomically.

    ``affine``, when given, is the one MONAI tracked through preprocessing and its
    inversion; it must match the reference's, so a step that was not undone cannot pass
    unnoticed.
    """
    reference = nibabel.load(reference_filename)
    if tuple(array.shape[:3]) != tuple(reference.shape[:3]):
        raise ValueError(f"prediction shape {array.shape[:3]} differs from {reference_filename} {reference.shape[:3]}")
    if affine is not None and not np.allclose(np.asarray(affine), reference.affine, atol=AFFINE_TOLERANCE_MM):
        raise ValueError(f"prediction affine differs from {reference_filename}'s:\n{np.asarray(affine)}\n{reference.affine}")
    header = reference.header.copy()
    header.set_data_dtype(array.dtype)
    header.set_slope_inter(1, 0)
    image = nibabel.Nifti1Image(np.asarray(array), reference.affine, header=header)
    image.set_qform(reference.affine, code=int(reference.header["qform_code"]) or 1)
    image.set_sform(reference.affine, code=int(reference.header["sform_code"]) or 1)
    with atomic_path(filename) as tmp:
        nibabel.save(image, tmp)
