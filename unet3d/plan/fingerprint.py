"""The dataset's fingerprint: what planning needs to know about the cases, read once and kept as JSON.

Per case: spacing, shape and orientation from the headers (axes in RAS order, as training
reorients them), the bounding box of its non-zero voxels, and how many voxels each label
value has. Per channel: intensity minimum, maximum, percentiles, mean and standard deviation
inside the foreground (label > 0), pooled over ``SAMPLES_PER_CASE`` voxels drawn from each
case's foreground (with replacement, so that every case weighs the same), as nnU-Net does,
and apart from them the whole images' minimum. Cases are read in parallel, one process per
core, in any format ``unet3d.data.formats`` reads.
"""

import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np
from nibabel.orientations import aff2axcodes, io_orientation

from unet3d.data.formats import read_array, read_header
from unet3d.errors import UserError

SAMPLES_PER_CASE = 10000
PERCENTILES = (0.5, 50.0, 99.5)
# Shapes and boxes are read on every second voxel per axis: an eighth of the work, a voxel's error.
STRIDE = 2
# Starting worker processes costs about a second: fewer cases are read in this one.
SERIAL_CASES = 8


def _load(path):
    """``(Header, voxels)`` of an image; a UserError naming the file where it cannot be read."""
    return read_header(path), read_array(path)


def _ras_axes(affine):
    """For each RAS axis, the voxel axis along it."""
    return [int(axis) for axis, _ in sorted(enumerate(io_orientation(affine)[:, 0]), key=lambda item: item[1])]


def case_fingerprint(case, four_dimensional=False, seed=0):
    """The fingerprint of one case ``{"id", "image": [paths], "label"?}``, with its foreground intensity samples
    (``"samples"``: channels x n, float32) for pooling."""
    start = time.process_time()  # CPU seconds: what reading costs, however busy the machine is
    images, reference = [], None
    for path in case["image"]:
        header, data = _load(path)
        reference = reference or (path, header)
        if four_dimensional and data.ndim == 4:
            images.extend(np.moveaxis(data, -1, 0))
        else:
            images.append(data if data.ndim == 3 else np.squeeze(data))
    path, header = reference
    shape = images[0].shape
    for image, image_path in zip(images, case["image"] * len(images)):
        if image.shape != shape or image.ndim != 3:
            raise UserError(f"{image_path}: shape {list(image.shape)} differs from {list(shape)} of {path} "
                            "(every channel of a case must share one 3D grid)")
    label = None
    if case.get("label"):
        _, label = _load(case["label"])
        label = np.squeeze(label)
        if label.shape != shape:
            raise UserError(f"{case['label']}: shape {list(label.shape)} differs from the image's {list(shape)}")
        if label.dtype.kind not in "iu":
            label = np.rint(label).astype(np.int64)
        if label.min() < 0:
            raise UserError(f"{case['label']}: negative label values; expected 0 (background) and positive labels")
    axes = _ras_axes(header.affine)
    spacing = [float(s) for s in np.linalg.norm(header.affine[:3, :3], axis=0)]
    nonzero = np.zeros(tuple(math.ceil(n / STRIDE) for n in shape), dtype=bool)
    for image in images:
        nonzero |= image[::STRIDE, ::STRIDE, ::STRIDE] != 0
    box = []
    for axis in range(3):
        occupied = np.flatnonzero(np.any(nonzero, axis=tuple(a for a in range(3) if a != axis)))
        box.append(min(shape[axis], (int(occupied[-1] - occupied[0]) + 1) * STRIDE) if occupied.size else 0)
    result = {
        "id": case["id"],
        "shape": [int(shape[a]) for a in axes],
        "spacing": [spacing[a] for a in axes],
        "orientation": "".join(aff2axcodes(header.affine)),
        "nonzero_shape": [box[a] for a in axes],
        "channel_min": [float(image.min()) for image in images],
    }
    rng = np.random.default_rng(seed)
    if label is not None:
        # NIfTI arrays are Fortran-ordered: raveled in that order they are views, not copies.
        flat = label.ravel(order="F")
        counts = np.bincount(flat)
        result["label_voxels"] = {str(v): int(c) for v, c in enumerate(counts) if v != 0 and c}
        foreground = np.flatnonzero(flat)
        if foreground.size:  # as nnU-Net: every case weighs the same, whatever its foreground's size
            foreground = rng.choice(foreground, SAMPLES_PER_CASE, replace=True)
        result["samples"] = np.stack([image.ravel(order="F")[foreground].astype(np.float32) for image in images])
    result["read_seconds"] = round(time.process_time() - start, 4)
    return result


