"""Filename lists from BraTS folders: one sub-folder per case.

BraTS 2020 and 2021 name files ``<id>_{flair,t1,t1ce,t2,seg}.nii[.gz]``; BraTS 2023
``<id>-{t2f,t1n,t1c,t2w,seg}.nii.gz``. Modalities are listed in that order for every release.
The same names with another suffix that ``unet3d.data.formats`` reads (``.nrrd``, ``.mha``, ...),
or without one for a folder holding a DICOM series, are found too.
"""

import json
import os
from pathlib import Path

from unet3d.config.experiment import case_id
from unet3d.config.load import write_json
from unet3d.errors import UserError
from unet3d.image_suffixes import SUFFIXES

MODALITIES = ("flair", "t1", "t1ce", "t2")
# (separator after the case id, modality names in MODALITIES' order) per naming scheme.
LAYOUTS = (("_", MODALITIES), ("-", ("t2f", "t1n", "t1c", "t2w")))


def _find(case_dir, stem):
    for suffix in SUFFIXES:
        path = case_dir / f"{stem}{suffix}"
        if path.is_file():
            return path
    # A folder <id>_flair/ holds the modality as a DICOM series.
    return case_dir / stem if (case_dir / stem).is_dir() else None


def label_file(case_dir):
    """The label map of a BraTS case folder, ``<id>_seg`` or ``<id>-seg`` (2023), or None."""
    case_dir = Path(case_dir)
    for separator, _ in LAYOUTS:
        found = _find(case_dir, f"{case_dir.name}{separator}seg")
        if found is not None:
            return found
    return None


def case_images(case_dir):
    """``(separator, modalities, image paths or None)`` of the first naming scheme with an image in the folder
    ``case_dir``, in any format unet3d reads; None when it is not a BraTS case folder."""
    for separator, modalities in LAYOUTS:
        images = [_find(case_dir, f"{case_dir.name}{separator}{m}") for m in modalities]
        if any(images):
            return separator, modalities, images
    return None


def brats_cases(folder, with_label=True):
    """``[{"image": [...], "label": ...}, ...]`` for every case folder under ``folder``, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder of BraTS cases")
    result = []
    for case_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        found = case_images(case_dir)
        if found is None:
            continue  # not a case folder
        separator, modalities, images = found
        missing = [m for m, p in zip(modalities, images) if p is None]
        if missing:
            raise UserError(
                f"{case_dir}: no {', '.join(missing)} image (expected {case_dir.name}{separator}<modality>.nii[.gz])"
            )
        case = {"image": [str(p) for p in images]}
        if case_id(case["image"]) != case_dir.name:  # 2023 names: "-t2f", "-t1n", ... share a "t"
            case = {"id": case_dir.name, **case}
        if with_label:
            label = _find(case_dir, f"{case_dir.name}{separator}seg")
            if label is None:
                raise UserError(f"{case_dir}: no label file {case_dir.name}{separator}seg.nii[.gz]")
            case["label"] = str(label)
        result.append(case)
    if not result:
        raise UserError(f"{folder}: no BraTS case folders found (expected <id>/<id>_flair.nii[.gz], ...)")
    return result


def write_brats_config(template_filename, output_filename, training_dir, groups=()):
    """Write a config: the template's settings with filename lists from BraTS folders.

    Args:
        template_filename: a config whose sections (model, loss, dataset, ...) are kept;
            its ``*_filenames`` lists are replaced.
        output_filename: the new config; its paths are written relative to its folder.
        training_dir: folder of labelled cases for ``training_filenames``.
        groups: ``(name, folder)`` pairs of unlabelled cases, written as ``<name>_filenames``.
    """
    try:
        template = json.loads(Path(template_filename).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"{template_filename}: cannot read template config ({error})") from None
    base = Path(output_filename).resolve().parent
    config = {k: v for k, v in template.items() if not k.endswith("_filenames")}

    def relative(cases):
        for case in cases:
            case["image"] = [os.path.relpath(p, base) for p in case["image"]]
            if "label" in case:
                case["label"] = os.path.relpath(case["label"], base)
        return cases

    config["training_filenames"] = relative(brats_cases(training_dir))
    for name, folder in groups:
        config[f"{name}_filenames"] = relative(brats_cases(folder, with_label=False))
    write_json(config, output_filename)
    return config
