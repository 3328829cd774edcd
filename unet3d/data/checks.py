"""Per-case checks of the data files, run over the whole case list before any training.

Header checks (readable, 3D, shapes and affines agree) read NIfTI headers only. Value
checks (no NaN or Inf in images, label values among the config's labels) read the data;
a case that passed them is remembered under ``<cache_dir>/preflight/`` by the same file
identity the preprocessing cache uses, so reruns and other folds skip the reading.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel
import numpy as np
from tqdm import tqdm

from unet3d.data.cache import case_files, identity_key
from unet3d.errors import UserError

AFFINE_TOLERANCE_MM = 1e-3


def read_header(path):
    """The nibabel image at ``path`` (data not read yet), or a UserError naming the file."""
    try:
        return nibabel.load(path)
    except Exception as error:  # nibabel raises many types for unreadable files
        raise UserError(f"{path}: cannot read as NIfTI ({error})") from None


def check_headers(case):
    """Raise when a case's files are not 3D or differ in shape or affine (headers only)."""
    images = {path: read_header(path) for path in case_files(case)}
    for path, image in images.items():
        # One 4D file may hold all modalities (Medical Segmentation Decathlon); labels are 3D.
        four_d_ok = len(case["image"]) == 1 and path == case["image"][0]
        if len(image.shape) != 3 and not (four_d_ok and len(image.shape) == 4):
            raise UserError(f"case '{case['id']}': {path} is {len(image.shape)}D with shape {image.shape}; expected a 3D volume")
    shapes = {path: tuple(image.shape[:3]) for path, image in images.items()}
    if len(set(shapes.values())) > 1:
        detail = ", ".join(f"{os.path.basename(p)} {s}" for p, s in shapes.items())
        raise UserError(f"case '{case['id']}': image and label shapes differ: {detail}")
    first, reference = next(iter(images.items()))
    for path, image in images.items():
        if not np.allclose(image.affine, reference.affine, atol=AFFINE_TOLERANCE_MM):
            raise UserError(
                f"case '{case['id']}': {os.path.basename(path)} has another affine than {os.path.basename(first)} "
                f"(voxel-to-world differs by up to {np.abs(image.affine - reference.affine).max():.3g})"
            )


def check_values(case, labels):
    """Raise when an image of ``case`` holds NaN or Inf, or its label a value not in ``labels`` or 0."""
    for path in case["image"]:
        data = np.asanyarray(read_header(path).dataobj)
        if data.dtype.kind == "f" and not np.isfinite(data).all():
            raise UserError(f"case '{case['id']}': {path} contains NaN or infinite values")
    if "label" in case and labels:
        data = np.asanyarray(read_header(case["label"]).dataobj)
        values = np.unique(data)
        unexpected = sorted(set(values.tolist()) - {0, *labels})
        if unexpected:
            shown = ", ".join(f"{v:g}" for v in unexpected[:5])
            raise UserError(
                f"case '{case['id']}': {case['label']} has label values {shown} not in "
                f"dataset.labels {list(labels)} (or 0)"
            )


def check_cases(case_list, labels=None, cache_dir=None, workers=None):
    """Run both checks on every case, in parallel threads and with a progress bar.

    The first failing case, in list order, raises its UserError.
    """
    done_dir = Path(cache_dir) / "preflight" if cache_dir is not None else None

    def check(case):
        check_headers(case)
        marker = done_dir / identity_key(case_files(case), {"labels": labels}) if done_dir else None
        if marker is not None and marker.exists():
            return
        check_values(case, labels)
        if marker is not None:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()

    workers = workers or min(8, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(workers)
    try:
        for _ in tqdm(pool.map(check, case_list), total=len(case_list), desc="checking cases", unit="case",
                      disable=True if len(case_list) < 2 else None, leave=False):
            pass
    finally:
        pool.shutdown(cancel_futures=True)
