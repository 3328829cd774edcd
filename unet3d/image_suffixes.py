"""The image file suffixes unet3d reads and writes, and the format each one names.

One table for every stage: the config names cases after their files without it, the data
stage picks a reader by it, the planner recognises a dataset's files by it.
"""

from pathlib import Path

# NIfTI is read with nibabel; NRRD and MetaImage (a ``.mhd``/``.nhdr`` header beside its data file) with ITK.
SUFFIXES = {".nii.gz": "nifti", ".nii": "nifti", ".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "metaimage",
            ".mhd": "metaimage"}
# What a prediction is written as, by ``prediction.output_format``.
OUTPUT_SUFFIXES = {"nifti": ".nii.gz", "nrrd": ".nrrd", "mha": ".mha"}


def image_suffix(path):
    """The image suffix ``path`` ends with (``.nii.gz``, ``.nrrd``, any case), or None."""
    name = str(path).lower()
    return next((suffix for suffix in SUFFIXES if name.endswith(suffix)), None)


def image_stem(path):
    """The file name of ``path`` without its image suffix (``case.nii.gz`` -> ``case``), or None for other files."""
    name, suffix = Path(path).name, image_suffix(path)
    return name[: -len(suffix)] if suffix else None
