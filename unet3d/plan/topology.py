"""Target spacing, patch size and the DynUNet's kernels and strides, by nnU-Net's rules.

- Spacing: the median of the cases'. When one axis is much coarser (over ``ANISOTROPY`` times
  the others) and has few voxels, it takes the 10th percentile of that axis's spacings instead,
  as nnU-Net does: resampling thick slices to thin ones invents data.
- Topology: each level halves the axes that are still at least twice ``MIN_FEATURE_MAP`` voxels
  and whose spacing is under twice the finest; an axis gets 3-voxel kernels once its spacing is
  within twice the finest (1 before: thick slices are not mixed early).
- Patch: starts as a cube of physical size (256 voxels of the finest spacing, shaped by the
  spacing) clipped to the median shape, and shrinks, axis with the largest share of the median
  shape first, until the caller's test of memory and time passes.
"""

import math

import numpy as np

ANISOTROPY = 3.0
MIN_FEATURE_MAP = 4
MAX_LEVELS = 6
# DynUNet needs three levels: two halvings above the minimum feature map.
MIN_LEVELS = 3
MIN_PATCH = 4 * MIN_FEATURE_MAP
INITIAL_PATCH_VOXELS = 256 ** 3


def target_spacing(spacings, shapes):
    """``(spacing, anisotropic)``: the target spacing of cases with ``spacings`` and ``shapes`` (n x 3, RAS order),
    and whether nnU-Net's rule for a coarse axis applied."""
    spacings, shapes = np.asarray(spacings, float), np.asarray(shapes, float)
    target = np.median(spacings, axis=0)
    size = np.median(shapes * spacings / target, axis=0)
    worst = int(np.argmax(target))
    others = [axis for axis in range(3) if axis != worst]
    coarse = target[worst] > ANISOTROPY * max(target[others])
    few_voxels = size[worst] * ANISOTROPY < min(size[others])
    if coarse and few_voxels:
        target[worst] = max(np.percentile(spacings[:, worst], 10), max(target[others]) + 1e-5)
        return [float(s) for s in target], True
    return [float(s) for s in target], False


def network_topology(patch, spacing, max_levels=MAX_LEVELS):
    """``(kernels, strides, divisor)``: DynUNet kernel sizes and strides per level for ``patch`` at ``spacing``,
    and what each patch axis must be a multiple of."""
    spacing, size = list(spacing), list(patch)
    kernel = [1, 1, 1]
    kernels, strides = [], [[1, 1, 1]]
    while len(strides) < max_levels:
        valid = [axis for axis in range(3) if size[axis] >= 2 * MIN_FEATURE_MAP]
        if not valid:
            break
        finest = min(spacing[axis] for axis in valid)
        valid = [axis for axis in valid if spacing[axis] / finest < 2]
        kernel = [3 if kernel[axis] == 3 or spacing[axis] / min(spacing) < 2 else 1 for axis in range(3)]
        kernels.append(list(kernel))
        strides.append([2 if axis in valid else 1 for axis in range(3)])
        for axis in valid:
            spacing[axis] *= 2
            size[axis] = math.ceil(size[axis] / 2)
    kernels.append([3, 3, 3])  # the bottleneck
    return kernels, strides, divisor_of(strides)


def divisor_of(strides):
    """What each axis of a network's input must be a multiple of: the product of its levels' ``strides``."""
    return [int(np.prod([stride[axis] for stride in strides])) for axis in range(3)]


def initial_patch(spacing, median_shape):
    """nnU-Net's first patch: the volume of a 256-voxel cube, shaped inversely to the spacing, clipped to the median
    shape."""
    inverse = 1 / np.asarray(spacing, float)
    patch = inverse * (INITIAL_PATCH_VOXELS / np.prod(inverse)) ** (1 / 3)
    patch = [int(max(MIN_FEATURE_MAP, min(round(p), round(m)))) for p, m in zip(patch, median_shape)]
    if len(network_topology(patch, spacing)[1]) < MIN_LEVELS:  # volumes too small for the network: padded
        patch = [max(p, MIN_PATCH) if s < 2 * min(spacing) else p for p, s in zip(patch, spacing)]
    return patch


