"""Writing predictions as NIfTI on the grid of the scan they came from."""

import nibabel
import numpy as np

from unet3d.atomic import atomic_path


def write_prediction(array, reference_filename, filename):
    """Write ``array`` (X, Y, Z) or (X, Y, Z, C) with the reference scan's affine and header, atomically."""
    reference = nibabel.load(reference_filename)
    if tuple(array.shape[:3]) != tuple(reference.shape[:3]):
        raise ValueError(f"prediction shape {array.shape[:3]} differs from {reference_filename} {reference.shape[:3]}")
    header = reference.header.copy()
    header.set_data_dtype(array.dtype)
    header.set_slope_inter(1, 0)
    image = nibabel.Nifti1Image(np.asarray(array), reference.affine, header=header)
    image.set_qform(reference.affine, code=int(reference.header["qform_code"]) or 1)
    image.set_sform(reference.affine, code=int(reference.header["sform_code"]) or 1)
    with atomic_path(filename) as tmp:
        nibabel.save(image, tmp)
