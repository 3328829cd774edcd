"""The compact form of a preprocessed case, as the cache keeps it and training reads it.

A labelled case after preprocessing becomes:

- ``image``: the normalised intensities (C, X, Y, Z) in float16 when every value fits it
  (see ``image_dtype``), else float32;
- ``label``: ONE channel (X, Y, Z) of label values (uint8, or a wider integer type when a
  value needs it); the label scheme's region, label or class channels are built from the
  patch that is cut, never stored;
- ``locations``: for each label value, up to ``LOCATIONS_PER_VALUE`` voxel coordinates drawn
  uniformly from that value's voxels, with the value's full count, so patches are centred on
  foreground without scanning the label (nnU-Net's ``class_locations``);
- ``affine`` and ``filename``: the preprocessed grid and the first input file.

Arrays may be NumPy arrays or anything sliced like one (the cache's Blosc2 arrays), so that
cutting a patch reads only the patch.
"""

import functools
import logging

import numpy as np
import torch
from monai.data import MetaTensor

log = logging.getLogger("unet3d")

LOCATIONS_PER_VALUE = 10_000
# float16 holds every integer up to 2048 exactly and any value below it to 1 part in 2048; normalised
# intensities (z-scores) lie far inside. Larger values (raw intensities, CT units) are kept in float32.
FLOAT16_LIMIT = 2048.0
LOCATION_SEED = 0


def image_dtype(image, where="image"):
    """``(dtype, reason)``: float16 when every value is finite and within ±FLOAT16_LIMIT, else float32 and why."""
    image = np.asarray(image)
    if image.size == 0:
        return np.float16, None
    if not np.isfinite(image).all():
        return np.float32, f"{where} has non-finite values"
    largest = float(np.abs(image).max())
    if largest > FLOAT16_LIMIT:
        return np.float32, f"{where} has values up to {largest:g}, beyond float16's exact range (±{FLOAT16_LIMIT:g})"
    return np.float16, None


def label_dtype(values):
    """The smallest integer type that holds the label values (uint8 for BraTS's 1, 2, 4)."""
    largest = max(values, default=0)
    smallest = min(values, default=0)
    if smallest >= 0 and largest < 256:
        return np.uint8
    return np.int16 if -(2**15) <= smallest and largest < 2**15 else np.int32


def foreground_locations(label, values, limit=LOCATIONS_PER_VALUE):
    """``{value: (coordinates (n, 3) int32, count)}``: up to ``limit`` coordinates of each value's voxels,
    drawn uniformly without replacement by a fixed seed (so a case always gets the same index)."""
    rng = np.random.default_rng(LOCATION_SEED)
    result = {}
    for value in values:
        flat = np.flatnonzero(label == value)
        count = len(flat)
        if count > limit:
            flat = np.sort(rng.choice(flat, limit, replace=False))
        result[int(value)] = (np.stack(np.unravel_index(flat, label.shape), axis=1).astype(np.int32), count)
    return result


def compact(item, values=()):
    """A preprocessed ``{"image"[, "label"]}`` item (label: one channel of label values) -> its compact form."""
    image = item["image"]
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    dtype, reason = image_dtype(array, item.get("id", "image"))
    if reason:
        log.info("%s stays float32 after preprocessing: %s", item.get("id", "the image"), reason)
    stored = {"id": item.get("id"), "image": array.astype(dtype),
              "affine": torch.as_tensor(getattr(image, "affine", torch.eye(4)), dtype=torch.float64),
              "filename": getattr(image, "meta", {}).get("filename_or_obj")}
    if item.get("label") is not None:
        label = item["label"]
        label = (label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label))[0]
        # Values outside the scheme are background in every target channel: store them as 0, so no cast wraps them.
        stored["label"] = np.where(np.isin(label, values), label, 0).astype(label_dtype(values))
        stored["locations"] = foreground_locations(stored["label"], values)
    return stored


def expand(stored, labels=None, start=None, size=None):
    """``{"id", "image"[, "label"]}`` MetaTensors from a compact case: the whole volume, or the box of ``size``
    voxels from ``start``. The image becomes float32; the label becomes the ``labels`` scheme's training
    targets (``targets``), or without ``labels`` stays one channel of label values (1, X, Y, Z)."""
    spatial = stored["image"].shape[1:]
    start = tuple(start or (0,) * len(spatial))
    size = tuple(size or spatial)
    box = tuple(slice(s, s + n) for s, n in zip(start, size))
    affine = stored["affine"].clone()
    affine[:3, 3] += affine[:3, :3] @ torch.as_tensor(start, dtype=torch.float64)
    meta = {"filename_or_obj": stored.get("filename")}
    image = torch.from_numpy(np.ascontiguousarray(stored["image"][(slice(None), *box)])).float()  # torch converts faster
    item = {"id": stored.get("id"), "image": MetaTensor(image, affine=affine, meta=dict(meta))}
    if "label" in stored:
        label = np.ascontiguousarray(stored["label"][box])
        values = torch.from_numpy(label[None])
        item["label"] = MetaTensor(values if labels is None else targets(values, labels), affine=affine.clone(),
                                   meta=dict(meta))
    return item


def targets(values, labels):
    """The ``LabelScheme``'s training targets of a tensor of label values (1, X, Y, Z), as uint8 (0 and 1 per
    region or label, or class indices): a quarter of float32's bytes, exact, made float where the loss needs it."""
    values = values.as_tensor() if isinstance(values, MetaTensor) else torch.as_tensor(values)
    if values.dtype.is_floating_point:
        # A resampling augmentation's output (MONAI's affine makes float32 even when it does not fire): by nearest
        # neighbour, the stored values or the padding's 0, which fit the stored type.
        values = torch.round(values).to(torch.uint8 if label_dtype(labels.values) == np.uint8 else torch.int64)
    if values.dtype == torch.uint8:  # table lookups instead of a comparison per value and channel
        return torch.from_numpy(lookup_targets(labels, values.numpy()[0]))
    return labels.targets(values[0]).to(target_dtype(labels))


def lookup_targets(labels, values):
    """The targets (channels, X, Y, Z) of a uint8 array of label values, from ``target_table``. Binary targets of
    up to 8 channels take one lookup of a byte holding them all (``packed_targets``), then a shift per channel:
    a third of the time."""
    packed = packed_targets(labels)
    if packed is None:
        return np.take(target_table(labels), values, axis=1)
    bits = np.take(packed, values)
    result = np.empty((len(target_table(labels)), *values.shape), dtype=np.uint8)
    for channel in range(len(result)):
        np.bitwise_and(np.right_shift(bits, channel), 1, out=result[channel])
    return result


@functools.lru_cache(maxsize=8)
def packed_targets(labels):
    """``(256,)`` uint8: bit c of entry v is target channel c of label value v; None unless the targets are 2 to 8
    binary channels."""
    table = target_table(labels)
    if len(table) == 1 or len(table) > 8 or table.max() > 1:
        return None
    return (table.astype(np.uint8) << np.arange(len(table), dtype=np.uint8)[:, None]).sum(0, dtype=np.uint8)


def target_dtype(labels):
    """uint8, unless class indices go beyond it."""
    return torch.uint8 if len(labels.values) < 256 else torch.int16


@functools.lru_cache(maxsize=8)
def target_table(labels):
    """``(target channels, 256)``: the ``LabelScheme``'s training targets of every uint8 label value."""
    return labels.targets(torch.arange(256, dtype=torch.uint8)).to(target_dtype(labels)).numpy()