def fitted(patch, spacing):
    """``patch`` rounded down to what its own topology divides (at least that), with the topology."""
    for _ in range(4):  # rounding can lower a level's count; it settles within a few rounds
        kernels, strides, divisor = network_topology(patch, spacing)
        rounded = [max(d, p // d * d) for p, d in zip(patch, divisor)]
        if rounded == list(patch):
            break
        patch = rounded
    return list(patch), kernels, strides, divisor


def search_patch(spacing, median_shape, fits, floor=0):
    """The largest patch (with its topology) that ``fits(patch, kernels, strides)`` accepts, shrinking from
    ``initial_patch`` by the largest share of ``median_shape``; None when none of at least ``floor`` voxels does."""
    patch, kernels, strides, divisor = fitted(initial_patch(spacing, median_shape), spacing)
    while not fits(patch, kernels, strides):
        shares = [p / m for p, m in zip(patch, median_shape)]
        for axis in np.argsort(shares)[::-1]:
            smaller = list(patch)
            smaller[axis] -= divisor[axis]
            if (smaller[axis] >= MIN_FEATURE_MAP and np.prod(smaller) >= floor
                    and len(network_topology(smaller, spacing)[1]) >= MIN_LEVELS):
                patch = smaller
                break
        else:
            return None
        patch, kernels, strides, divisor = fitted(patch, spacing)
    return patch, kernels, strides


def whole_volume_window(shape, patch, strides, max_factor=2):
    """A sliding window that holds a volume of ``shape`` whole: each axis rounded up to a multiple of what the
    network's ``strides`` divide, at least the ``patch``'s and at most ``max_factor`` times it (inference keeps no
    activations for a backward pass, but a window far larger than the patch would still outgrow its memory)."""
    return [int(min(max_factor * p, max(p, math.ceil(s / d) * d))) // d * d
            for s, p, d in zip(shape, patch, divisor_of(strides))]


def windows(shape, patch, overlap=0.5):
    """How many sliding windows of ``patch`` with ``overlap`` cover a volume of ``shape``."""
    return int(np.prod([1 if s <= p else math.ceil((s - p) / max(1, round(p * (1 - overlap)))) + 1
                        for s, p in zip(shape, patch)]))


# nnU-Net's 2d configuration: a first patch of 2048 x 2048 pixels' area in the plane, shaped by its spacing.
INITIAL_PATCH_PIXELS_2D = 2048 ** 2
SLICES_2D = 1


def slice_axis(spacing):
    """The axis of thick slices (spacing at least ``ANISOTROPY`` times the finest), or None for near-isotropic data."""
    spacing = np.asarray(spacing, float)
    axis = int(np.argmax(spacing))
    return axis if spacing[axis] >= ANISOTROPY * spacing.min() else None


def network_topology_2d(patch, spacing, axis):
    """``(kernels, strides, divisor)`` of a network in the plane across ``axis``: ``network_topology`` of the
    in-plane axes, with kernels and strides of 1 along ``axis`` (slices are never mixed nor halved)."""
    plane = [spacing[a] for a in range(3) if a != axis]
    kernels, strides, divisor = network_topology([1 if a == axis else p for a, p in enumerate(patch)],
                                                 [min(plane) if a == axis else s for a, s in enumerate(spacing)])
    for kernel in kernels:
        kernel[axis] = 1
    return kernels, strides, divisor


def initial_patch_2d(spacing, median_shape, axis, slices=SLICES_2D):
    """nnU-Net's first 2d patch: ``slices`` along ``axis`` and, in the plane, the area of 2048 x 2048 pixels shaped
    inversely to the spacing, clipped to the median shape (at least ``MIN_PATCH``)."""
    plane = [a for a in range(3) if a != axis]
    inverse = 1 / np.asarray([spacing[a] for a in plane], float)
    size = inverse * (INITIAL_PATCH_PIXELS_2D / np.prod(inverse)) ** (1 / 2)
    patch = [slices] * 3
    for a, p in zip(plane, size):
        patch[a] = int(max(MIN_PATCH, min(round(p), round(median_shape[a]))))
    return patch


def fitted_2d(patch, spacing, axis):
    """``patch`` rounded down to what its 2d topology divides, with the topology (as ``fitted``)."""
    for _ in range(4):
        kernels, strides, divisor = network_topology_2d(patch, spacing, axis)
        rounded = [max(d, p // d * d) for p, d in zip(patch, divisor)]
        if rounded == list(patch):
            break
        patch = rounded
    return list(patch), kernels, strides, divisor


def search_patch_2d(spacing, median_shape, fits, slices=SLICES_2D):
    """The largest 2d patch (with its topology) across ``slice_axis(spacing)`` that ``fits(patch, kernels,
    strides)`` accepts, shrinking the in-plane axis with the largest share of ``median_shape`` first; None when
    the data has no thick slices or no patch of ``MIN_LEVELS`` levels fits."""
    axis = slice_axis(spacing)
    if axis is None:
        return None
    plane = [a for a in range(3) if a != axis]
    patch, kernels, strides, divisor = fitted_2d(initial_patch_2d(spacing, median_shape, axis, slices), spacing, axis)
    while not fits(patch, kernels, strides):
        for shrink in sorted(plane, key=lambda a: patch[a] / median_shape[a], reverse=True):
            smaller = list(patch)
            smaller[shrink] -= divisor[shrink]
            if smaller[shrink] >= MIN_PATCH and len(network_topology_2d(smaller, spacing, axis)[1]) >= MIN_LEVELS:
                break
        else:
            return None
        patch, kernels, strides, divisor = fitted_2d(smaller, spacing, axis)
    return patch, kernels, strides