def _case_job(job):
    return case_fingerprint(*job)


def dataset_fingerprint(layout, workers=None):
    """The fingerprint of a ``DatasetLayout``'s labelled cases (a JSON-able dict), read with ``workers`` processes
    (default: one per core)."""
    workers = workers or os.cpu_count() or 1
    jobs = [(case, layout.four_dimensional, index) for index, case in enumerate(layout.cases)]
    start = time.perf_counter()
    if workers > 1 and len(jobs) > SERIAL_CASES:
        # Spawned, not forked: the parent may hold torch's threads.
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=get_context("spawn")) as pool:
            cases = list(pool.map(_case_job, jobs))
    else:
        cases = [_case_job(job) for job in jobs]
    n_channels = {len(case["channel_min"]) for case in cases}
    if n_channels != {len(layout.channel_names)}:
        odd = next(case for case in cases if len(case["channel_min"]) != len(layout.channel_names))
        raise UserError(f"{layout.root}: case '{odd['id']}' has {len(odd['channel_min'])} channels but the dataset "
                        f"names {len(layout.channel_names)} ({', '.join(layout.channel_names)})")
    samples = [case.pop("samples") for case in cases if case.get("samples") is not None]
    pooled = np.concatenate(samples, axis=1) if samples else np.zeros((len(layout.channel_names), 0), np.float32)
    return summarize(layout, cases, pooled, time.perf_counter() - start, workers)


def summarize(layout, cases, pooled, seconds, workers):
    """The dataset's fingerprint from its cases' and the pooled foreground ``samples`` (channels x n)."""
    spacings = np.array([case["spacing"] for case in cases])
    shapes = np.array([case["shape"] for case in cases])
    label_values = sorted({int(v) for case in cases for v in case.get("label_voxels", {})})
    channels = []
    for index, name in enumerate(layout.channel_names):
        values = pooled[index].astype(np.float64)
        # nnU-Net's statistics: of the foreground voxels sampled; the whole images' minimum is kept apart.
        stats = {"name": name, "image_min": min(case["channel_min"][index] for case in cases)}
        if values.size:
            stats.update(min=float(values.min()), max=float(values.max()))
            stats.update({f"percentile_{p:g}": float(np.percentile(values, p)) for p in PERCENTILES})
            stats.update(mean=float(values.mean()), std=float(values.std()))
        channels.append(stats)
    labels = {}
    for value in label_values:
        volumes = [case["label_voxels"].get(str(value), 0) * float(np.prod(case["spacing"])) for case in cases]
        present = [volume for volume in volumes if volume > 0]
        labels[str(value)] = {"cases_present": len(present), "share_present": round(len(present) / len(cases), 4),
                              "median_volume_mm3": float(np.median(present)) if present else 0.0,
                              "min_volume_mm3": float(min(present)) if present else 0.0}
    median_spacing = np.median(spacings, axis=0)
    return {
        "layout": layout.kind,
        "n_cases": len(cases),
        "n_test_cases": len(layout.test_cases),
        "channels": channels,
        "label_stats": labels,
        "median_spacing": [float(s) for s in median_spacing],
        "median_shape": [float(s) for s in np.median(shapes, axis=0)],
        "median_nonzero_shape": [float(s) for s in np.median([case["nonzero_shape"] for case in cases], axis=0)],
        "nonzero_share": float(np.median([np.prod(case["nonzero_shape"]) / np.prod(case["shape"]) for case in cases])),
        "anisotropy": float(median_spacing.max() / median_spacing.min()),
        "orientations": sorted({case["orientation"] for case in cases}),
        "read_seconds": {"total": round(seconds, 2), "workers": workers,
                         "median_cpu_per_case": float(np.median([case["read_seconds"] for case in cases]))},
        "cases": cases,
    }
