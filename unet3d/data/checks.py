"""Per-case checks of the data files, run over the whole case list before any training.

Header checks (readable, 3D, one number per voxel, invertible affines that agree, one shape)
read headers only, of any format ``unet3d.data.formats`` knows. Value checks (images finite in
float32, the type they are trained in, and not all 0; label values among the config's labels) read the data;
a case that passed them is remembered under ``<cache_dir>/preflight/`` by the same file
identity the preprocessing cache uses, so reruns and other folds skip the reading.
"""

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from unet3d.atomic import write_text
from unet3d.data.cache import identity_key
from unet3d.data.formats import read_array, read_header
from unet3d.errors import UserError

# Bumped when the value checks change, so that cases passed by older checks are read again.
VALUE_CHECKS_VERSION = 2
# Files of one case, and a prediction inverted by resampling (float32 precision), agree this closely.
AFFINE_TOLERANCE_MM = 1e-3
EMPTY_LABEL = "empty label"  # what a passed case's marker holds when its label map is all 0

log = logging.getLogger("unet3d")


def check_headers(case):
    """Raise when a case's files are not 3D scalar volumes with a usable affine, or differ in shape or affine
    (headers only)."""
    images = {path: read_header(path) for path in case.files}
    for path, image in images.items():
        # One 4D file may hold all modalities (Medical Segmentation Decathlon); labels are 3D.
        four_d_ok = len(case.images) == 1 and path == case.images[0]
        if len(image.shape) != 3 and not (four_d_ok and len(image.shape) == 4):
            raise UserError(f"case '{case.id}': {path} is {len(image.shape)}D with shape {image.shape}; expected a 3D volume")
        if not image.scalar:
            raise UserError(f"case '{case.id}': {path} holds {image.voxel_type} voxels; expected one number per "
                            "voxel (a scalar type such as int16 or float32)")
        if not np.isfinite(image.affine).all() or abs(np.linalg.det(image.affine[:3, :3])) < 1e-12:
            raise UserError(f"case '{case.id}': {path} has a singular affine or one that is not finite (a voxel size "
                            "of 0, or axes that coincide); expected an invertible voxel-to-world matrix")
    shapes = {path: tuple(image.shape[:3]) for path, image in images.items()}
    if len(set(shapes.values())) > 1:
        detail = ", ".join(f"{os.path.basename(p)} {s}" for p, s in shapes.items())
        raise UserError(f"case '{case.id}': image and label shapes differ: {detail}")
    first, reference = next(iter(images.items()))
    for path, image in images.items():
        if not np.allclose(image.affine, reference.affine, atol=AFFINE_TOLERANCE_MM):
            raise UserError(
                f"case '{case.id}': {os.path.basename(path)} has another affine than {os.path.basename(first)} "
                f"(voxel-to-world differs by up to {np.abs(image.affine - reference.affine).max():.3g})"
            )


def check_values(case, labels):
    """Raise when an image of ``case`` holds NaN or Inf (also once in float32) or only 0, or its label a value
    not in ``labels`` or 0.

    Returns whether the case's label has foreground (True when it has no label).
    """
    for path in case.images:
        data = read_array(path)
        with np.errstate(over="ignore"):
            trained = data.astype(np.float32, copy=False)
        if not np.isfinite(trained).all():  # one scan; which of the two reasons only when one holds
            if data.dtype.kind == "f" and not np.isfinite(data).all():
                raise UserError(f"case '{case.id}': {path} contains NaN or infinite values")
            raise UserError(f"case '{case.id}': {path} holds values beyond float32's range (up to "
                            f"{np.abs(data).max():.3g}), the type it is trained in; rescale it")
        if not trained.any():
            raise UserError(f"case '{case.id}': {path} is all 0; expected a scan")
    if not case.label:
        return True
    data = read_array(case.label)
    if labels:
        values = np.unique(data)
        unexpected = sorted(set(values.tolist()) - {0, *labels})
        if unexpected:
            shown = ", ".join(f"{v:g}" for v in unexpected[:5])
            raise UserError(
                f"case '{case.id}': {case.label} has label values {shown} not in "
                f"dataset.labels {list(labels)} (or 0)"
            )
    return bool(data.any())


def check_cases(case_list, labels=None, cache_dir=None, workers=None):
    """Run both checks on every case, in parallel threads and with a progress bar.

    The first failing case, in list order, raises its UserError. A label map without
    foreground is reported as a warning: negative cases are legitimate in many data sets.
    When every label map is empty, though, the labels are surely wrong, and that is an error.
    """
    done_dir = Path(cache_dir) / "preflight" if cache_dir is not None else None

    def check(case):
        check_headers(case)
        key = {"label_values": labels, "checks": VALUE_CHECKS_VERSION}
        marker = done_dir / identity_key(case.files, key) if done_dir else None
        if marker is not None and marker.exists():
            return marker.read_text() != EMPTY_LABEL
        has_foreground = check_values(case, labels)
        if marker is not None:
            write_text(marker, "" if has_foreground else EMPTY_LABEL)
        return has_foreground

    workers = workers or min(8, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(workers)
    try:
        foreground = list(tqdm(pool.map(check, case_list), total=len(case_list), desc="checking cases", unit="case",
                               disable=True if len(case_list) < 2 else None, leave=False))
    finally:
        pool.shutdown(cancel_futures=True)
    empty = [case for case, found in zip(case_list, foreground) if not found]
    if empty and len(empty) == sum(bool(case.label) for case in case_list):
        raise UserError(f"case '{empty[0].id}': {empty[0].label} has no foreground (all 0), nor has any other "
                        f"label map of the config; expected label values {list(labels or [])}")
    for case in empty:
        log.warning("case '%s': %s has no foreground (all 0); it trains as a negative case", case.id, case.label)
